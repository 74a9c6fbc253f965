"""Optimizer wrappers, hooks and config adjustments, in process with the
MMEngine Runner on the demo data (a few iterations each)."""
import os.path as osp

import pytest
import torch
from mmengine.config import Config
from mmengine.runner import Runner

from cgrseg.engine.hooks.batch_check_hook import check_label_range
from cgrseg.engine.hooks.rng_state_hook import (capture_rng_state,
                                                restore_rng_state)
from cgrseg.engine.tool_setup import (configure_amp, configure_sync_bn,
                                      unexpected_keyword_message)
from e2e import DEMO_CONFIG, tiny_schedule


@pytest.fixture(scope='module')
def data_root(tmp_path_factory):
    from cgrseg.datasets import generate_shapes
    root = str(tmp_path_factory.mktemp('data') / 'shapes')
    generate_shapes(root)
    return root


def demo_cfg(data_root: str, work_dir: str, iters: int = 2) -> Config:
    cfg = Config.fromfile(DEMO_CONFIG)
    options = {}
    for item in tiny_schedule(data_root, iters, iters):
        key, value = item.split('=', 1)
        options[key] = eval(value) if value[:1].isdigit() or value in (
            'True', 'False', 'None') or value.startswith('-') else value
    cfg.merge_from_dict(options)
    cfg.work_dir = work_dir
    cfg.train_dataloader.num_workers = 0
    cfg.train_dataloader.persistent_workers = False
    cfg.val_dataloader.num_workers = 0
    cfg.val_dataloader.persistent_workers = False
    cfg.val_dataloader.dataset.indices = 2
    cfg.default_hooks.visualization.draw = False
    return cfg


@pytest.mark.e2e
def test_cpu_amp_runs_the_forward_in_bfloat16(data_root, tmp_path):
    cfg = demo_cfg(data_root, str(tmp_path))
    configure_amp(cfg, enable=True)
    assert cfg.optim_wrapper.type == 'CPUAmpOptimWrapper'
    runner = Runner.from_cfg(cfg)
    dtypes = []
    runner.model.decode_head.conv_seg.register_forward_hook(
        lambda m, i, o: dtypes.append(o.dtype) if m.training else None)
    runner.train()
    assert dtypes and set(dtypes) == {torch.bfloat16}
    assert all(p.dtype == torch.float32 for p in runner.model.parameters())
    assert all(torch.isfinite(p).all() for p in runner.model.parameters())


def test_amp_wrapper_without_cuda_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)
    cfg = Config.fromfile(DEMO_CONFIG)
    cfg.optim_wrapper.type = 'AmpOptimWrapper'
    with pytest.raises(ValueError, match='CUDA is not available.*--amp'):
        configure_amp(cfg, enable=False)


def test_cpu_amp_rejects_float16():
    from cgrseg.engine import CPUAmpOptimWrapper
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.ones(1))], lr=0.1)
    with pytest.raises(ValueError, match='bfloat16 only'):
        CPUAmpOptimWrapper(optimizer=optimizer, dtype='float16')


def norm_types(node) -> list:
    """Every ``type`` of a ``norm_cfg`` in a (nested) model config."""
    if isinstance(node, dict):
        found = [node['norm_cfg']['type']] if isinstance(
            node.get('norm_cfg'), dict) else []
        return found + [t for v in node.values() for t in norm_types(v)]
    if isinstance(node, (list, tuple)):
        return [t for v in node for t in norm_types(v)]
    return []


@pytest.mark.parametrize('cuda,expected', [(False, 'BN'), (True, 'SyncBN')])
def test_sync_bn_becomes_bn_only_without_cuda(monkeypatch, cuda, expected):
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: cuda)
    cfg = Config.fromfile(DEMO_CONFIG.replace(
        'cgrseg_efficientformerv2-s1_1xb8-adamw-300iter_shapes-128x128',
        'cgrseg_efficientformerv2-s1_4xb4-adamw-160k_ade20k-512x512'))
    assert set(norm_types(cfg.model)) == {'SyncBN'}
    configure_sync_bn(cfg)
    types = norm_types(cfg.model)
    assert len(types) >= 2 and set(types) == {expected}


