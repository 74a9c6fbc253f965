"""The EfficientFormerV2 attentions computed a block of query rows at a time
(projects/cgrseg/models/backbones/blockwise_attention.py) against the dense
computation of the original model, kept here as the reference: full
(B, heads, Nq, Nk) scores plus ``F.interpolate(bias, mode='bicubic')``.

Small channel counts, rule weights (tests/reference.py) and token grids large
enough for many blocks (and a ragged last one) with a resized bias; one
grid non-square and large, one whose image size is not a multiple of 32.
"""
import pytest
import torch
import torch.nn.functional as F

from cgrseg.models.backbones import blockwise_attention
from cgrseg.models.backbones import bicubic_taps
from cgrseg.models.backbones.bicubic_taps import cubic_taps, cubic_taps_shared
from cgrseg.models.backbones.efficientformer_v2 import (Attention4D,
                                                        Attention4DDownsample)
from reference import rule_weights

# Float noise of the blockwise path against the dense one is ~1e-7
# relative (the bicubic weights agree to 1 ulp; sums and the scale are
# rounded in another order); a bias row of the wrong block or a block
# boundary off by one moves the output by > 1e-2.
TOL = 1e-5


def rel_err(actual: torch.Tensor, expected: torch.Tensor) -> float:
    return ((actual - expected).abs().max() / expected.abs().max()).item()


def with_rule_weights(module: torch.nn.Module) -> torch.nn.Module:
    module.load_state_dict(rule_weights(module))
    return module.eval()


def dense_bias(module, num_queries: int, num_keys: int) -> torch.Tensor:
    bias = module.attention_biases_seg[:, module.attention_bias_idxs_seg]
    if bias.shape[-2:] != (num_queries, num_keys):
        bias = F.interpolate(
            bias.unsqueeze(0), size=(num_queries, num_keys), mode='bicubic')
    return bias


def dense_attention4d(m: Attention4D, x: torch.Tensor) -> torch.Tensor:
    """The original Attention4D.forward."""
    B, _, H, W = x.shape
    if m.stride_conv is not None:
        x = m.stride_conv(x)
    h, w = x.shape[-2:]
    n = h * w
    q = m.q(x).flatten(2).reshape(B, m.num_heads, -1, n).permute(0, 1, 3, 2)
    k = m.k(x).flatten(2).reshape(B, m.num_heads, -1, n)
    v = m.v(x)
    v_local = m.v_local(v)
    v = v.flatten(2).reshape(B, m.num_heads, -1, n).permute(0, 1, 3, 2)
    attn = (q @ k) * m.scale + dense_bias(m, n, n)
    attn = m.talking_head1(attn).softmax(dim=-1)
    attn = m.talking_head2(attn)
    out = (attn @ v).transpose(2, 3).reshape(B, m.dh, h, w) + v_local
    if m.stride_conv is not None:
        out = F.interpolate(out, size=(H, W), mode='bilinear')
    return m.proj(out)


def dense_downsample(m: Attention4DDownsample,
                     x: torch.Tensor) -> torch.Tensor:
    """The original Attention4DDownsample.forward."""
    B, _, H, W = x.shape
    q = m.q(x)
    h, w = q.shape[-2:]
    q = q.flatten(2).reshape(B, m.num_heads, -1, h * w).permute(0, 1, 3, 2)
    k = m.k(x).flatten(2).reshape(B, m.num_heads, -1, H * W)
    v = m.v(x)
    v_local = m.v_local(v)
    v = v.flatten(2).reshape(B, m.num_heads, -1, H * W).permute(0, 1, 3, 2)
    attn = ((q @ k) * m.scale + dense_bias(m, h * w, H * W)).softmax(dim=-1)
    out = (attn @ v).transpose(2, 3).reshape(B, m.dh, h, w) + v_local
    return m.proj(out)


def attention4d(stride=None):
    return with_rule_weights(
        Attention4D(dim=16, resolution=16, stride=stride, key_dim=8,
                    num_heads=4, attn_ratio=2))


def downsample():
    return with_rule_weights(
        Attention4DDownsample(dim=16, out_dim=24, resolution=16, key_dim=8,
                              num_heads=4, attn_ratio=4))


CASES = {
    # (module, dense reference, input (B, C, H, W))
    # a large non-square grid, upsampled bias: 2480 queries, 12 blocks
    'attention4d_40x62': (attention4d, dense_attention4d, (1, 16, 40, 62)),
    # stage-3 form (stride-2 conv first) on the map of a 296x424 image
    # (not a multiple of 32): 19x27 tokens, rows resized by 513/256
    'attention4d_stride2_37x53': (lambda: attention4d(2), dense_attention4d,
                                  (2, 16, 37, 53)),
    # queries 20x31 over keys 40x62: 620 rows in 4 blocks of 175, their
    # bias in the padding of q and k (v is 24 wider)
    'downsample_40x62': (downsample, dense_downsample, (1, 16, 40, 62)),
    # odd grid, batch 2: queries 19x27 over 37x53 keys
    'downsample_37x53': (downsample, dense_downsample, (2, 16, 37, 53)),
    # smaller than the table: the bias is shrunk, not enlarged, and passed
    # as a mask
    'downsample_11x7': (downsample, dense_downsample, (1, 16, 11, 7)),
}


@pytest.fixture
def small_blocks(monkeypatch):
    """~128 scores per head and key per block: many blocks, a ragged last."""
    monkeypatch.setattr(blockwise_attention, 'BLOCK_ELEMENTS', 1 << 17)


