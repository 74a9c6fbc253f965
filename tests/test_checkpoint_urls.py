"""Checkpoints by URL, against a file server on 127.0.0.1: the backbone's
``init_cfg``, a teacher, MMEngine's ``load_from`` path, ``tools/test.py`` and
the ONNX exporter download once into the torch hub cache; each download
fault is one line naming the URL and the cause, and leaves no cache entry.
"""
import errno
import hashlib
import io
import os
import os.path as osp
import re
import tracemalloc
from contextlib import contextmanager
from typing import Iterator, List

import mmengine.fileio
import mmengine.runner.checkpoint as mmengine_checkpoint
import pytest
import safetensors.torch
import torch
from checkpoint_server import CheckpointServer
from e2e import DEMO_CONFIG, REPO, python, run
from mmengine.logging import MMLogger
from mmengine.runner.checkpoint import CheckpointLoader
from test_converters import (deterministic_backbone, features_of,
                             original_release, original_to_timm)

from cgrseg.apis import init_segmentor
from cgrseg.models.backbones import EfficientFormerV2
from cgrseg.models.segmentors.teacher import build_teacher
from cgrseg.models.utils import checkpoint_download, checkpoint_schemes
from cgrseg.models.utils.checkpoint import CheckpointError, read_checkpoint
from cgrseg.models.utils.checkpoint_download import cached_download

TIMM_REPO = '/timm/efficientformerv2_s1.snap_dist_in1k/resolve/main'
TEACHER_CONFIG = str(REPO / 'configs' / 'distill' / 'teachers' /
                     'cgrseg_efficientformerv2-l_1xb8-adamw-600iter_'
                     'shapes-128x128.py')


def saved(obj) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def hub(tmp_path, monkeypatch):
    """An empty torch hub cache (``$TORCH_HOME``); its checkpoint folder."""
    monkeypatch.setenv('TORCH_HOME', str(tmp_path / 'torch'))
    return tmp_path / 'torch' / 'hub' / 'checkpoints'


def cached(hub) -> list:
    return sorted(os.listdir(hub)) if hub.is_dir() else []


@pytest.fixture
def server():
    with CheckpointServer() as server:
        yield server


@pytest.fixture(scope='module')
def imagenet():
    """A backbone with fixed weights, an input, and the backbone's weights
    in timm's format."""
    backbone = deterministic_backbone('s1')
    inputs = torch.rand(1, 3, 96, 128, generator=torch.Generator()
                        .manual_seed(0))
    return backbone, inputs, original_to_timm(original_release(backbone))


@pytest.mark.parametrize('name', ['model.safetensors', 'pytorch_model.bin'])
def test_backbone_init_cfg_url_downloads_once(name, imagenet, hub, server):
    backbone, inputs, timm = imagenet
    features = features_of(backbone, inputs)
    path = f'{TIMM_REPO}/{name}'
    server.files[path] = (safetensors.torch.save(timm)
                          if name.endswith('.safetensors') else saved(timm))
    for _ in range(2):
        backbone = EfficientFormerV2(arch='s1', init_cfg=dict(
            type='Pretrained', checkpoint=server.url(path)))
        backbone.init_weights()
        with torch.no_grad():
            assert torch.equal(backbone.eval()(inputs)[-1], features[-1])
    assert server.requests == [path]  # the second build read the cache
    assert cached(hub) == [
        f'timm--efficientformerv2_s1.snap_dist_in1k--{name}']


def test_hugging_face_files_of_two_repos_are_cached_apart(hub, server):
    for repo, value in (('a', 1.0), ('b', 2.0)):
        server.files[f'/org/{repo}/resolve/main/model.safetensors'] = \
            safetensors.torch.save({'w': torch.full((2, ), value)})
    for repo, value in (('a', 1.0), ('b', 2.0)):
        ckpt = read_checkpoint(
            server.url(f'/org/{repo}/resolve/main/model.safetensors'))
        assert ckpt['w'].tolist() == [value, value]
    assert cached(hub) == ['org--a--model.safetensors',
                           'org--b--model.safetensors']


