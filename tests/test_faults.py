"""Fault sweep: training meets a fault (kill -9 while a checkpoint or
last_checkpoint is written, a full disk, SIGTERM to a process or to one DDP
rank, a corrupt image, a wrong-size label map,
labels outside num_classes, NaN input) and each test checks what the user
sees and that nothing saved
before the fault is lost. Related faults tested elsewhere: a killed run
resumes (test_train_tools.py::test_kill_and_resume_matches_uninterrupted_run),
a truncated checkpoint (..._truncated_checkpoint_is_a_clear_error), an
unreadable image (test_engine.py::test_unreadable_image_names_the_file), an
inf loss, NaN weights (test_engine.py)."""
import glob
import json
import os
import os.path as osp
import select
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch
from mmengine.hooks import Hook

from e2e import DEMO_CONFIG, REPO, python, run, tiny_schedule


@pytest.fixture(scope='module')
def data_root(tmp_path_factory):
    from cgrseg.datasets import generate_shapes
    root = str(tmp_path_factory.mktemp('data') / 'shapes')
    generate_shapes(root)
    return root


def train_args(data_root: str, work_dir: str, *extra: str) -> list:
    """tools/train.py for 8 iterations, checkpoints at 4 and 8."""
    return python('tools/train.py', DEMO_CONFIG, '--work-dir', work_dir,
                  *extra, '--cfg-options', *tiny_schedule(data_root))


def popen(args: list, **kwargs) -> subprocess.Popen:
    env = dict(os.environ, PYTHONUNBUFFERED='1', OMP_NUM_THREADS='1')
    return subprocess.Popen(args, cwd=str(REPO), env=env, **kwargs)


def checkpoint_iter(path: str) -> int:
    """The iteration a checkpoint was saved at (it loads completely)."""
    return torch.load(path, weights_only=True)['meta']['iter']


def last_checkpoint(work_dir: str) -> str:
    return open(osp.join(work_dir, 'last_checkpoint')).read().strip()


def newest_log(work_dir: str) -> str:
    logs = sorted(glob.glob(osp.join(work_dir, '*', '*.log')))
    return open(logs[-1]).read()


def assert_resumes_from(work_dir: str, data_root: str, done: int) -> None:
    """``--resume`` continues after iteration ``done`` and completes."""
    run(train_args(data_root, work_dir, '--resume'))
    log = newest_log(work_dir)
    assert f'resumed epoch: 0, iter: {done}' in log
    first = next(line for line in log.splitlines() if 'Iter(train) [' in line)
    assert f'Iter(train) [{done + 1}/8]' in first, first
    assert checkpoint_iter(osp.join(work_dir, 'iter_8.pth')) == 8


KEEP_ONE = 'default_hooks.checkpoint.max_keep_ckpts=1'


@pytest.mark.e2e
def test_kill_9_while_writing_a_checkpoint_keeps_the_previous_one(
        data_root, tmp_path):
    """The writer of iter_8.pth is killed half way: iter_8.pth and its
    temporary file are FIFOs, so the write blocks once the test stops
    reading; the bytes read stand for what reached the disk. Only one
    checkpoint is kept, so iter_4.pth must not be deleted before iter_8.pth
    is complete."""
    work_dir = str(tmp_path)
    names = ('iter_8.pth', 'iter_8.pth.tmp')
    readers = {}
    for name in names:
        os.mkfifo(osp.join(work_dir, name))
        readers[os.open(osp.join(work_dir, name),
                        os.O_RDONLY | os.O_NONBLOCK)] = name
    written = dict.fromkeys(names, b'')
    # Its own process group, so that kill -9 takes the data-loader workers
    # with it (as a scheduler killing the job does).
    proc = popen(train_args(data_root, work_dir) + [KEEP_ONE],
                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                 start_new_session=True)
    try:
        while sum(map(len, written.values())) < 2**20:
            assert proc.poll() is None, 'training ended before the kill'
            ready, _, _ = select.select(list(readers), [], [], 600)
            assert ready, 'no checkpoint write within 10 minutes'
            for fd in ready:
                written[readers[fd]] += os.read(fd, 2**16)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        for fd in readers:
            os.close(fd)
    for name, data in written.items():  # the disk after the kill
        os.remove(osp.join(work_dir, name))
        if data:
            open(osp.join(work_dir, name), 'wb').write(data)

    assert not osp.exists(osp.join(work_dir, 'iter_8.pth')), \
        'a partial checkpoint sits under the final name'
    assert written['iter_8.pth.tmp'].startswith(b'PK')  # torch's zip
    assert last_checkpoint(work_dir) == osp.join(work_dir, 'iter_4.pth')
    assert checkpoint_iter(osp.join(work_dir, 'iter_4.pth')) == 4
    assert_resumes_from(work_dir, data_root, 4)
    assert not osp.exists(osp.join(work_dir, 'iter_8.pth.tmp'))