def test_unexpected_keyword_is_explained_only_for_a_config_entry():
    from mmengine.registry import init_default_scope
    from mmseg.registry import MODELS

    init_default_scope('mmseg')
    cfg = Config.fromfile(DEMO_CONFIG)
    cfg.model.backbone.archh = 's1'
    with pytest.raises(TypeError) as built:
        MODELS.build(cfg.model)
    assert unexpected_keyword_message(built.value, cfg) == (
        "EfficientFormerV2 has no parameter 'archh': check the config and "
        '--cfg-options for a mistyped key. EfficientFormerV2 takes: arch, '
        'out_indices, resolution, drop_path_rate, layer_scale_init, '
        'norm_cfg, act_cfg, norm_eval, init_cfg.')

    class Block:

        def __init__(self, width: int) -> None:
            pass

    with pytest.raises(TypeError) as called:
        Block(widht=3)  # a bug in code, not a config key
    assert 'unexpected keyword argument' in str(called.value)
    assert unexpected_keyword_message(called.value, cfg) is None


@pytest.mark.e2e
def test_injected_inf_loss_skips_the_step(data_root, tmp_path):
    """A non-finite loss never reaches the weights or the checkpoint."""
    cfg = demo_cfg(data_root, str(tmp_path), iters=3)
    runner = Runner.from_cfg(cfg)
    calls = []

    def poison_second_iteration(module, args, outputs):
        calls.append(1)
        if len(calls) != 2:
            return outputs
        return outputs[:-1] + (outputs[-1] * float('inf'), )

    runner.model.backbone.register_forward_hook(poison_second_iteration)
    snapshots = []
    runner.register_hook(_Snapshot(snapshots), priority='LOWEST')
    runner.train()
    assert runner.optim_wrapper.total_skips == 1
    after_1, after_2, after_3 = snapshots
    for key in after_1:  # the step was skipped, BN statistics restored
        assert torch.equal(after_1[key], after_2[key]), key
    assert any(not torch.equal(after_2[k], after_3[k]) for k in after_2)
    ckpt = torch.load(osp.join(tmp_path, 'iter_3.pth'), weights_only=True)
    assert all(torch.isfinite(v).all() for v in ckpt['state_dict'].values()
               if v.is_floating_point())


class _Snapshot:
    """Records parameters and buffers after every training iteration."""

    def __init__(self, snapshots):
        from mmengine.hooks import Hook
        self.__class__ = type('SnapshotHook', (Hook, ), {
            'after_train_iter': lambda hook, runner, **kw: snapshots.append({
                k: v.detach().clone()
                for k, v in runner.model.state_dict().items()
            })
        })


def test_consecutive_non_finite_steps_stop_training():
    from cgrseg.engine import NonFiniteSkipOptimWrapper
    param = torch.nn.Parameter(torch.ones(2))
    wrapper = NonFiniteSkipOptimWrapper(
        optimizer=torch.optim.SGD([param], lr=0.1), max_consecutive_skips=3)
    for _ in range(2):
        wrapper.update_params((param * float('nan')).sum())
    assert torch.equal(param.detach(), torch.ones(2))
    with pytest.raises(FloatingPointError, match='3 consecutive'):
        wrapper.update_params((param * float('nan')).sum())


def test_finite_checkpoint_hook_refuses_nan(tmp_path):
    from cgrseg.engine import FiniteCheckpointHook

    class FakeRunner:
        iter = 7
        work_dir = str(tmp_path)

    checkpoint = dict(state_dict={'w': torch.tensor([1.0, float('nan')])})
    with pytest.raises(FloatingPointError, match='after iteration 8.*w'):
        FiniteCheckpointHook().before_save_checkpoint(FakeRunner, checkpoint)


@pytest.mark.e2e
def test_num_classes_mismatch_is_a_clear_error(data_root, tmp_path):
    cfg = demo_cfg(data_root, str(tmp_path))
    cfg.model.decode_head.num_classes = 7
    with pytest.raises(ValueError, match='5 classes but model.decode_head'):
        Runner.from_cfg(cfg).train()


def test_label_outside_num_classes_names_the_file():
    from mmengine.structures import PixelData
    from mmseg.structures import SegDataSample
    sample = SegDataSample(metainfo=dict(seg_map_path='ann/0007.png'))
    sample.gt_sem_seg = PixelData(
        data=torch.tensor([[[0, 4, 255], [9, 1, 2]]]))
    check_label_range([sample], 10, 255)
    with pytest.raises(ValueError, match=r'ann/0007.png.*\[9\].*\[0, 4\]'):
        check_label_range([sample], 5, 255)


