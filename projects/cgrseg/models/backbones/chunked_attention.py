"""Exact attention with a bicubically resized bias, a block of queries at a
time, so that memory grows with the number of keys, not queries × keys.

EfficientFormerV2's attentions add a learned bias, gathered to
(heads, Nq_t, Nk_t) and resized bicubically to (heads, Nq, Nk), to the
(B, heads, Nq, Nk) scores; materialising both costs 537 MB each at the
attention downsample of a 1024×2048 image. ATen's bicubic kernel computes
every output as Σ_i wy_i · (Σ_j wx_j · table), the row taps outside the
column taps. So the table is resized along the keys once per input size
(:func:`resize_along`; (heads, Nq_t, Nk), small), and a block of query rows
needs only the band of its rows that its taps read, with the weights
``F.interpolate`` uses (:func:`cubic_taps`). The band joins the scores'
matmul ([q·scale | weights] · [k ; band], :func:`biased_scores`,
:func:`biased_sdpa`), so no bias tensor is built at all.

Blocks run in a Python loop on concrete sizes (eager, ``torch.compile``, a
fixed-size export) and as one ``torch.ops.higher_order.scan`` (an ONNX Scan,
rows resized by gathering their 4 taps, :func:`resize_along`) when the token
counts are symbolic (a dynamic-shape export), which cannot be unrolled.
See docs/porting.md Q22.
"""
import math
from typing import Callable, Optional, Tuple, Union

import torch
import torch.nn.functional as F
from torch._higher_order_ops.scan import scan

from ..utils.tracing import has_symbolic_size

# The bicubic convolution constant of PyTorch's (and OpenCV's) resize.
CUBIC_A = -0.75
# Scores per block and image (heads × rows × keys): 16 MiB in float32. At
# 1024×2048 (CGRSeg-T, 2 threads, the 2-vCPU machine of docs/deployment.md)
# blocks of 2^22 scores ran 12-18 % faster eagerly than 2^23 and 3 % faster
# in ONNX Runtime; 2^21 and 2^20 no faster than 2^22.
BLOCK_ELEMENTS = 1 << 22
# Query rows per block of a graph traced with symbolic sizes.
TRACED_BLOCK_ROWS = 128

CubicTaps = Tuple[torch.Tensor, torch.Tensor]


def _fma(a: torch.Tensor, b, c) -> torch.Tensor:
    """float32 a·b + c rounded once, as the fused multiply-adds that ATen's
    compiled resize kernels use (a float32 product is exact in float64)."""
    return (a.double() * b + c).float()


def _cubic_near(x: torch.Tensor) -> torch.Tensor:
    """Cubic convolution weight for |x| <= 1 (ATen's
    ``cubic_convolution1``: ((A + 2)·x - (A + 3))·x·x + 1)."""
    return _fma(_fma(x, CUBIC_A + 2, -(CUBIC_A + 3)) * x, x, 1)


def _cubic_far(x: torch.Tensor) -> torch.Tensor:
    """Cubic convolution weight for 1 < |x| < 2 (``cubic_convolution2``:
    ((A·x - 5A)·x + 8A)·x - 4A)."""
    return _fma(_fma(_fma(x, CUBIC_A, -5 * CUBIC_A), x, 8 * CUBIC_A), x,
                -4 * CUBIC_A)


def cubic_taps(in_size: int, out_size, device=None) -> CubicTaps:
    """Source indices and weights of ``F.interpolate(mode='bicubic',
    align_corners=False)`` along one axis resized from ``in_size`` to
    ``out_size`` (an int or a symbolic size).

    The float32 arithmetic of ATen's ``upsample_bicubic2d`` CPU kernel
    (scale = in/out, source = scale·(i + 0.5) - 0.5, its floor and fraction
    t, the 4 weights of t), with its multiply-adds fused as the compiler
    fuses them there (without, a source index such as 127.5 comes out as
    127.49999 and weights move by 1e-5), and the taps clamped to the border,
    as ATen clamps. The weights then match ATen's to 1 ulp.

    Returns:
        (index (out_size, 4) int64, weight (out_size, 4) float32)
    """
    f32 = torch.float32
    dst = torch.arange(out_size, dtype=f32, device=device)
    scale = (torch.full((), in_size, dtype=f32, device=device) /
             torch.full((), out_size, dtype=f32, device=device))
    src = _fma(scale, (dst + 0.5).double(), -0.5)
    index = src.floor().long().clamp(max=in_size - 1)
    t = (src - index.to(f32)).clamp(0, 1)
    weight = torch.stack(
        [_cubic_far(t + 1), _cubic_near(t),
         _cubic_near(1 - t), _cubic_far((1 - t) + 1)], dim=1)
    offsets = torch.arange(-1, 3, device=device)
    taps = (index[:, None] + offsets).clamp(0, in_size - 1)
    return taps, weight