@pytest.mark.e2e
def test_kill_9_while_pointing_to_a_new_checkpoint_keeps_the_old_pointer(
        data_root, tmp_path):
    """Killed while last_checkpoint is rewritten for iter_8.pth (once
    iter_4.pth is saved, last_checkpoint's temporary file becomes a FIFO;
    the writer is killed when the test has read the new pointer from it).
    One checkpoint is kept: iter_4.pth, still pointed to, must exist."""
    work_dir = str(tmp_path)
    pointer = osp.join(work_dir, 'last_checkpoint')
    proc = popen(train_args(data_root, work_dir) + [KEEP_ONE],
                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                 start_new_session=True)
    try:
        while not (osp.exists(pointer) and 'iter_4' in open(pointer).read()):
            assert proc.poll() is None, 'training ended before iter_4.pth'
            time.sleep(0.05)
        os.mkfifo(pointer + '.tmp')
        reader = os.open(pointer + '.tmp', os.O_RDONLY | os.O_NONBLOCK)
        written = b''
        while not written:
            assert proc.poll() is None, \
                'training ended without writing last_checkpoint.tmp'
            if select.select([reader], [], [], 1)[0]:
                written = os.read(reader, 4096)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    os.close(reader)
    if osp.lexists(pointer + '.tmp'):  # the writer may have removed it
        os.remove(pointer + '.tmp')
    open(pointer + '.tmp', 'wb').write(written)  # the disk after the kill

    assert written.decode().endswith('iter_8.pth')
    assert last_checkpoint(work_dir) == osp.join(work_dir, 'iter_4.pth')
    assert checkpoint_iter(osp.join(work_dir, 'iter_4.pth')) == 4
    assert_resumes_from(work_dir, data_root, 4)


@pytest.mark.e2e
def test_full_disk_while_saving_is_one_clear_error(data_root, tmp_path):
    """iter_8.pth's temporary file is /dev/full, where every write fails
    with ENOSPC."""
    work_dir = str(tmp_path)
    target = osp.join(work_dir, 'iter_8.pth')
    os.symlink('/dev/full', target + '.tmp')
    proc = run(train_args(data_root, work_dir), check=False)
    assert proc.returncode == 1 and 'Traceback' not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == (
        f'tools/train.py: [Errno 28] could not write {target}: No space '
        f'left on device. Nothing was written under that name and earlier '
        f'files in {work_dir} are intact; free space there (or choose '
        f'another --work-dir) and continue with --resume')
    assert not osp.lexists(target) and not osp.lexists(target + '.tmp')
    assert last_checkpoint(work_dir) == osp.join(work_dir, 'iter_4.pth')
    assert checkpoint_iter(osp.join(work_dir, 'iter_4.pth')) == 4