def test_cubic_taps_are_those_of_interpolate():
    """Each (in, out) pair's taps, as a (out, in) matrix, equals the one
    F.interpolate applies (read off by resizing the identity) to 1 ulp."""
    for in_size, out_size in [(256, 2048), (256, 51), (1024, 1190),
                              (256, 777), (7, 3), (5, 9), (16, 16)]:
        eye = torch.eye(in_size)[None, :, :, None]
        expected = F.interpolate(
            eye, size=(out_size, 1), mode='bicubic')[0, :, :, 0].T
        index, weight = cubic_taps(in_size, out_size)
        actual = torch.zeros(out_size, in_size).index_put_(
            (torch.arange(out_size)[:, None].expand(-1, 4), index), weight,
            accumulate=True)
        assert (actual - expected).abs().max() <= 2.5e-7, (in_size,
                                                          out_size)


def test_backbone_computes_each_resize_once(monkeypatch):
    """One forward computes the taps of each distinct (in, out) resize once,
    whichever attention asks, and each later forward anew: the demo
    backbone's attentions at 96x160 resize their rows and keys 2 ways
    (16 -> 15 tokens at stride 32, the downsample's keys 64 -> 60)."""
    from cgrseg.apis import init_segmentor
    from e2e import DEMO_CONFIG
    backbone = init_segmentor(DEMO_CONFIG).backbone
    computed = []
    compute = bicubic_taps.compute_cubic_taps

    def counting(in_size, out_size, device=None):
        computed.append((in_size, out_size))
        return compute(in_size, out_size, device)

    monkeypatch.setattr(bicubic_taps, 'compute_cubic_taps', counting)
    attentions = [m for m in backbone.modules() if hasattr(m, '_resize_bias')]
    x = torch.randn(1, 3, 96, 160)
    backbone(x)  # with autograd: no per-module cache
    assert len(attentions) == 5  # 10 resizes asked for
    assert sorted(computed) == [(16, 15), (64, 60)]
    backbone(x)
    assert len(computed) == 4


def test_symbolic_sizes_share_one_resize():
    """Traced for any size, two attentions whose token counts are the same
    expression get one set of taps (one ``arange`` in the graph)."""
    from torch.fx.experimental.proxy_tensor import make_fx

    def two_attentions(x):
        with cubic_taps_shared():
            rows = [cubic_taps(16, x.shape[0] * x.shape[1]) for _ in '12']
            other = cubic_taps(16, x.shape[0])
        return rows[0][1] + rows[1][1], other[1]

    graph = make_fx(two_attentions, tracing_mode='symbolic')(
        torch.zeros(5, 7)).graph
    aranges = [n for n in graph.nodes if 'arange' in str(n.target)]
    assert len(aranges) == 2


@pytest.mark.parametrize('case', list(CASES))
def test_blocks_match_dense_attention(case, small_blocks):
    build, dense, shape = CASES[case]
    module = build()
    x = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = dense(module, x)
        actual = module(x)
    assert actual.shape == expected.shape
    assert rel_err(actual, expected) < TOL


@pytest.mark.parametrize('case', ['attention4d_40x62', 'downsample_37x53'])
def test_traced_blocks_match_dense_attention(case, small_blocks,
                                             monkeypatch):
    """The scanned form that graphs with symbolic sizes get (padded last
    block, row taps in the scan), run eagerly."""
    build, dense, shape = CASES[case]
    module = build()
    monkeypatch.setattr(blockwise_attention, 'has_symbolic_size',
                        lambda *sizes: True)
    monkeypatch.setattr(blockwise_attention, 'TRACED_BLOCK_ROWS', 96)
    x = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = dense(module, x)
        actual = module(x)
    assert rel_err(actual, expected) < TOL


@pytest.mark.e2e  # Dynamo traces 4 blocks: ~1 min on the loaded 2 cores
def test_compiled_with_dynamic_shapes_matches_dense_attention(monkeypatch):
    """``torch.compile(dynamic=True)``: Dynamo hands the model plain ints,
    so the Python loop of blocks runs (specialised to the size), not the
    scan of symbolic sizes (the table in blockwise_attention.py). The
    'eager' backend: which path runs is Dynamo's decision, and Inductor's
    C++ compile would cost minutes here."""
    build, dense, shape = CASES['downsample_37x53']  # fused SDPA, 4 blocks
    module = build()
    scans = []
    scan_blocks = blockwise_attention._scan_blocks
    monkeypatch.setattr(blockwise_attention, '_scan_blocks',
                        lambda *args: scans.append(1) or scan_blocks(*args))
    x = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = dense(module, x)
        actual = torch.compile(module, dynamic=True, backend='eager')(x)
    assert rel_err(actual, expected) < TOL
    assert not scans


def test_gradients_match_dense_attention(small_blocks):
    """With autograd (training) the same blocks run: gradients of the
    input and of every weight, the bias table included, are those of the
    dense computation. (BNs in eval mode: a train-mode BN output's squared
    sum hardly depends on its input, and its gradients are noise.)"""
    module = attention4d(2)
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(1, 16, 37, 53, generator=generator)
    direction = torch.randn(1, 16, 37, 53, generator=generator)
    grads = []
    for forward in (dense_attention4d, type(module).__call__):
        module.zero_grad()
        x_grad = x.clone().requires_grad_()
        (forward(module, x_grad) * direction).sum().backward()
        grads.append([x_grad.grad] + [p.grad for p in module.parameters()])
    # Structurally zero gradients (k's biases: softmax ignores a shift of
    # a whole row of scores) are noise: measured against the largest.
    floor = 1e-3 * max(grad.abs().max() for grad in grads[0])
    for actual, expected in zip(*grads):
        scale = max(expected.abs().max(), floor)
        assert (actual - expected).abs().max() / scale < TOL