def resize_along(table: torch.Tensor, taps: CubicTaps,
                 dim: int) -> torch.Tensor:
    """``table`` resized bicubically along ``dim``: the outputs whose
    ``taps`` (:func:`cubic_taps`, or a slice of it) are given, each the
    weighted sum of its 4 source entries, in ATen's order.

    Shapes: (..., n_in, ...) → (..., len(taps[0]), ...) at ``dim``.
    """
    index, weight = taps
    shape = [1] * table.dim()
    shape[dim] = -1  # the weights run along dim
    weight = weight.to(table.dtype)
    out = table.index_select(dim, index[:, 0]) * weight[:, 0].view(shape)
    for j in range(1, 4):
        out = out + table.index_select(dim, index[:, j]) * weight[:, j].view(
            shape)
    return out


# One block of bias rows, as attention functions take it: the rows
# themselves (heads, r, Nk), or a band of the key-resized table (heads, nb,
# Nk) with the (r, nb) bicubic row weights, to be multiplied together by the
# scores' matmul (:func:`biased_scores`).
BiasBlock = Union[torch.Tensor, Tuple[torch.Tensor, torch.Tensor]]


def _tap_span(in_size: int, out_size: int, start: int,
              stop: int) -> Tuple[int, int]:
    """First and last source row any tap of output rows start:stop reads,
    from float64 source positions; one row of margin on either side covers
    float32 rounding of the position across an integer."""
    def source(i: int) -> float:
        return (i + 0.5) * in_size / out_size - 0.5

    return (max(0, math.floor(source(start)) - 2),
            min(in_size - 1, math.floor(source(stop - 1)) + 3))


class ResizedBias:
    """The bias table resized to (heads, Nq, Nk), a block of rows on demand.

    Args:
        columns: (heads, Nq_t, Nk), the table already resized along keys.
        row_taps: :func:`cubic_taps` of the rows (Nq_t → Nq), or None when
            the rows keep their size (bicubic resizing is then the
            identity).
    """

    def __init__(self, columns: torch.Tensor, row_taps: Optional[CubicTaps]):
        self.columns = columns
        self.row_taps = row_taps

    def rows(self, start: int, stop: int) -> torch.Tensor:
        """(heads, stop - start, Nk): rows ``start:stop`` of the bias."""
        if self.row_taps is None:
            return self.columns[:, start:stop]
        index, weight = self.row_taps
        return resize_along(self.columns,
                            (index[start:stop], weight[start:stop]), 1)

    def block(self, start: int, stop: int) -> BiasBlock:
        """Rows ``start:stop`` as the rows themselves when the rows keep
        their size, else as (weights (r, nb), band (heads, nb, Nk)): the
        table rows that the block's taps read and each output row's weights
        on them (zero off its 4 taps)."""
        if self.row_taps is None:
            return self.columns[:, start:stop]
        index, weight = self.row_taps
        first, last = _tap_span(self.columns.shape[1], index.shape[0],
                                start, stop)
        band = torch.arange(first, last + 1, device=index.device)
        on_tap = index[start:stop, :, None] == band
        weights = (on_tap * weight[start:stop, :, None]).sum(1)
        return weights.to(self.columns.dtype), self.columns[:, first:last + 1]


def biased_scores(q: torch.Tensor, k: torch.Tensor, scale: float,
                  bias: BiasBlock) -> torch.Tensor:
    """q·k·scale + bias for a block of query rows, as one matmul when the
    bias comes as a band: [q·scale | weights] · [k ; band].

    Shapes: q (B, h, r, d), k (B, h, d, N) → (B, h, r, N).
    """
    if isinstance(bias, torch.Tensor):
        # q scaled before the matmul: in fp16 q·k overflows (>65504) where
        # the scaled score would not.
        return (q * scale) @ k + bias
    weights, band = bias
    batch, heads, rows = q.shape[:3]
    q = torch.cat([q * scale, weights.expand(batch, heads, rows, -1)], -1)
    k = torch.cat([k, band.expand(batch, -1, -1, -1)], -2)
    return q @ k


