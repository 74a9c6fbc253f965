"""EfficientFormerV2: construction, shapes for any input size, and the
original's quirks that the port fixes (Q4 stale bias cache, Q6 odd sizes)."""
import pytest
import torch
from mmseg.registry import MODELS

import cgrseg  # noqa: F401
from cgrseg.models.backbones.bicubic_taps import resize_along
from cgrseg.models.backbones.blockwise_attention import ResizedBias
from cgrseg.models.backbones.efficientformer_v2 import (
    ARCH_SETTINGS, Attention4D, relative_offset_index)
from reference import build_reference_model


def full_bias(bias: ResizedBias) -> torch.Tensor:
    """All (heads, Nq, Nk) rows of a resized bias at once (the model only
    ever takes blocks of them)."""
    if bias.row_taps is None:
        return bias.columns
    return resize_along(bias.columns, bias.row_taps, 1)


def make_backbone(**kwargs):
    torch.manual_seed(0)
    return MODELS.build(dict(type='EfficientFormerV2', **kwargs))


@pytest.mark.parametrize('arch', sorted(ARCH_SETTINGS))
def test_arch_widths_and_strides(arch):
    backbone = make_backbone(arch=arch).eval()
    with torch.no_grad():
        outs = backbone(torch.randn(1, 3, 128, 96))
    widths = ARCH_SETTINGS[arch]['widths']
    assert [o.shape[1] for o in outs] == list(widths)
    assert [tuple(o.shape[-2:]) for o in outs] == [
        (32, 24), (16, 12), (8, 6), (4, 3)]


def test_out_indices_and_drop_path_defaults():
    backbone = make_backbone(arch='l', out_indices=(1, 3))
    with torch.no_grad():
        outs = backbone.eval()(torch.randn(1, 3, 64, 64))
    assert [o.shape[1] for o in outs] == [80, 384]
    rates = [m.drop_prob for m in backbone.modules()
             if type(m).__name__ == 'DropPath']
    assert len(rates) == 34 and max(rates) == pytest.approx(0.1)
    assert not [m for m in make_backbone(arch='s1').modules()
                if type(m).__name__ == 'DropPath']


def test_unknown_arch_is_a_clear_error():
    with pytest.raises(ValueError, match=r"unknown arch 'xl'.*'s1'"):
        make_backbone(arch='xl')
    with pytest.raises(ValueError, match='out_indices'):
        make_backbone(out_indices=(4, ))


@pytest.mark.parametrize('shape', [(2, 3, 64), (1, 1, 64, 64), (1, 4, 64, 64)])
def test_bad_input_is_a_clear_error(shape):
    with pytest.raises(ValueError, match=r'\(B, 3, H, W\)'):
        make_backbone()(torch.randn(*shape))


def test_relative_offset_index_counts():
    index, count = relative_offset_index(16, 16, 1)
    assert index.shape == (256, 256) and count == 256
    assert index[0, 0] == 0 and index.max() == 255
    index, count = relative_offset_index(16, 32, 2)
    assert index.shape == (256, 1024) and count == 1024


def test_weights_loaded_after_eval_take_effect():
    """Q4: the original cached the gathered biases at .eval() time."""
    model, _ = build_reference_model('t')
    model.eval()
    x = torch.randn(1, 3, 128, 128)
    with torch.no_grad():
        before = model.backbone(x)[-1]
        state = model.state_dict()
        for key in state:
            if key.endswith('attention_biases_seg'):
                state[key] = torch.zeros_like(state[key])
        model.load_state_dict(state)
        after = model.backbone(x)[-1]
    assert (before - after).abs().max() > 1e-3


def test_train_mode_uses_the_same_biases_as_eval():
    block = Attention4D(dim=16, resolution=8, key_dim=4, num_heads=2)
    with torch.no_grad():
        block.attention_biases_seg.normal_()
    bias_eval = full_bias(block.eval().attention_bias(64, 64))
    bias_train = full_bias(block.train().attention_bias(64, 64))
    assert torch.equal(bias_eval, bias_train)


