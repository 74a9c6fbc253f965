"""CGRSegHead: norm config, inputs, and mmseg's BaseDecodeHead contract."""
import pytest
import torch
from mmengine.structures import PixelData
from mmseg.registry import MODELS
from mmseg.structures import SegDataSample

import cgrseg  # noqa: F401

HEAD = dict(
    type='CGRSegHead',
    in_channels=[48, 120, 224],
    in_index=[1, 2, 3],
    channels=32,
    num_classes=7,
    neck_depth=2)
FEATS = [(32, 64), (48, 32), (120, 16), (224, 8)]


def feats(batch=2, size=None):
    return [torch.randn(batch, c, s, s) for c, s in FEATS]


def test_output_stride_8_and_loss_predict():
    head = MODELS.build(HEAD)
    x = feats()
    assert head(x).shape == (2, 7, 32, 32)
    samples = []
    for _ in range(2):
        s = SegDataSample(metainfo=dict(img_shape=(256, 256)))
        s.gt_sem_seg = PixelData(data=torch.randint(0, 7, (1, 256, 256)))
        samples.append(s)
    losses = head.loss(x, samples, train_cfg={})
    assert set(losses) == {'loss_ce', 'acc_seg'}
    losses['loss_ce'].backward()
    logits = head.predict(x, [s.metainfo for s in samples], test_cfg={})
    assert logits.shape == (2, 7, 256, 256)


def test_norm_cfg_is_respected():
    """H1: the original hard-coded SyncBN in the fusion blocks."""
    head = MODELS.build(dict(HEAD, norm_cfg=dict(type='GN', num_groups=4)))
    norms = {n: type(m).__name__ for n, m in head.named_modules()
             if n.startswith(('SIM', 'linear_fuse')) and 'Norm' in
             type(m).__name__}
    assert norms and set(norms.values()) == {'GroupNorm'}
    block_norms = {type(m).__name__ for n, m in head.named_modules()
                   if n.startswith(('meta', 'trans')) and 'Norm' in
                   type(m).__name__}
    assert block_norms == {'BatchNorm2d'}
    head = MODELS.build(
        dict(HEAD, norm_cfg=dict(type='BN'),
             block_norm_cfg=dict(type='SyncBN')))
    assert {type(m).__name__ for n, m in head.named_modules()
            if n.startswith('meta') and 'Norm' in type(m).__name__} == \
        {'SyncBatchNorm'}


def test_wrong_channels_is_a_clear_error():
    head = MODELS.build(HEAD)
    bad = feats()
    bad[2] = torch.randn(2, 100, 16, 16)
    with pytest.raises(ValueError, match=r'level 1 .*120 channels'):
        head(bad)


def test_input_transform_is_fixed():
    with pytest.raises(ValueError, match='multiple_select'):
        MODELS.build(dict(HEAD, input_transform='resize_concat'))