@pytest.mark.e2e
def test_sigterm_saves_a_checkpoint_and_resume_continues(data_root,
                                                         tmp_path):
    work_dir = str(tmp_path)
    proc = popen(train_args(data_root, work_dir), stdout=subprocess.PIPE,
                 stderr=subprocess.STDOUT, text=True)
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if 'Iter(train) [5/8]' in line:
            proc.send_signal(signal.SIGTERM)
            break
    output = ''.join(seen) + proc.communicate(timeout=600)[0]
    assert proc.returncode == 128 + signal.SIGTERM, output[-3000:]
    [message] = [line for line in output.splitlines()
                 if 'SIGTERM: training stopped' in line]
    done = int(message.split('after iteration ')[1].split()[0])
    assert 5 <= done < 8, message
    path = osp.join(work_dir, f'iter_{done}.pth')
    assert message.endswith(
        f'SIGTERM: training stopped after iteration {done} of 8, checkpoint '
        f'{path}. Continue with tools/train.py ... --resume.')
    assert last_checkpoint(work_dir) == path
    assert checkpoint_iter(path) == done
    assert_resumes_from(work_dir, data_root, done)


@pytest.fixture
def shapes_copy(data_root, tmp_path):
    """A copy of the demo data that a test may damage."""
    root = tmp_path / 'shapes'
    shutil.copytree(data_root, root)
    return root


def in_process_run(root, work_dir, iters: int = 3, check_files: bool = True,
                   save_best=None):
    """A Runner for ``iters`` iterations (no workers), a checkpoint after
    each, validation at the end; ``check_files=False``: without
    DatasetCheckHook's check of the files before training (to test
    BatchCheckHook's, batch by batch)."""
    from mmengine.runner import Runner

    from test_engine import demo_cfg
    cfg = demo_cfg(str(root), str(work_dir), iters=iters)
    cfg.default_hooks.checkpoint.interval = 1
    cfg.default_hooks.checkpoint.save_best = save_best
    for hook in cfg.custom_hooks:
        if hook['type'] == 'DatasetCheckHook':
            hook['check_files'] = check_files
    return Runner.from_cfg(cfg)


class AtIteration(Hook):
    """Calls ``action(data_batch)`` before training iteration ``at``
    (1-based), before any other hook."""

    priority = 'HIGHEST'

    def __init__(self, at: int, action) -> None:
        self.at, self.action = at, action

    def before_train_iter(self, runner, batch_idx, data_batch=None) -> None:
        if runner.iter + 1 == self.at:
            self.action(data_batch)


@pytest.mark.e2e
def test_image_corrupted_mid_epoch_names_the_file(shapes_copy, tmp_path):
    """Every training image turns unreadable before iteration 2."""

    def corrupt(data_batch) -> None:
        for image in (shapes_copy / 'img_dir' / 'train').glob('*.png'):
            image.write_bytes(b'not a png')

    runner = in_process_run(shapes_copy, tmp_path / 'work')
    # the batch of iteration 2 is loaded when iteration 1 is done
    runner.register_hook(AtIteration(1, corrupt))
    with pytest.raises(
            AssertionError,
            match=r'failed to load image: .*img_dir/train/\d+\.png'):
        runner.train()
    assert checkpoint_iter(str(tmp_path / 'work' / 'iter_1.pth')) == 1


@pytest.mark.e2e
@pytest.mark.parametrize('split', ['train', 'val'])
def test_label_map_of_the_wrong_size_names_the_file(split, shapes_copy,
                                                    tmp_path):
    import mmcv
    for path in (shapes_copy / 'ann_dir' / split).glob('*.png'):
        label = mmcv.imread(str(path), flag='unchanged')
        mmcv.imwrite(label[:96, :64], str(path))  # 128x128 images
    runner = in_process_run(shapes_copy, tmp_path / 'work', iters=1,
                            check_files=False)
    when = ' after the training pipeline' if split == 'train' else ''
    with pytest.raises(ValueError, match=(
            rf'label map .*ann_dir/{split}/0\d+\.png is \d+x\d+ but its '
            rf'image .*img_dir/{split}/0\d+\.png is 128x128{when}: a label '
            rf'map must have the height and width of its image')):
        runner.train()
    if split == 'val':  # training ran, its checkpoint is saved
        assert checkpoint_iter(str(tmp_path / 'work' / 'iter_1.pth')) == 1