@pytest.mark.parametrize('size', [
    pytest.param((512, 528), marks=pytest.mark.e2e),
    pytest.param((528, 512), marks=pytest.mark.e2e), (272, 208)])
def test_odd_stride16_maps_work(size):
    """Q6: sizes whose stride-16 map has an odd side crashed the original."""
    model, _ = build_reference_model('t')
    model.eval()
    x = torch.randn(1, 3, *size)
    with torch.no_grad():
        feats = model.extract_feat(x)
        logits = model.decode_head(feats)
    h16, w16 = -(-size[0] // 16), -(-size[1] // 16)
    assert tuple(feats[2].shape[-2:]) == (h16, w16)
    assert tuple(feats[3].shape[-2:]) == (-(-h16 // 2), -(-w16 // 2))
    assert tuple(logits.shape[-2:]) == (-(-size[0] // 8), -(-size[1] // 8))
    assert torch.isfinite(logits).all()


def test_odd_size_result_is_consistent_with_neighbouring_even_sizes():
    """A 512x528 crop (odd stride-16 map) of a smooth image gives logits at
    least as close to its neighbours 512x512 and 512x544 (both valid in the
    original) as those two are to each other: the odd-size path is no less
    consistent than the original's own behaviour across sizes."""
    model, _ = build_reference_model('t')
    model.eval()
    torch.manual_seed(0)
    image = torch.nn.functional.interpolate(
        torch.randn(1, 3, 9, 9), size=(512, 544), mode='bicubic',
        align_corners=True)
    with torch.no_grad():
        logits = {w: model.decode_head(model.extract_feat(image[..., :w]))
                  for w in (512, 528, 544)}

    def corr(a, b):
        n = min(logits[a].shape[-1], logits[b].shape[-1])
        pair = torch.stack([logits[a][..., :n].flatten(),
                            logits[b][..., :n].flatten()])
        return torch.corrcoef(pair)[0, 1].item()

    baseline = corr(512, 544)
    assert baseline > 0.95
    assert corr(528, 512) >= baseline and corr(528, 544) >= baseline


def test_even_sizes_unchanged_by_the_odd_size_fix(monkeypatch):
    """For even maps, the stride-2 attention's upsampling to the exact input
    size equals the original's nn.Upsample(scale_factor=2) bit for bit."""
    block = Attention4D(dim=16, resolution=8, stride=2, key_dim=4,
                        num_heads=2).eval()
    interpolate, upsampled = torch.nn.functional.interpolate, []

    def spy(x, *args, **kwargs):
        out = interpolate(x, *args, **kwargs)
        if kwargs.get('mode') == 'bilinear':
            upsampled.append((x, out))
        return out

    monkeypatch.setattr(torch.nn.functional, 'interpolate', spy)
    with torch.no_grad():
        block(torch.randn(2, 16, 8, 12))
    [(small, out)] = upsampled
    assert tuple(small.shape[-2:]) == (4, 6)
    original = torch.nn.Upsample(scale_factor=2, mode='bilinear')(small)
    assert torch.equal(out, original)


def test_norm_eval_freezes_backbone_bn():
    backbone = make_backbone(norm_eval=True).train()
    bns = [m for m in backbone.modules()
           if isinstance(m, torch.nn.BatchNorm2d)]
    assert bns and not any(m.training for m in bns)
    backbone = make_backbone(norm_eval=False).train()
    assert all(m.training for m in backbone.modules()
               if isinstance(m, torch.nn.BatchNorm2d))


def test_norm_cfg_is_used_everywhere():
    def norms(backbone) -> list:
        return [type(m).__name__ for m in backbone.modules()
                if 'Norm' in type(m).__name__]

    synced = norms(make_backbone(norm_cfg=dict(type='SyncBN')))
    assert set(synced) == {'SyncBatchNorm'}
    assert len(synced) == len(norms(make_backbone()))  # each norm follows


def test_resolution_mismatch_is_a_clear_error():
    checkpoint = make_backbone(resolution=256).state_dict()
    backbone = make_backbone(resolution=512)
    with pytest.raises(ValueError, match=r'attention_biases_seg.*resolution'):
        backbone.load_state_dict(checkpoint)


def test_inference_bias_cache_follows_every_weight_change():
    """The no-grad bias cache is invalidated by in-place updates, loading
    and new storage, and is bypassed when autograd is on."""
    block = Attention4D(dim=16, resolution=8, key_dim=4, num_heads=2).eval()
    with torch.no_grad():
        first = block.attention_bias(64, 64)
        assert block.attention_bias(64, 64) is first  # cached
        block.attention_biases_seg.add_(1.0)  # e.g. an optimizer step
        assert torch.equal(
            full_bias(block.attention_bias(64, 64)), full_bias(first) + 1)
        state = block.state_dict()
        state['attention_biases_seg'] = torch.randn_like(
            state['attention_biases_seg'])
        block.load_state_dict(state)
        expected = state['attention_biases_seg'][:, block.
                                                 attention_bias_idxs_seg]
        assert torch.equal(full_bias(block.attention_bias(64, 64)), expected)
        resized = block.attention_bias(16, 16)  # other size: new entry
        assert full_bias(resized).shape == (2, 16, 16)
    bias = block.attention_bias(64, 64)
    assert bias.columns.requires_grad  # with autograd: computed, not cached


def test_inference_on_an_accelerator_never_reads_the_table_back():
    """Comparing the table's values (the CPU cache's key) would make each
    attention wait for the device. On 'meta' (an accelerator stand-in
    whose tensors hold no values: a read-back fails) an eval forward runs,
    twice, with the taps cached per size."""
    model = make_backbone(arch='s1').eval().to('meta')
    x = torch.empty(1, 3, 160, 224, device='meta')
    with torch.no_grad():
        for _ in range(2):
            outs = model(x)
    assert outs[-1].shape == (1, 224, 5, 7)
    assert all(m._bias_cache is None for m in model.modules()
               if hasattr(m, '_bias_cache'))


def randomise_bias_tables(model: torch.nn.Module, seed: int) -> None:
    """Normal random attention-bias tables (zero when built), in place
    through ``.data``."""
    torch.manual_seed(seed)
    for name, p in model.named_parameters():
        if name.endswith('attention_biases_seg'):
            p.data.normal_()


def test_accelerator_path_gives_the_cached_numbers(monkeypatch):
    """The bias resized at every call (the accelerator path, forced on the
    CPU) equals the CPU's cached one bit for bit, and follows a weight
    swap through ``.data``."""
    from cgrseg.models.backbones import efficientformer_v2
    model = make_backbone(arch='s1').eval()
    randomise_bias_tables(model, seed=2)
    x = torch.randn(1, 3, 160, 224)
    with torch.no_grad():
        cached = model(x)
        monkeypatch.setattr(efficientformer_v2, 'reads_back_cheaply',
                            lambda device: False)
        assert all(map(torch.equal, model(x), cached))
        for name, p in model.named_parameters():
            if name.endswith('attention_biases_seg'):
                p.data.copy_(p.data * 2)
        swapped = model(x)
    assert not torch.equal(swapped[-1], cached[-1])


def test_weights_swapped_in_through_data_take_effect():
    """MMEngine's EMAHook swaps the averaged weights in for validation with
    ``p.data.copy_()``, which changes neither the storage nor the version
    counter: the no-grad bias cache must follow it (issue 25)."""
    model, fresh = make_backbone(arch='s1').eval(), make_backbone(arch='s1')
    randomise_bias_tables(fresh, seed=1)
    x = torch.randn(1, 3, 160, 224)
    with torch.no_grad():
        model(x)  # fills the cache
        for p, new in zip(model.parameters(), fresh.parameters()):
            p.data.copy_(new.data)
        outs, expected = model(x), fresh.eval()(x)
    assert all(map(torch.equal, outs, expected))