GOOD = {'state_dict': {'w': torch.arange(4.0)}}


def fault_404(server, path):
    pass  # nothing served


def fault_dropped(server, path):
    server.files[path] = saved(GOOD) * 4
    server.drop.add(path)


def fault_not_a_checkpoint(server, path):
    server.files[path] = b'<html><body>Sign in to download</body></html>'


def fault_hash(server, path):
    server.files[path] = saved(GOOD)


FAULTS = {
    'not found': (fault_404, 'HTTP 404'),
    'dropped': (fault_dropped, 'the connection closed after'),
    'not a checkpoint': (fault_not_a_checkpoint,
                         'not a PyTorch checkpoint'),
    'hash': (fault_hash, 'SHA-256 does not start with 0123abcd'),
}


@pytest.mark.parametrize('fault', list(FAULTS))
def test_download_fault_is_one_line_and_caches_nothing(fault, hub, server):
    # Only the hash fault's file has a hash in its name: the other faults
    # must be caught without one.
    path = ('/models/cgrseg-t_ade20k_20240101-0123abcd.pth'
            if fault == 'hash' else '/models/cgrseg-t_ade20k.pth')
    make, cause = FAULTS[fault]
    make(server, path)
    url = server.url(path)
    with pytest.raises(CheckpointError) as error:
        read_checkpoint(url)
    message = str(error.value)
    assert url in message and cause in message and '\n' not in message
    assert cached(hub) == []
    # Served right, the same URL now loads: nothing stale stood in the way.
    good = saved(GOOD)
    path_ok = f'/models/cgrseg-t_ade20k_20240101-{sha256(good)[:8]}.pth'
    server.files[path_ok] = good
    server.drop.discard(path_ok)
    assert torch.equal(read_checkpoint(server.url(path_ok))['state_dict']
                       ['w'], GOOD['state_dict']['w'])


@contextmanager
def log_messages() -> Iterator[List[str]]:
    """The messages of the current MMLogger while the block runs."""
    messages: List[str] = []
    logger = MMLogger.get_current_instance()

    def keep(record) -> bool:
        messages.append(record.getMessage())
        return True

    logger.addFilter(keep)
    try:
        yield messages
    finally:
        logger.removeFilter(keep)


def test_download_is_streamed_with_size_and_progress(hub, server, capsys):
    """16 MiB arrive in 1 MiB chunks: Python never holds the file (the
    peak allocation stays under 6 MiB); the log says the size and the rate,
    stderr shows the progress bar (drawn once when not a terminal)."""
    data = bytes(range(256)) * (1 << 16)
    server.files['/big.pth'] = data
    tracemalloc.start()
    try:
        with log_messages() as messages:
            path, downloaded = cached_download(server.url('/big.pth'))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert downloaded and open(path, 'rb').read() == data
    assert peak < 6 << 20, f'{peak / 2**20:.1f} MiB held while downloading'
    assert any(m.startswith('Downloading ') and '(16.0 MiB)' in m
               for m in messages), messages
    assert any(re.fullmatch(r'Downloaded 16\.0 MiB in [\d.]+ s '
                            r'\([\d.]+ MiB/s\)\.', m)
               for m in messages), messages
    assert '16.0/16.0 MiB' in capsys.readouterr().err


def test_another_downloads_temporary_file_is_left_alone(hub, server):
    """Two jobs sharing a cache download into temporary files of their own:
    one job's finished download leaves the other's partial file alone."""
    hub.mkdir(parents=True)
    others = [hub / 'x.pth.tmp', hub / 'x.pth.part']
    for other in others:
        other.write_bytes(b'another job, half way')
    server.files['/x.pth'] = saved(GOOD)
    assert torch.equal(read_checkpoint(server.url('/x.pth'))['state_dict']
                       ['w'], GOOD['state_dict']['w'])
    for other in others:
        assert other.read_bytes() == b'another job, half way'
    assert cached(hub) == ['x.pth', 'x.pth.part', 'x.pth.tmp']