@pytest.mark.e2e
def test_label_outside_num_classes_stops_training_naming_the_file(
        shapes_copy, tmp_path):
    import mmcv
    for path in (shapes_copy / 'ann_dir' / 'train').glob('*.png'):
        label = mmcv.imread(str(path), flag='unchanged')
        label[62:66] = 9  # the demo has 5 classes; a band no crop misses
        mmcv.imwrite(label, str(path))
    runner = in_process_run(shapes_copy, tmp_path / 'work', iters=1,
                            check_files=False)
    with pytest.raises(ValueError, match=(
            r'label map .*ann_dir/train/0\d+\.png contains values \[9\] '
            r'outside \[0, 4\] \(ignore_index 255\)')):
        runner.train()


@pytest.mark.e2e
def test_nan_input_is_a_clear_error_and_the_weights_stay_finite(
        shapes_copy, tmp_path):

    def poison(data_batch) -> None:
        data_batch['inputs'][1] = data_batch['inputs'][1].float()
        data_batch['inputs'][1][0, 5, 5] = float('nan')

    runner = in_process_run(shapes_copy, tmp_path / 'work')
    runner.register_hook(AtIteration(2, poison))
    with pytest.raises(ValueError, match=(
            r'the input image .*img_dir/train/0\d+\.png \(label map '
            r'.*ann_dir/train/0\d+\.png\) holds NaN or inf values')):
        runner.train()
    saved = torch.load(tmp_path / 'work' / 'iter_1.pth', weights_only=True)
    for key, value in runner.model.state_dict().items():
        assert torch.equal(value, saved['state_dict'][key]), key
        assert not value.is_floating_point() or torch.isfinite(value).all()


def test_every_config_saves_atomically_and_stops_on_sigterm():
    from mmengine.config import Config
    configs = glob.glob(str(REPO / 'configs' / '**' / '*.py'), recursive=True)
    configs = [c for c in configs if '_base_' not in c]
    assert len(configs) > 10
    for config in configs:
        cfg = Config.fromfile(config)
        assert cfg.default_hooks.checkpoint.backend_args == dict(
            backend='local_atomic'), config
        assert cfg.default_hooks.checkpoint.type == \
            'CrashSafeCheckpointHook', config
        assert cfg.optim_wrapper.type == 'NonFiniteSkipOptimWrapper', config
        hooks = [hook['type'] for hook in cfg.custom_hooks]
        assert {'SignalStopHook', 'BatchCheckHook'} <= set(hooks), config


class FilesAtSave(Hook):
    """Records, as each checkpoint is about to be written, the checkpoints
    in the work dir and where last_checkpoint points."""

    def __init__(self, seen: list) -> None:
        self.seen = seen

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        work_dir = runner.work_dir
        pointer = osp.join(work_dir, 'last_checkpoint')
        self.seen.append((
            checkpoint['meta']['iter'],
            sorted(osp.basename(p)
                   for p in glob.glob(osp.join(work_dir, 'iter_*.pth'))),
            osp.basename(last_checkpoint(work_dir))
            if osp.exists(pointer) else None))


