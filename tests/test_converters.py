"""Checkpoint converters: timm and original-release EfficientFormerV2
ImageNet weights, and 0.x CGRSeg checkpoints.

The synthetic checkpoints have deterministic weights and the real key names
and shapes of each format:

* original release (``eformer_*_450.pth``): ``{'model': ...}`` with our
  backbone's keys less the segmentation tables, the real
  ``attention_bias_idxs`` and the classifier (``norm``, ``head``,
  ``dist_head``), as in snap-research/EfficientFormer
  ``models/efficientformer_v2.py``;
* timm (``efficientformerv2_*.snap_dist_in1k``): :func:`original_to_timm`,
  written from the module structure of timm's
  ``timm/models/efficientformer_v2.py`` (huggingface/pytorch-image-models
  aa4b5850). Its output is checked against the keys and shapes of
  ``timm.create_model('efficientformerv2_<arch>').state_dict()``, timm
  1.0.31, recorded as digests in ``TIMM_STATE_DIGESTS``.

Keys and shapes cannot tell two same-shape tensors apart (e.g. two norms of
one MLP). The values can: tests/data/timm_efficientformerv2_s0.pt holds what
timm's own EfficientFormerV2-S0 (timm 0.9.0) computed on fixed weights,
written by tests/data/make_timm_fixture.py.
"""
import hashlib
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import safetensors.torch
import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope
from mmseg.registry import MODELS

from cgrseg.models.backbones import EfficientFormerV2
from cgrseg.models.backbones.efficientformer_v2 import relative_offset_index
from cgrseg.models.backbones.efficientformer_v2_weights import \
    convert_timm_efficientformerv2
from cgrseg.models.utils.checkpoint import (CheckpointError,
                                            load_segmentor_checkpoint,
                                            read_checkpoint)
from e2e import load_script
from reference import (CONFIGS, REPO_ROOT, build_reference_model,
                       rule_tensor, timm_fixture_state_dict)

CONVERTERS = REPO_ROOT / 'tools' / 'model_converters'
TIMM_OUTPUTS = Path(__file__).parent / 'data' / 'timm_efficientformerv2_s0.pt'

# (number of entries, sha256 of the sorted "key<TAB>shape" lines)[:16] of
# timm 1.0.31's efficientformerv2_<arch>().state_dict().
TIMM_STATE_DIGESTS = {
    's0': (568, '55dd36669be9c277'),
    's1': (722, '183eb392f1d8f3f8'),
    's2': (1054, 'bb36d625f6b8fcd6'),
    'l': (1386, '04f17550a15c05d2'),
}

# Original release name -> timm name, applied in order, each at most once.
TIMM_RENAMES = [
    (r'^patch_embed\.0\.', 'stem.conv1.conv.'),
    (r'^patch_embed\.1\.', 'stem.conv1.bn.'),
    (r'^patch_embed\.3\.', 'stem.conv2.conv.'),
    (r'^patch_embed\.4\.', 'stem.conv2.bn.'),
    (r'^network\.(\d+)\.(\d+)\.',
     lambda m: f'stages.{int(m[1]) // 2}.blocks.{m[2]}.'),
    (r'^network\.(\d+)\.(proj|conv)\.',
     lambda m: f'stages.{(int(m[1]) + 1) // 2}.downsample.conv.conv.'),
    (r'^network\.(\d+)\.(norm|bn)\.',
     lambda m: f'stages.{(int(m[1]) + 1) // 2}.downsample.conv.bn.'),
    (r'^network\.(\d+)\.attn\.',
     lambda m: f'stages.{(int(m[1]) + 1) // 2}.downsample.attn.'),
    (r'\.mlp\.fc1\.', '.mlp.fc1.conv.'),
    (r'\.mlp\.norm1\.', '.mlp.fc1.bn.'),
    (r'\.mlp\.mid\.', '.mlp.mid.conv.'),
    (r'\.mlp\.mid_norm\.', '.mlp.mid.bn.'),
    (r'\.mlp\.fc2\.', '.mlp.fc2.conv.'),
    (r'\.mlp\.norm2\.', '.mlp.fc2.bn.'),
    (r'\.layer_scale_([12])$', r'.ls\1.gamma'),
    (r'\.q\.local\.0\.', '.q.local.'),
    (r'\.q\.proj\.0\.', '.q.proj.conv.'),
    (r'\.q\.proj\.1\.', '.q.proj.bn.'),
    (r'\.(q|k|v|v_local|stride_conv)\.0\.', r'.\1.conv.'),
    (r'\.(q|k|v|v_local|stride_conv)\.1\.', r'.\1.bn.'),
    (r'\.proj\.1\.', '.proj.conv.'),
    (r'\.proj\.2\.', '.proj.bn.'),
    (r'^dist_head\.', 'head_dist.'),
]