def biased_sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                scale: float, bias: BiasBlock) -> torch.Tensor:
    """softmax(q·k·scale + bias)·v for a block of query rows.

    Eagerly and under ``torch.compile`` by ``scaled_dot_product_attention``,
    whose fused CPU kernel never holds the scores but needs q, k and v of
    one width: q and k are zero-padded to v's (which adds exact zeros to
    every score), and a band bias rides in that padding
    ([q·scale | weights | 0] · [k | band | 0]) when it fits, so no mask is
    built. Traced for export, the plain matmuls (:func:`biased_scores`):
    ONNX has no fused attention that takes this bias, and padding would
    only add work there.

    Shapes: q (B, h, r, d), k (B, h, N, d), v (B, h, N, dv) → (B, h, r, dv).
    """
    if torch.compiler.is_exporting():
        scores = biased_scores(q, k.transpose(2, 3), scale, bias)
        return scores.softmax(dim=-1) @ v
    batch, heads, rows, dim = q.shape
    width = v.shape[-1]
    if not isinstance(bias, torch.Tensor):
        weights, band = bias
        if dim + weights.shape[1] <= width:
            q = torch.cat([q * scale, weights.expand(batch, heads, rows, -1)],
                          -1)
            k = torch.cat([k, band.transpose(1, 2).expand(batch, -1, -1, -1)],
                          -1)
            return F.scaled_dot_product_attention(
                F.pad(q, (0, width - q.shape[-1])),
                F.pad(k, (0, width - k.shape[-1])), v, scale=1.0)
        bias = weights @ band
    return F.scaled_dot_product_attention(
        F.pad(q, (0, width - dim)), F.pad(k, (0, width - dim)), v,
        attn_mask=bias, scale=scale)


def sdpa_block_rows(num_queries: int, table_rows: int, dim: int,
                    width: int) -> Optional[int]:
    """Query rows per block whose band of table rows fits beside q's
    ``dim`` columns in v's ``width`` (see :func:`biased_sdpa`), or None
    when even a few rows' band would not (a bias shrunk rather than
    enlarged; such inputs are small)."""
    room = width - dim - 8  # taps span 4 rows, _tap_span adds 1 + 1 margin
    rows = room * num_queries // table_rows
    return rows if rows >= 16 else None


# (q rows (B, h, r, d), k (as the function takes it), v (B, h, Nk, dv),
# bias block) → (B, h, r, dv)
BlockAttention = Callable[
    [torch.Tensor, torch.Tensor, torch.Tensor, BiasBlock], torch.Tensor]


def attention_in_blocks(q: torch.Tensor,
                        k: torch.Tensor,
                        v: torch.Tensor,
                        bias: ResizedBias,
                        attend: BlockAttention,
                        block_rows: Optional[int] = None) -> torch.Tensor:
    """``attend(q, k, v, full bias)`` computed for blocks of query rows.

    ``attend`` must treat query rows independently (any softmax over keys,
    any mixing of heads is fine). Each block holds at most about
    ``BLOCK_ELEMENTS`` scores per image, so the temporaries grow with Nk
    only, or ``block_rows`` rows when given (an ``attend`` that never holds
    the scores).

    Shapes: q (B, h, Nq, d), k as ``attend`` takes it, v (B, h, Nk, dv)
    → (B, h, Nq, dv).
    """
    heads, num_queries = q.shape[1:3]
    num_keys = v.shape[2]
    # A symbolic batch size (every export) can stay: blocks split rows.
    if has_symbolic_size(num_queries, num_keys):
        return _scan_blocks(q, k, v, bias, attend)
    rows = block_rows or max(1, BLOCK_ELEMENTS // (heads * num_keys))
    if rows >= num_queries:
        return attend(q, k, v, bias.block(0, num_queries))
    return torch.cat([
        attend(q[:, :, start:start + rows], k, v,
               bias.block(start, min(start + rows, num_queries)))
        for start in range(0, num_queries, rows)
    ], dim=2)


def _scan_blocks(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                 bias: ResizedBias, attend: BlockAttention) -> torch.Tensor:
    """:func:`attention_in_blocks` for symbolic sizes: queries (and their
    row taps) padded to whole blocks of ``TRACED_BLOCK_ROWS`` and scanned,
    the padding rows dropped."""
    batch, heads, num_queries, dim = q.shape
    rows = TRACED_BLOCK_ROWS
    blocks = (num_queries + rows - 1) // rows
    padding = blocks * rows - num_queries
    if bias.row_taps is None:
        # Identity taps (weights 0, 1, 0, 0) keep the scan body uniform.
        index = torch.arange(
            num_queries, device=q.device)[:, None].expand(-1, 4)
        weight = torch.tensor([0., 1., 0., 0.], device=q.device).expand(
            num_queries, -1)
    else:
        index, weight = bias.row_taps
    index = F.pad(index, (0, 0, 0, padding)).view(blocks, rows, 4)
    weight = F.pad(weight, (0, 0, 0, padding)).view(blocks, rows, 4)
    q_blocks = F.pad(q, (0, 0, 0, padding)).view(
        batch, heads, blocks, rows, dim).permute(2, 0, 1, 3, 4)
    columns = bias.columns

    def step(carry, block):
        q_rows, row_index, row_weight = block
        out = attend(q_rows, k, v,
                     resize_along(columns, (row_index, row_weight), 1))
        return carry.clone(), out  # scan forbids returning an input

    _, out = scan(step, q.new_zeros(()), (q_blocks, index, weight))
    out = out.permute(1, 2, 0, 3, 4).reshape(batch, heads, blocks * rows, -1)
    return out.narrow(2, 0, num_queries)