@pytest.mark.e2e
def test_crash_safe_hook_replaces_mmengines_save(shapes_copy, tmp_path):
    """With max_keep_ckpts=1 the kept checkpoint is deleted only after the
    next one and last_checkpoint are written. CrashSafeCheckpointHook
    overrides CheckpointHook._save_checkpoint_with_step (MMEngine has no
    public step between writing and deleting): this fails if MMEngine
    stops saving through it."""
    import inspect

    from mmengine.hooks import CheckpointHook
    assert list(inspect.signature(
        CheckpointHook._save_checkpoint_with_step).parameters) == [
            'self', 'runner', 'step', 'meta'], \
        'MMEngine changed CheckpointHook._save_checkpoint_with_step: ' \
        'update cgrseg.engine.hooks.CrashSafeCheckpointHook'
    runner = in_process_run(shapes_copy, tmp_path / 'work')
    seen = []
    runner.register_hook(FilesAtSave(seen), priority='LOWEST')
    checkpoint_hook = next(h for h in runner.hooks
                           if isinstance(h, CheckpointHook))
    assert type(checkpoint_hook).__name__ == 'CrashSafeCheckpointHook'
    checkpoint_hook.max_keep_ckpts = 1
    runner.train()
    assert [(i, files, pointer) for i, files, pointer in seen] == [
        (1, [], None),
        (2, ['iter_1.pth'], 'iter_1.pth'),
        (3, ['iter_2.pth'], 'iter_2.pth')]
    work_dir = str(tmp_path / 'work')
    assert sorted(osp.basename(p) for p in glob.glob(
        osp.join(work_dir, 'iter_*.pth'))) == ['iter_3.pth']
    assert last_checkpoint(work_dir) == osp.join(work_dir, 'iter_3.pth')
    assert checkpoint_iter(osp.join(work_dir, 'iter_3.pth')) == 3


class Killed(Exception):
    """Stands for a kill in the middle of a save."""


@pytest.mark.e2e
def test_kill_while_saving_a_new_best_keeps_the_previous_best(
        shapes_copy, tmp_path):
    """MMEngine deletes the previous best checkpoint before it writes the
    new one; CrashSafeCheckpointHook keeps the previous file (hard-linked as
    previous_<name>) until the new one is written."""
    from mmengine.hooks import CheckpointHook
    runner = in_process_run(shapes_copy, tmp_path / 'work', save_best='mIoU')
    runner.train()  # the validation at the end saved a first best
    hook = next(h for h in runner.hooks if isinstance(h, CheckpointHook))
    folder = osp.dirname(hook.best_ckpt_path)
    # An uninterrupted new best leaves no previous_ file ...
    hook.after_val_epoch(runner, {'mIoU': 1e9})
    best = hook.best_ckpt_path
    assert osp.isfile(best)
    assert glob.glob(osp.join(folder, 'previous_*')) == []
    saved = open(best, 'rb').read()

    def killed(*args, **kwargs):
        raise Killed

    # ... a kill while the next one is written leaves the previous one.
    runner.save_checkpoint = killed
    with pytest.raises(Killed):
        hook.after_val_epoch(runner, {'mIoU': 2e9})
    assert not osp.exists(best)  # deleted by MMEngine
    kept = osp.join(folder, 'previous_' + osp.basename(best))
    assert open(kept, 'rb').read() == saved
    assert 'state_dict' in torch.load(kept, weights_only=True)


def test_best_checkpoint_without_hard_links_is_a_warning(tmp_path,
                                                        monkeypatch):
    """Where the previous best cannot be hard-linked (a file system without
    hard links), the hook says so instead of falling back silently."""
    from mmengine.fileio import LocalBackend
    from mmengine.logging import MMLogger

    from cgrseg.engine.hooks import CrashSafeCheckpointHook
    from cgrseg.engine.hooks import crash_safe_checkpoint_hook as module
    best = tmp_path / 'best_mIoU_iter_3.pth'
    best.write_bytes(b'checkpoint')
    hook = CrashSafeCheckpointHook(save_best='mIoU')
    hook.file_backend, hook.best_ckpt_path = LocalBackend(), str(best)

    def no_hard_links(source, target):
        raise OSError(1, 'Operation not permitted')

    monkeypatch.setattr(module.os, 'link', no_hard_links)
    warnings = []

    def keep_warnings(record) -> bool:
        if record.levelname == 'WARNING':
            warnings.append(record.getMessage())
        return True

    logger = MMLogger.get_current_instance()
    logger.addFilter(keep_warnings)
    try:
        assert hook._link_best_checkpoints() == []
    finally:
        logger.removeFilter(keep_warnings)
    assert any(str(best) in w and 'Operation not permitted' in w
               for w in warnings), warnings