def test_full_disk_while_downloading_names_the_cache(hub, server,
                                                     monkeypatch):
    server.files['/x.pth'] = saved(GOOD)
    real_fdopen = os.fdopen

    class FullDisk(io.RawIOBase):

        def __init__(self, file) -> None:
            self.file = file

        def write(self, data) -> int:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        def fileno(self) -> int:
            return self.file.fileno()

        def close(self) -> None:
            self.file.close()

    monkeypatch.setattr(checkpoint_download.os, 'fdopen',
                        lambda fd, mode: FullDisk(real_fdopen(fd, mode)))
    with pytest.raises(CheckpointError) as error:
        read_checkpoint(server.url('/x.pth'))
    message = str(error.value)
    assert 'No space left on device' in message and str(hub) in message
    assert '$TORCH_HOME' in message and '--work-dir' not in message
    assert '\n' not in message
    assert cached(hub) == []


def test_corrupt_cached_file_names_itself(hub, server):
    hub.mkdir(parents=True)
    (hub / 'x.pth').write_bytes(b'garbage')
    server.files['/x.pth'] = saved(GOOD)
    with pytest.raises(CheckpointError, match=r'cached download of .*/x\.pth'
                       r': delete .*x\.pth to download it again'):
        read_checkpoint(server.url('/x.pth'))
    assert server.requests == []


class Payload:
    """Writes a file when unpickled: must never run."""

    def __init__(self, flag: str) -> None:
        self.flag = flag

    def __reduce__(self):
        return (open, (self.flag, 'w'))


def test_mmengine_url_loading_refuses_pickled_code(hub, server, tmp_path):
    """``load_from``/``resume`` read URLs through MMEngine's
    ``CheckpointLoader``, whose own URL loader unpickles anything."""
    flag = tmp_path / 'ran'
    server.files['/evil.pth'] = saved({'state_dict': {}, 'x': Payload(
        str(flag))})
    with pytest.raises(CheckpointError, match='cannot be loaded safely'):
        CheckpointLoader.load_checkpoint(server.url('/evil.pth'))
    assert not flag.exists()
    assert cached(hub) == []


def serve_by_name(monkeypatch, table: str, url: str) -> None:
    """MMEngine's ``table`` of model names (one of its ``get_*_models``)
    maps ``evil`` to ``url``."""
    monkeypatch.setattr(mmengine_checkpoint, table, lambda: {'evil': url})


def serve_from_storage(monkeypatch, data: bytes) -> None:
    """Object storage (MMEngine's petrel backend) holds ``data``."""
    monkeypatch.setattr(mmengine.fileio, 'get',
                        lambda name, backend_args=None: data)


# Every scheme of MMEngine's CheckpointLoader: a source naming the payload
# through it, and how the test serves it there.
SCHEMES = {
    '': ('{local}', None),
    'http://': ('{url}', None),
    'https://': ('{url}', None),  # same reader; the server speaks http
    'open-mmlab://': ('open-mmlab://evil', 'get_external_models'),
    'openmmlab://': ('openmmlab://evil', 'get_external_models'),
    'torchvision://': ('torchvision://evil', 'get_torchvision_models'),
    'modelzoo://': ('modelzoo://evil', 'get_torchvision_models'),
    'mmcls://': ('mmcls://evil', 'get_mmcls_models'),
    r'(\S+\:)?s3://': ('s3://bucket/evil.pth', 'storage'),
    r'(\S+\:)?petrel://': ('cluster:petrel://bucket/evil.pth', 'storage'),
    'pavi://': ('pavi://evil', None),
}


def test_every_mmengine_scheme_is_read_here():
    """A scheme that a new MMEngine adds fails here until it has a reader
    in checkpoint_schemes and a case in SCHEMES."""
    readers = CheckpointLoader._schemes
    assert sorted(readers) == sorted(SCHEMES)
    assert {reader.__module__ for reader in readers.values()} == {
        checkpoint_schemes.__name__}