def original_to_timm(state_dict: dict) -> dict:
    """timm's state dict for original-release weights: renamed keys, layer
    scales of shape (C,), no ``attention_bias_idxs`` (non-persistent in
    timm)."""
    out = {}
    for key, value in state_dict.items():
        if key.endswith('attention_bias_idxs'):
            continue
        for pattern, replacement in TIMM_RENAMES:
            key = re.sub(pattern, replacement, key, count=1)
        out[key] = value.flatten() if key.endswith('.gamma') else value
    return out


def deterministic_backbone(arch: str) -> EfficientFormerV2:
    """An eval-mode backbone with the fixtures' weight rule and zero
    segmentation bias tables (what ImageNet initialisation leaves)."""
    backbone = EfficientFormerV2(arch=arch)
    state = {
        k: (rule_tensor(f'backbone.{k}', v.shape)
            if v.is_floating_point() else v)
        for k, v in backbone.state_dict().items()
    }
    for key in state:
        if key.endswith('attention_biases_seg'):
            state[key] = torch.zeros_like(state[key])
    backbone.load_state_dict(state)
    return backbone.eval()


def original_release(backbone: EfficientFormerV2) -> dict:
    """The backbone's weights as an original ImageNet release state dict."""
    state = {}
    for key, value in backbone.state_dict().items():
        if key.endswith('_seg'):
            continue
        if key.endswith('attention_bias_idxs'):
            # The release holds the real tables, not our all-ones buffers.
            queries, keys = value.shape
            query_side, key_side = int(queries**0.5), int(keys**0.5)
            value = relative_offset_index(query_side, key_side,
                                          key_side // query_side)[0]
        state[key] = value
    width = backbone.embed_dims[-1]
    norm = torch.nn.BatchNorm2d(width).state_dict()
    state.update({f'norm.{k}': v for k, v in norm.items()})
    for name in ('head', 'dist_head'):
        state[f'{name}.weight'] = rule_tensor(name, (1000, width))
        state[f'{name}.bias'] = rule_tensor(f'{name}.bias', (1000, ))
    return state


@pytest.fixture(scope='module')
def source():
    backbone = deterministic_backbone('s1')
    inputs = torch.randn(
        1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    return backbone, inputs


def features_of(backbone: torch.nn.Module, inputs: torch.Tensor) -> tuple:
    """The backbone's outputs, computed where they are compared: with the
    test's thread count (a module fixture runs before conftest pins it, and
    another thread count sums in another order)."""
    with torch.no_grad():
        return backbone.eval()(inputs)


def save(tmp_path, name, obj) -> str:
    path = tmp_path / name
    torch.save(obj, path)
    return str(path)


def load_tool(name: str):
    return load_script(f'tools/model_converters/{name}.py')


def assert_same_state(actual: dict, expected: dict) -> None:
    assert sorted(actual) == sorted(expected)
    for key, value in expected.items():
        assert actual[key].dtype == value.dtype, key
        assert torch.equal(actual[key], value), key


@pytest.mark.parametrize('arch', ['s0', 's1', 's2', 'l'])
def test_timm_format_has_timms_real_keys_and_shapes(arch):
    timm = original_to_timm(original_release(EfficientFormerV2(arch=arch)))
    lines = sorted(f'{k}\t{tuple(v.shape)}' for k, v in timm.items())
    digest = hashlib.sha256('\n'.join(lines).encode()).hexdigest()[:16]
    assert (len(lines), digest) == TIMM_STATE_DIGESTS[arch]


def test_timm_format_spot_checks(source):
    timm = original_to_timm(original_release(source[0]))
    expected = {
        'stem.conv1.conv.weight': (16, 3, 3, 3),
        'stem.conv2.bn.running_var': (32, ),
        'stages.0.blocks.0.mlp.mid.bn.weight': (128, ),
        'stages.0.blocks.2.ls2.gamma': (32, ),
        'stages.1.downsample.conv.conv.weight': (48, 32, 3, 3),
        'stages.2.blocks.7.token_mixer.stride_conv.conv.weight':
        (120, 1, 3, 3),
        'stages.2.blocks.8.token_mixer.attention_biases': (8, 49),
        'stages.2.blocks.8.token_mixer.proj.conv.weight': (120, 1024, 1, 1),
        'stages.2.blocks.8.ls1.gamma': (120, ),
        'stages.3.downsample.attn.q.local.weight': (120, 1, 3, 3),
        'stages.3.downsample.attn.q.proj.bn.bias': (128, ),
        'stages.3.downsample.attn.attention_biases': (8, 196),
        'stages.3.downsample.conv.bn.weight': (224, ),
        'stages.3.blocks.5.token_mixer.talking_head2.weight': (8, 8, 1, 1),
        'norm.running_mean': (224, ),
        'head_dist.weight': (1000, 224),
    }
    assert {k: tuple(timm[k].shape) for k in expected} == expected
    assert not any('attention_bias_idxs' in k for k in timm)


def test_timm_checkpoint_gives_timms_own_stage_outputs(tmp_path):
    """timm-format weights loaded through the converter (``init_cfg``) give
    the 4 stage outputs that timm 0.9.0's EfficientFormerV2-S0 computed on
    the same weights. The port matches to 5e-7 relative (float noise); a
    mapping that swaps two same-shape tensors is off by far more than the
    1e-5 tolerance."""
    ref = torch.load(TIMM_OUTPUTS, weights_only=True)
    path = save(tmp_path, 'pytorch_model.bin',
                timm_fixture_state_dict(ref['entries']))
    backbone = EfficientFormerV2(
        arch=ref['arch'], init_cfg=dict(type='Pretrained', checkpoint=path))
    backbone.init_weights()
    inputs = torch.randn(
        ref['input']['shape'],
        generator=torch.Generator().manual_seed(ref['input']['seed']))
    assert torch.equal(inputs.flatten()[:8], ref['input']['first8'])
    with torch.no_grad():
        outputs = backbone.eval()(inputs)
    assert len(outputs) == len(ref['stages']) == 4
    for stage, (out, expected) in enumerate(zip(outputs, ref['stages'])):
        assert tuple(out.shape) == expected['shape'], stage
        step = expected['step']
        for actual, wanted in ((out[:, :, ::step, ::step], expected['sub']),
                               (out.mean((2, 3)), expected['channel_mean'])):
            error = (actual - wanted).abs().max() / wanted.abs().max()
            assert error < 1e-5, stage


@pytest.mark.parametrize('arch', ['s1', 's2'])
def test_timm_conversion_inverts_exactly(arch):
    original = original_release(deterministic_backbone(arch))
    converted = convert_timm_efficientformerv2(original_to_timm(original))
    assert_same_state(converted, original)


@pytest.mark.parametrize('fmt', ['original', 'timm'])
def test_init_cfg_from_imagenet_format_gives_identical_features(
        tmp_path, source, fmt):
    backbone, inputs = source
    features = features_of(backbone, inputs)
    weights = original_release(backbone)
    if fmt == 'original':
        path = save(tmp_path, 'eformer_s1_450.pth', {'model': weights})
    else:
        path = save(tmp_path, 'pytorch_model.bin', original_to_timm(weights))
    init_default_scope('mmseg')
    model = MODELS.build(
        dict(
            type='EfficientFormerV2',
            arch='s1',
            init_cfg=dict(type='Pretrained', checkpoint=path)))
    model.init_weights()
    model.eval()
    with torch.no_grad():
        actual = model(inputs)
    for got, expected in zip(actual, features):
        assert torch.equal(got, expected)


def test_unknown_timm_keys_are_listed(tmp_path, source):
    timm = original_to_timm(original_release(source[0]))
    timm['stages.2.blocks.0.mlp.extra.conv.weight'] = torch.zeros(1)
    timm['stages.0.downsample.conv.conv.weight'] = torch.zeros(1)
    with pytest.raises(CheckpointError) as err:
        convert_timm_efficientformerv2(timm)
    assert 'unknown keys (2):' in str(err.value)
    assert 'stages.2.blocks.0.mlp.extra.conv.weight' in str(err.value)
    assert 'stages.0.downsample.conv.conv.weight' in str(err.value)
    path = save(tmp_path, 'timm.pth', timm)
    backbone = EfficientFormerV2(arch='s1', init_cfg=dict(
        type='Pretrained', checkpoint=path))
    with pytest.raises(CheckpointError, match=r'(?s)timm\.pth.*extra'):
        backbone.init_weights()


def test_backbone_converter_tool(tmp_path, source):
    backbone, _ = source
    weights = original_release(backbone)
    src = save(tmp_path, 'pytorch_model.bin', original_to_timm(weights))
    dst = str(tmp_path / 'out' / 'eformer_s1_backbone.pth')
    load_tool('efficientformerv2_to_backbone').main([src, dst])
    written = torch.load(dst, weights_only=True)
    assert written['meta']['arch'] == 's1'
    classifier = ('norm.', 'head.', 'dist_head.')
    assert_same_state(
        written['state_dict'],
        {k: v for k, v in weights.items() if not k.startswith(classifier)})


def test_backbone_converter_refuses_wrong_weights(tmp_path, source):
    weights = original_release(source[0])
    del weights['network.6.5.mlp.fc2.weight']
    weights['network.6.6.mlp.fc2.weight'] = torch.zeros(1)
    src = save(tmp_path, 'eformer_s1_450.pth', {'model': weights})
    with pytest.raises(CheckpointError,
                       match=r'(?s)missing in checkpoint \(1\).*'
                       r'network\.6\.5\.mlp\.fc2\.weight.*'
                       r'unexpected in checkpoint \(1\).*'
                       r'network\.6\.6\.mlp\.fc2\.weight'):
        load_tool('efficientformerv2_to_backbone').main(
            [src, str(tmp_path / 'out.pth')])


def test_safetensors_timm_checkpoint(tmp_path, source):
    backbone, inputs = source
    features = features_of(backbone, inputs)
    path = str(tmp_path / 'model.safetensors')
    safetensors.torch.save_file(
        original_to_timm(original_release(backbone)), path)
    model = EfficientFormerV2(arch='s1', init_cfg=dict(
        type='Pretrained', checkpoint=path))
    model.init_weights()
    with torch.no_grad():
        assert torch.equal(model.eval()(inputs)[-1], features[-1])


def test_missing_imagenet_file_names_path_and_download(tmp_path):
    path = str(tmp_path / 'checkpoint' / 'eformer_l_450.pth')
    backbone = EfficientFormerV2(arch='l', init_cfg=dict(
        type='Pretrained', checkpoint=path))
    with pytest.raises(FileNotFoundError, match=r'(?s)checkpoint/eformer_l_'
                       r'450\.pth.*does not exist.*by URL.*snap_dist_in1k'):
        backbone.init_weights()


class Opaque:
    """An arbitrary Python object that weights_only loading must refuse."""


@pytest.fixture(scope='module')
def model_t():
    return build_reference_model('t')[0]


def original_0x_checkpoint(model, **meta_extra) -> dict:
    """What mmcv 1.x's runner wrote for the original code (DDP-wrapped
    names included, to check the prefix is removed)."""
    from mmseg.datasets import ADE20KDataset
    classes = ADE20KDataset.METAINFO['classes']
    palette = ADE20KDataset.METAINFO['palette']
    meta = dict(
        mmcv_version='1.6.1',
        mmseg_version='0.27.0+b6c70fa',
        config='norm_cfg = dict(type=\'SyncBN\', requires_grad=True)\n...',
        env_info='sys.platform: linux',
        seed=0,
        exp_name='cgrseg-t_ade20k_160k.py',
        CLASSES=tuple(classes),
        PALETTE=[list(c) for c in palette],
        epoch=1,
        iter=160000,
        time='Sat Jan 6 12:00:00 2024',
        hook_msgs=dict(last_ckpt='work_dirs/iter_160000.pth'))
    meta.update(meta_extra)
    state = {f'module.{k}': v for k, v in model.state_dict().items()}
    first = next(iter(state.values()))
    optimizer = dict(
        state={0: dict(step=torch.tensor(160000.), exp_avg=first.clone())},
        param_groups=[dict(lr=0.0, betas=(0.9, 0.999), params=[0])])
    return dict(meta=meta, state_dict=state, optimizer=optimizer)


def test_0x_to_1x_round_trip(tmp_path, model_t):
    ckpt = original_0x_checkpoint(
        model_t,
        hook_msgs=dict(best_score=np.float64(0.436)),
        PALETTE=np.array([[120, 120, 120]] * 150, dtype=np.uint8))
    src = save(tmp_path, 'iter_160000.pth', ckpt)
    dst = str(tmp_path / 'cgrseg_t_1x.pth')
    load_tool('cgrseg_0x_to_1x').main([src, dst])

    converted = torch.load(dst, weights_only=True)
    assert sorted(converted) == ['meta', 'state_dict']
    assert_same_state(converted['state_dict'], model_t.state_dict())
    meta = converted['meta']
    assert meta['dataset_meta']['classes'] == ckpt['meta']['CLASSES']
    assert meta['dataset_meta']['palette'] == [[120, 120, 120]] * 150
    assert meta['converted_from'] == dict(
        file='iter_160000.pth', mmcv_version='1.6.1',
        mmseg_version='0.27.0+b6c70fa', iter=160000, epoch=1,
        time='Sat Jan 6 12:00:00 2024')

    model, _ = build_reference_model('t')
    with torch.no_grad():
        for value in model.state_dict().values():
            value.zero_()
    load_segmentor_checkpoint(model, dst)
    assert_same_state(model.state_dict(), model_t.state_dict())

    from mmseg.apis import init_model
    cfg = Config.fromfile(str(REPO_ROOT / CONFIGS['t']))
    cfg.model.backbone.init_cfg = None
    loaded = init_model(cfg, dst, device='cpu')
    assert_same_state(loaded.state_dict(), model_t.state_dict())
    assert loaded.dataset_meta['classes'] == ckpt['meta']['CLASSES']


def test_0x_conversion_lists_what_it_leaves_out(model_t):
    ckpt = original_0x_checkpoint(model_t)
    converted, left_out = load_tool('cgrseg_0x_to_1x').convert_cgrseg_0x(
        ckpt, 'iter_160000.pth')
    assert left_out == ['optimizer', 'meta.config', 'meta.env_info',
                        'meta.seed', 'meta.exp_name', 'meta.hook_msgs']
    assert not any(k.startswith('module.') for k in converted['state_dict'])


def test_0x_unsafe_objects_are_refused(tmp_path, model_t):
    ckpt = original_0x_checkpoint(model_t, hook_msgs=dict(x=Opaque()))
    path = save(tmp_path, 'unsafe.pth', ckpt)
    with pytest.raises(CheckpointError,
                       match=r'(?s)cannot be loaded safely.*Opaque'):
        read_checkpoint(path)


def test_0x_unknown_keys_are_listed(tmp_path, model_t):
    ckpt = original_0x_checkpoint(model_t)
    ckpt['state_dict']['module.decode_head.extra.weight'] = torch.zeros(1)
    src = save(tmp_path, 'extra.pth', ckpt)
    with pytest.raises(CheckpointError,
                       match=r'(?s)unexpected in checkpoint \(1\).*'
                       r'decode_head\.extra\.weight'):
        load_tool('cgrseg_0x_to_1x').main([src, str(tmp_path / 'out.pth')])


def test_0x_converter_refuses_other_checkpoints(tmp_path, model_t):
    convert_cgrseg_0x = load_tool('cgrseg_0x_to_1x').convert_cgrseg_0x
    with pytest.raises(CheckpointError, match='already an mmseg 1.x'):
        convert_cgrseg_0x(
            dict(meta=dict(mmengine_version='0.10.7'),
                 state_dict=model_t.state_dict()))
    with pytest.raises(CheckpointError, match='ImageNet checkpoint'):
        convert_cgrseg_0x(dict(model=original_release(model_t.backbone)))
    with pytest.raises(FileNotFoundError, match='nope.pth'):
        load_tool('cgrseg_0x_to_1x').main(
            [str(tmp_path / 'nope.pth'), str(tmp_path / 'out.pth')])


def test_converter_help():
    tools = sorted(CONVERTERS.glob('*.py'))
    assert {'cgrseg_0x_to_1x.py', 'efficientformerv2_to_backbone.py'} <= {
        t.name
        for t in tools
    }
    runs = [
        subprocess.Popen([sys.executable, str(t), '--help'],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True) for t in tools
    ]
    for run in runs:
        out, err = run.communicate(timeout=300)
        assert run.returncode == 0, err
        assert out.startswith('usage:') and 'src' in out and 'dst' in out