@pytest.mark.e2e
def test_sigterm_in_process_saves_through_the_checkpoint_hook(
        shapes_copy, tmp_path):
    """SignalStopHook saves iteration 2 (the interval is 3) through
    CrashSafeCheckpointHook.save."""
    from mmengine.hooks import CheckpointHook
    runner = in_process_run(shapes_copy, tmp_path / 'work', iters=4)
    hook = next(h for h in runner.hooks if isinstance(h, CheckpointHook))
    hook.interval = 3
    runner.register_hook(AtIteration(
        2, lambda batch: os.kill(os.getpid(), signal.SIGTERM)))
    runner.train()
    work_dir = str(tmp_path / 'work')
    assert runner.iter == 2
    assert sorted(osp.basename(p) for p in glob.glob(
        osp.join(work_dir, 'iter_*.pth'))) == ['iter_2.pth']
    assert last_checkpoint(work_dir) == osp.join(work_dir, 'iter_2.pth')
    assert checkpoint_iter(osp.join(work_dir, 'iter_2.pth')) == 2


def rank_pid(probe_dir: str, rank: int) -> int:
    """The training process of ``rank`` of the run whose ranks have
    CGRSEG_PROBE_DIR=probe_dir (found through /proc)."""
    wanted = {f'CGRSEG_PROBE_DIR={probe_dir}'.encode(),
              f'RANK={rank}'.encode()}
    for entry in os.listdir('/proc'):
        try:
            with open(f'/proc/{entry}/environ', 'rb') as f:
                env = set(f.read().split(b'\0'))
            cmdline = open(f'/proc/{entry}/cmdline', 'rb').read()
        except (OSError, ValueError):
            continue
        if wanted <= env and b'train.py' in cmdline:
            return int(entry)
    raise AssertionError(f'no rank {rank} process found')


def dist_train(config: str, work_dir: str, data_root: str,
               *extra: str) -> list:
    return ['bash', 'tools/dist_train.sh', config, '2', '--work-dir',
            work_dir, *extra, '--cfg-options', *tiny_schedule(data_root)]


class AtValIteration(Hook):
    """Records the validation iterations and calls ``action()`` before the
    first one."""

    priority = 'HIGHEST'

    def __init__(self, action) -> None:
        self.action, self.seen = action, []

    def before_val_iter(self, runner, batch_idx, data_batch=None) -> None:
        self.seen.append(batch_idx)
        if batch_idx == 0:
            self.action()


@pytest.mark.e2e
def test_sigterm_during_validation_saves_after_one_val_iteration(
        shapes_copy, tmp_path):
    """SIGTERM at the first of 2 validation images (validation after
    iteration 2, checkpoints every 3): iteration 2 is saved and training
    stops before the second image, not after validation and iteration 3
    (torchrun and Slurm kill about 30 s after SIGTERM)."""
    from mmengine.runner import Runner

    from cgrseg.engine import TrainingStopped, signal_exit_status
    from test_engine import demo_cfg
    cfg = demo_cfg(str(shapes_copy), str(tmp_path / 'work'), iters=4)
    cfg.train_cfg.val_interval = 2
    cfg.default_hooks.checkpoint.interval = 3
    runner = Runner.from_cfg(cfg)
    handler = signal.getsignal(signal.SIGTERM)
    probe = AtValIteration(lambda: os.kill(os.getpid(), signal.SIGTERM))
    runner.register_hook(probe)
    with pytest.raises(TrainingStopped, match='after iteration 2'):
        runner.train()
    assert probe.seen == [0]
    work_dir = str(tmp_path / 'work')
    assert sorted(osp.basename(p) for p in glob.glob(
        osp.join(work_dir, 'iter_*.pth'))) == ['iter_2.pth']
    assert last_checkpoint(work_dir) == osp.join(work_dir, 'iter_2.pth')
    assert checkpoint_iter(osp.join(work_dir, 'iter_2.pth')) == 2
    assert signal_exit_status(runner) == 128 + signal.SIGTERM
    assert signal.getsignal(signal.SIGTERM) is handler