@pytest.mark.parametrize('scheme', list(SCHEMES))
def test_every_scheme_refuses_pickled_code(scheme, hub, server, tmp_path,
                                           monkeypatch):
    flag = tmp_path / 'ran'
    payload = saved({'state_dict': {}, 'x': Payload(str(flag))})
    server.files['/evil.pth'] = payload
    (tmp_path / 'evil.pth').write_bytes(payload)
    template, serve = SCHEMES[scheme]
    source = template.format(local=tmp_path / 'evil.pth',
                             url=server.url('/evil.pth'))
    if serve == 'storage':
        serve_from_storage(monkeypatch, payload)
    elif serve:
        serve_by_name(monkeypatch, serve, server.url('/evil.pth'))
    expected = ('pavi:// checkpoints are not read' if scheme == 'pavi://'
                else 'cannot be loaded safely')
    with pytest.raises(CheckpointError, match=expected) as error:
        read_checkpoint(source)
    assert '\n' not in str(error.value)
    assert not flag.exists()


def test_named_model_errors_are_one_line(monkeypatch):
    def no_torchvision():
        raise ModuleNotFoundError("No module named 'torchvision'")

    monkeypatch.setattr(mmengine_checkpoint, 'get_torchvision_models',
                        no_torchvision)
    with pytest.raises(CheckpointError, match='pip install torchvision'):
        read_checkpoint('torchvision://resnet50')
    with pytest.raises(CheckpointError,
                       match="'nonexistent' is not a model name MMEngine"):
        read_checkpoint('mmcls://nonexistent')


def test_teacher_checkpoint_url(hub, server):
    model = init_segmentor(TEACHER_CONFIG)
    server.files['/teacher.pth'] = saved({'state_dict': model.state_dict()})
    teacher = build_teacher(dict(config=TEACHER_CONFIG,
                                 checkpoint=server.url('/teacher.pth')))
    for key, value in model.state_dict().items():
        assert torch.equal(teacher.state_dict()[key], value), key


@pytest.mark.e2e
def test_test_tool_and_exporter_take_a_url(hub, server, tmp_path):
    from cgrseg.datasets import generate_shapes
    data_root = str(tmp_path / 'shapes')
    generate_shapes(data_root)
    model = init_segmentor(DEMO_CONFIG)
    server.files['/demo.pth'] = saved(
        {'state_dict': model.state_dict(),
         'meta': {'dataset_meta': model.dataset_meta}})
    url = server.url('/demo.pth')
    env = {'TORCH_HOME': os.environ['TORCH_HOME']}
    for _ in range(2):
        proc = run(python('tools/test.py', DEMO_CONFIG, url, '--work-dir',
                          str(tmp_path / 'test'), '--cfg-options',
                          f'test_dataloader.dataset.data_root={data_root}',
                          'test_dataloader.dataset.indices=2'), env=env)
        assert 'mIoU' in proc.stdout
    assert server.requests == ['/demo.pth']
    onnx = str(tmp_path / 'demo.onnx')
    run(python('tools/deployment/pytorch2onnx.py', DEMO_CONFIG, url,
               '--out', onnx, '--shape', '64', '64'), env=env)
    assert osp.getsize(onnx) > 0
    assert server.requests == ['/demo.pth']
    missing = server.url('/missing.pth')
    pretrained = tmp_path / 'pretrained.py'
    pretrained.write_text(
        f'_base_ = {DEMO_CONFIG!r}\nmodel = dict(backbone=dict(init_cfg=dict('
        f'_delete_=True, type="Pretrained", checkpoint={missing!r})))\n')
    data = [f'{split}_dataloader.dataset.data_root={data_root}'
            for split in ('train', 'val', 'test')]
    for tool in (['tools/test.py', DEMO_CONFIG, missing],
                 ['tools/train.py', str(pretrained), '--work-dir',
                  str(tmp_path / 'train')]):
        proc = run(python(*tool, '--cfg-options', *data), env=env,
                   check=False)
        assert proc.returncode != 0 and 'Traceback' not in proc.stderr
        assert f'could not download checkpoint {missing}: the server ' \
            f'answered HTTP 404' in proc.stderr.splitlines()[-1]