def test_unreadable_image_names_the_file(data_root, tmp_path):
    from mmseg.registry import DATASETS
    import shutil
    root = tmp_path / 'shapes'
    shutil.copytree(data_root, root)
    broken = root / 'img_dir' / 'val' / '0003.png'
    broken.write_bytes(b'not a png')
    cfg = Config.fromfile(DEMO_CONFIG)
    dataset_cfg = cfg.val_dataloader.dataset
    dataset_cfg.data_root = str(root)
    dataset = DATASETS.build(dataset_cfg)
    with pytest.raises(Exception, match='0003.png'):
        dataset[3]


def test_rng_state_round_trip_is_weights_only_loadable(tmp_path):
    import random
    import numpy as np
    state = capture_rng_state()
    torch.save(dict(rng_state=state), tmp_path / 'rng.pth')
    expected = (random.random(), np.random.rand(), torch.rand(1))
    restore_rng_state(
        torch.load(tmp_path / 'rng.pth', weights_only=True)['rng_state'])
    assert (random.random(), np.random.rand(), torch.rand(1)) == expected


def test_weights_only_loads_mmengine_message_hub_but_no_other_getattr(
        tmp_path):
    import io

    import numpy as np
    from mmengine.logging import HistoryBuffer, MessageHub
    hub = MessageHub('probe')
    hub.update_scalar('train/loss', np.float64(0.5))
    hub.update_scalar('train/lr', 1e-3)
    hub.update_info('iter', 3, resumed=True)
    path = tmp_path / 'hub.pth'
    torch.save(dict(message_hub=hub.state_dict(),
                    meta=dict(seed=np.int64(1))), path)
    loaded = torch.load(path, weights_only=True)
    assert loaded['message_hub']['log_scalars']['train/loss'].current() == \
        0.5

    class Sneaky:

        def __reduce__(self):
            return getattr, (HistoryBuffer, '__init__')

    buffer = io.BytesIO()
    torch.save({'x': Sneaky()}, buffer)
    buffer.seek(0)
    with pytest.raises(Exception, match='only HistoryBuffer statistics'):
        torch.load(buffer, weights_only=True)


def test_num_classes_check_sees_through_test_time_augmentation():
    """``tools/test.py --tta`` wraps the segmentor in a SegTTAModel (and
    DDP may wrap that): DatasetCheckHook still compares its head with the
    dataset's classes."""
    from types import SimpleNamespace

    from mmengine.model import MMDistributedDataParallel
    from mmseg.models import SegTTAModel

    from cgrseg.datasets import DatasetError
    from cgrseg.engine.hooks import DatasetCheckHook
    class Segmentor(torch.nn.Module):
        decode_head = SimpleNamespace(out_channels=7, num_classes=7)

        def test_step(self, data):  # what a TTA wrapper asks for
            return []

    tta = SegTTAModel(module=Segmentor())
    # DDP around it, without a process group: only .module is read.
    ddp = MMDistributedDataParallel.__new__(MMDistributedDataParallel)
    torch.nn.Module.__init__(ddp)
    ddp.module = tta
    dataset = SimpleNamespace(metainfo=dict(classes=tuple('abcde')))
    for model in (tta, ddp):
        runner = SimpleNamespace(model=model, test_loop=SimpleNamespace(
            dataloader=SimpleNamespace(dataset=dataset)))
        with pytest.raises(DatasetError, match='5 classes but model'):
            DatasetCheckHook(check_files=False).before_test(runner)


def test_leaf_datasets_of_a_config_and_of_built_datasets_agree():
    """The config checks and the file checks name one dataset by one key."""
    from types import SimpleNamespace

    from cgrseg.datasets.checks import leaf_datasets
    config = dict(type='ConcatDataset', datasets=[
        dict(type='RepeatDataset', times=2, dataset=dict(type='A')),
        dict(type='B')])
    built = SimpleNamespace(datasets=[
        SimpleNamespace(times=2, dataset=SimpleNamespace(type='A')),
        SimpleNamespace(type='B')])
    keys = ['train_dataloader.dataset.datasets.0.dataset',
            'train_dataloader.dataset.datasets.1']
    for dataset in (Config(dict(d=config)).d, built):
        leaves = list(leaf_datasets(dataset, 'train_dataloader.dataset'))
        assert [key for _, key in leaves] == keys
        assert [leaf.type if hasattr(leaf, 'type') else leaf['type']
                for leaf, _ in leaves] == ['A', 'B']
