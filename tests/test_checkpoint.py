"""Checkpoint formats and the errors for checkpoints that do not fit."""
import pytest
import torch

from cgrseg.models.backbones.efficientformer_v2_weights import \
    load_pretrained_backbone
from cgrseg.models.utils.checkpoint import (CheckpointError,
                                            describe_checkpoint,
                                            load_segmentor_checkpoint)
from reference import build_reference_model


@pytest.fixture(scope='module')
def model_t():
    return build_reference_model('t')[0]


def save(tmp_path, name, obj):
    path = tmp_path / name
    torch.save(obj, path)
    return str(path)


def test_0x_checkpoint_loads_strictly(tmp_path, model_t):
    state = model_t.state_dict()
    path = save(tmp_path, 'iter_160000.pth',
                dict(meta=dict(mmcv_version='1.6.1', iter=160000),
                     state_dict=state))
    model, _ = build_reference_model('t')
    for value in model.state_dict().values():
        if value.is_floating_point():
            value.zero_()
    load_segmentor_checkpoint(model, path)
    for key, value in model.state_dict().items():
        assert torch.equal(value, state[key]), key
    assert describe_checkpoint(torch.load(path)).startswith(
        'an mmseg 0.x (mmcv-runner) segmentor checkpoint, backbone '
        'EfficientFormerV2-s1 (CGRSeg-T), 150 classes')


def test_other_variant_checkpoint_names_keys_and_variant(tmp_path, model_t):
    model_b, _ = build_reference_model('b')
    path = save(tmp_path, 'b.pth', dict(state_dict=model_b.state_dict()))
    with pytest.raises(CheckpointError) as err:
        load_segmentor_checkpoint(model_t, path)
    text = str(err.value)
    assert 'EfficientFormerV2-s2 (CGRSeg-B)' in text
    assert 'shape mismatch' in text
    assert 'unexpected in checkpoint' in text  # B has more blocks


def test_missing_keys_are_listed(tmp_path, model_t):
    state = dict(model_t.state_dict())
    del state['decode_head.lgc.conv_mask.weight']
    state['decode_head.extra.weight'] = torch.zeros(1)
    path = save(tmp_path, 'partial.pth', dict(state_dict=state))
    with pytest.raises(CheckpointError) as err:
        load_segmentor_checkpoint(model_t, path)
    text = str(err.value)
    assert 'missing in checkpoint (1):\n    decode_head.lgc.conv_mask.weight' \
        in text
    assert 'unexpected in checkpoint (1):\n    decode_head.extra.weight' in text


def test_imagenet_checkpoint_given_as_segmentor(tmp_path, model_t):
    backbone = {k[len('backbone.'):]: v for k, v in
                model_t.state_dict().items() if k.startswith('backbone.')}
    backbone['head.weight'] = torch.zeros(1000, 224)
    path = save(tmp_path, 'eformer_s1_450.pth', dict(model=backbone))
    with pytest.raises(CheckpointError, match=r"(?s)EfficientFormerV2 "
                       r"ImageNet checkpoint.*init_cfg=dict\(type='Pretrained'"):
        load_segmentor_checkpoint(model_t, path)


def test_timm_checkpoint_is_recognised(tmp_path, model_t):
    path = save(tmp_path, 'timm.pth',
                {'stem.conv1.conv.weight': torch.zeros(16, 3, 3, 3),
                 'stages.0.blocks.0.mlp.fc1.conv.weight': torch.zeros(1)})
    with pytest.raises(CheckpointError, match='timm EfficientFormerV2'):
        load_segmentor_checkpoint(model_t, path)


def test_missing_and_corrupt_files(tmp_path, model_t):
    with pytest.raises(FileNotFoundError, match='nope.pth'):
        load_segmentor_checkpoint(model_t, str(tmp_path / 'nope.pth'))
    good = save(tmp_path, 'good.pth', dict(state_dict=model_t.state_dict()))
    corrupt = tmp_path / 'corrupt.pth'
    corrupt.write_bytes(open(good, 'rb').read()[:1000])
    with pytest.raises(CheckpointError, match='truncated, corrupt'):
        load_segmentor_checkpoint(model_t, str(corrupt))


def test_pretrained_imagenet_backbone(tmp_path, model_t):
    source = {k[len('backbone.'):]: v for k, v in
              model_t.state_dict().items() if k.startswith('backbone.')
              and not k.endswith('_seg')}
    source['head.weight'] = torch.zeros(1000, 224)
    source['dist_head.weight'] = torch.zeros(1000, 224)
    source['norm.weight'] = torch.zeros(224)
    path = save(tmp_path, 'eformer_s1_450.pth', dict(model=source))
    model, _ = build_reference_model('t')
    backbone = model.backbone
    with torch.no_grad():
        for p in backbone.parameters():
            p.zero_()
    load_pretrained_backbone(backbone, path)
    for key, value in source.items():
        if key in backbone.state_dict():
            assert torch.equal(backbone.state_dict()[key], value)
    assert backbone.network[6][4].token_mixer.attention_biases_seg.eq(0).all()


def test_pretrained_missing_file_names_the_fix(tmp_path, model_t):
    with pytest.raises(FileNotFoundError, match=r'(?s)eformer_s1_450.pth.*'
                       r'init_cfg=None'):
        load_pretrained_backbone(model_t.backbone,
                                 str(tmp_path / 'eformer_s1_450.pth'))


def test_pretrained_wrong_arch(tmp_path):
    model_b, _ = build_reference_model('b')
    source = {k[len('backbone.'):]: v for k, v in
              model_b.state_dict().items() if k.startswith('backbone.')}
    path = save(tmp_path, 'eformer_s2_450.pth', dict(model=source))
    model_t, _ = build_reference_model('t')
    with pytest.raises(CheckpointError, match=r'(?s)s2 \(CGRSeg-B\).*'
                       r'EfficientFormerV2-s1.*arch'):
        load_pretrained_backbone(model_t.backbone, path)


def test_other_timm_models_are_not_taken_for_efficientformerv2(tmp_path):
    """timm's ConvNeXt also has stem.* and stages.* keys."""
    from cgrseg.models.backbones import EfficientFormerV2
    convnext = {'stem.0.weight': torch.zeros(96, 3, 4, 4),
                'stages.0.blocks.0.conv_dw.weight': torch.zeros(96, 1, 7, 7),
                'head.fc.weight': torch.zeros(1000, 768)}
    assert describe_checkpoint(convnext) == 'a checkpoint of unknown format'
    path = save(tmp_path, 'convnext.pth', convnext)
    with pytest.raises(CheckpointError,
                       match='looks like a checkpoint of unknown format'):
        load_pretrained_backbone(EfficientFormerV2(arch='s1'), path)