@pytest.mark.e2e
def test_sigterm_to_one_ddp_rank_stops_both_and_resume_matches(
        data_root, tmp_path):
    """2-process DDP (gloo): SIGTERM to rank 1 only. Both ranks stop after
    the same iteration, one checkpoint is saved for it, and the resumed
    run ends with the weights of an uninterrupted one."""
    config = tmp_path / 'ddp_probe.py'
    config.write_text(
        f'_base_ = {DEMO_CONFIG!r}\n'
        "custom_imports = dict(imports=['cgrseg', 'helpers.param_probe'])\n"
        "custom_hooks = _base_.custom_hooks + [dict(type='ParamProbeHook')]\n")
    port = 29500 + (os.getpid() + 700) % 1000

    def env(probe: str) -> dict:
        os.makedirs(probe, exist_ok=True)
        return dict(os.environ, PYTHONUNBUFFERED='1', OMP_NUM_THREADS='1',
                    CGRSEG_PROBE_DIR=probe, PYTHON=sys.executable,
                    PYTHONPATH=str(REPO / 'tests'), PORT=str(port))

    def launch(work_dir: str, probe: str, *extra: str) -> subprocess.Popen:
        # its own process group: a rank left waiting for the other (the
        # failure this test looks for) is killed with the launcher
        return subprocess.Popen(
            dist_train(str(config), work_dir, data_root, *extra),
            cwd=str(REPO), env=env(probe), stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True, start_new_session=True)

    def output_of(proc: subprocess.Popen, seen: str = '') -> str:
        try:
            return seen + proc.communicate(timeout=600)[0]
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()

    work_dir, probe = str(tmp_path / 'work'), str(tmp_path / 'killed')
    proc = launch(work_dir, probe)
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if 'Iter(train) [3/8]' in line:
            os.kill(rank_pid(probe, 1), signal.SIGTERM)
            break
    output = output_of(proc, ''.join(seen))
    assert proc.returncode != 0, output[-3000:]  # torchrun: ranks ended 143
    [message] = [line for line in output.splitlines()
                 if 'training stopped after iteration' in line]
    done = int(message.split('after iteration ')[1].split()[0])
    path = osp.join(work_dir, f'iter_{done}.pth')
    assert f'SIGTERM (sent to another rank): training stopped after ' \
        f'iteration {done} of 8, checkpoint {path}.' in message
    assert 3 <= done < 8, message
    ranks = [json.load(open(osp.join(probe, f'rank{r}.json')))
             for r in (0, 1)]
    assert [len(r['samples']) for r in ranks] == [2 * done] * 2
    assert sorted(os.listdir(work_dir)).count(f'iter_{done}.pth') == 1
    assert last_checkpoint(work_dir) == path
    assert checkpoint_iter(path) == done

    probe = str(tmp_path / 'resumed')
    proc = launch(work_dir, probe, '--resume')
    output = output_of(proc)
    assert proc.returncode == 0, output[-3000:]
    assert len(json.load(open(osp.join(probe, 'rank0.json')))[
        'samples']) == 2 * (8 - done)
    reference_dir, probe = str(tmp_path / 'reference'), str(tmp_path / 'ref')
    proc = launch(reference_dir, probe)
    output = output_of(proc)
    assert proc.returncode == 0, output[-3000:]
    resumed, reference = (
        torch.load(osp.join(d, 'iter_8.pth'), weights_only=True)['state_dict']
        for d in (work_dir, reference_dir))
    assert list(resumed) == list(reference)
    for key, value in reference.items():
        assert torch.equal(resumed[key], value), key
