"""Exact attention with a bicubically resized bias, a block of queries at a
time, so that memory grows with the number of keys, not queries × keys.

EfficientFormerV2's attentions add a learned bias, gathered to
(heads, Nq_t, Nk_t) and resized bicubically to (heads, Nq, Nk), to the
(B, heads, Nq, Nk) scores; materialising both costs 537 MB each at the
attention downsample of a 1024×2048 image. ATen's bicubic kernel computes
every output as Σ_i wy_i · (Σ_j wx_j · table), the row taps outside the
column taps. So the table is resized along the keys once per input size
((heads, Nq_t, Nk), small), and a block of query rows needs only the band
of table rows that its taps read (bicubic_taps.py). The band joins the
scores' matmul ([q·scale | weights] · [k ; band], :func:`biased_scores`,
:func:`biased_sdpa`), so no bias tensor is built at all.

Which path runs where (q, k and v are (B, h, N, d) throughout):

====================================  =============  ===================
run                                   blocks         attention downsample
====================================  =============  ===================
eager, training                       Python loop    fused SDPA
``torch.compile`` (dynamic or not)    Python loop    fused SDPA
fixed-size export (ONNX)              unrolled loop  matmuls
dynamic-shape export (ONNX)           ONNX ``Scan``  matmuls
====================================  =============  ===================

The loop needs concrete token counts; a graph traced with symbolic ones
(``torch.export`` / the ONNX exporter with dynamic shapes) cannot unroll it
and gets one ``torch.ops.higher_order.scan`` (:func:`_scan_blocks`).
``torch.compile``'s Dynamo hands the model plain ints even with dynamic
shapes, so it specialises the loop to each size (and recompiles on a new
one). Attention4D (talking heads between scores and softmax) always uses
the matmuls. See docs/porting.md Q22.
"""
from functools import partial
from typing import Callable, Optional, Tuple, Union

import torch
import torch.nn.functional as F
from torch._higher_order_ops.scan import scan

from ..utils.tracing import has_symbolic_size
from .bicubic_taps import CubicTaps, max_span_rows, tap_span

# Scores per block and image (heads × rows × keys): 16 MiB in float32. At
# 1024×2048 (CGRSeg-T, 2 threads, the 2-vCPU machine of docs/deployment.md)
# blocks of 2^22 scores ran 12-18 % faster eagerly than 2^23 and 3 % faster
# in ONNX Runtime; 2^21 and 2^20 no faster than 2^22.
BLOCK_ELEMENTS = 1 << 22
# Query rows per block of a graph traced with symbolic sizes.
TRACED_BLOCK_ROWS = 128
# Fewer query rows than this per fused-attention block (a bias shrunk
# rather than enlarged leaves little room for its band) are not worth
# blocking: the bias goes in as a mask instead (such inputs are small).
MIN_SDPA_BLOCK_ROWS = 16

# One block of bias rows, as attention functions take it: the rows
# themselves (heads, r, Nk), or a band of the key-resized table (heads, nb,
# Nk) with the (r, nb) bicubic row weights, to be multiplied together by the
# scores' matmul (:func:`biased_scores`).
BiasBlock = Union[torch.Tensor, Tuple[torch.Tensor, torch.Tensor]]


class ResizedBias:
    """The bias table resized to (heads, Nq, Nk), a block of rows on demand.

    Args:
        columns: (heads, Nq_t, Nk), the table already resized along keys.
        row_taps: :func:`~.bicubic_taps.cubic_taps` of the rows
            (Nq_t → Nq), or None when the rows keep their size (bicubic
            resizing is then the identity; never with symbolic sizes).
    """

    def __init__(self, columns: torch.Tensor, row_taps: Optional[CubicTaps]):
        self.columns = columns
        self.row_taps = row_taps

    def block(self, start: int, stop: int) -> BiasBlock:
        """Rows ``start:stop`` as the rows themselves when the rows keep
        their size, else as (weights (r, nb), band (heads, nb, Nk)): the
        table rows that the block's taps read and each output row's weights
        on them (zero off its 4 taps)."""
        if self.row_taps is None:
            return self.columns[:, start:stop]
        index, weight = self.row_taps
        first, last = tap_span(self.columns.shape[1], index.shape[0], start,
                               stop)
        weights = band_weights(index[start:stop], weight[start:stop], first,
                               last - first + 1)
        return weights.to(self.columns.dtype), self.columns[:, first:last + 1]


def band_weights(index: torch.Tensor, weight: torch.Tensor, first,
                 length) -> torch.Tensor:
    """Each output row's bicubic weights on the table rows ``first`` ..
    ``first + length - 1``: its taps' weights where they read (summed where
    clamped taps read one row twice), zero elsewhere.

    Shapes: index, weight (..., r, 4); first an int or a tensor that
    broadcasts against index → (..., r, length).
    """
    band = torch.arange(length, device=index.device)
    on_tap = (index - first)[..., None] == band
    return (on_tap * weight[..., None]).sum(-2)


def biased_scores(q: torch.Tensor, k: torch.Tensor, scale: float,
                  bias: BiasBlock) -> torch.Tensor:
    """q·kᵀ·scale + bias for a block of query rows, q scaled first (its
    products stay in range in float16), as one matmul when the bias comes
    as a band: [q·scale | weights] · [k | band]ᵀ.

    Shapes: q (B, h, r, d), k (B, h, N, d) → (B, h, r, N).
    """
    q = q * scale
    k = k.transpose(2, 3)
    if isinstance(bias, torch.Tensor):
        return q @ k + bias
    weights, band = bias
    batch, heads, rows = q.shape[:3]
    q = torch.cat([q, weights.expand(batch, heads, rows, -1)], -1)
    k = torch.cat([k, band.expand(batch, -1, -1, -1)], -2)
    return q @ k


def matmul_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                     bias: BiasBlock, scale: float) -> torch.Tensor:
    """softmax(q·kᵀ·scale + bias)·v by plain matmuls (exported graphs:
    ONNX has no fused attention that takes this bias).

    Shapes: q (B, h, r, d), k (B, h, N, d), v (B, h, N, dv) → (B, h, r, dv).
    """
    return biased_scores(q, k, scale, bias).softmax(dim=-1) @ v


def biased_sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                bias: BiasBlock, scale: float) -> torch.Tensor:
    """softmax(q·kᵀ·scale + bias)·v for a block of query rows by
    ``scaled_dot_product_attention``, whose fused CPU kernel never holds the
    scores but needs q, k and v of one width: q and k are zero-padded to
    v's (which adds exact zeros to every score), and a band bias rides in
    that padding ([q·scale | weights | 0] · [k | band | 0]ᵀ) when it fits
    (:func:`sdpa_block_rows`), so no mask is built.

    Shapes: q (B, h, r, d), k (B, h, N, d), v (B, h, N, dv) → (B, h, r, dv).
    """
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
    """The most query rows per block whose band of table rows (at most
    :func:`~.bicubic_taps.max_span_rows`) fits beside q's ``dim`` columns
    in v's ``width`` (see :func:`biased_sdpa`), or None when fewer than
    ``MIN_SDPA_BLOCK_ROWS`` would."""
    span_rows = max_span_rows(1, table_rows, num_queries)  # one row's span
    # max_span_rows(r) = ceil((r - 1)·Nq_t/Nq) + span_rows <= width - dim
    rows = (width - dim - span_rows) * num_queries // table_rows + 1
    return rows if rows >= MIN_SDPA_BLOCK_ROWS else None


# (q rows (B, h, r, d), k (B, h, Nk, d), v (B, h, Nk, dv), bias block)
# → (B, h, r, dv)
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

    Shapes: q (B, h, Nq, d), k (B, h, Nk, d), v (B, h, Nk, dv)
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


def sdpa_in_blocks(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                   bias: ResizedBias, scale: float) -> torch.Tensor:
    """softmax(q·kᵀ·scale + bias)·v in blocks: by the fused kernel
    (:func:`biased_sdpa`) where PyTorch runs the model, by matmuls where it
    is exported (the one place that asks which).

    Shapes: q (B, h, Nq, d), k (B, h, Nk, d), v (B, h, Nk, dv)
    → (B, h, Nq, dv).
    """
    if torch.compiler.is_exporting():
        return attention_in_blocks(q, k, v, bias,
                                   partial(matmul_attention, scale=scale))
    # The fused kernel falls back to its slow path on strided v.
    v = v.contiguous()
    block_rows = None
    if bias.row_taps is not None:
        block_rows = sdpa_block_rows(q.shape[2], bias.columns.shape[1],
                                     q.shape[-1], v.shape[-1])
    return attention_in_blocks(q, k, v, bias,
                               partial(biased_sdpa, scale=scale), block_rows)


def _scan_blocks(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                 bias: ResizedBias, attend: BlockAttention) -> torch.Tensor:
    """:func:`attention_in_blocks` for symbolic sizes: queries padded to
    whole blocks of ``TRACED_BLOCK_ROWS`` and scanned, the padding rows
    dropped. Each block gets its band of table rows as the unrolled blocks
    do (:meth:`ResizedBias.block`), one slice of a length that bounds every
    block's span (:func:`~.bicubic_taps.max_span_rows`), so a step runs one
    gather and the scores' matmul instead of resizing its rows tap by tap.
    The row weights of every block are computed before the scan."""
    batch, heads, num_queries, dim = q.shape
    rows = TRACED_BLOCK_ROWS
    blocks = (num_queries + rows - 1) // rows
    padding = blocks * rows - num_queries
    table_rows = bias.columns.shape[1]
    band_rows = torch.sym_min(table_rows,
                              max_span_rows(rows, table_rows, num_queries))
    # Padding rows get taps on row 0 with weight 0: zero weight rows.
    index, weight = (F.pad(taps, (0, 0, 0, padding)).view(blocks, rows, -1)
                     for taps in bias.row_taps)
    # A block's taps are ascending from its first row's first one; a band
    # that would run past the table ends at its last row instead.
    first = index[:, 0, 0].clamp(max=table_rows - band_rows)
    band_index = first[:, None] + torch.arange(band_rows, device=q.device)
    weights = band_weights(index, weight, first[:, None, None],
                           band_rows).to(q.dtype)
    q_blocks = F.pad(q, (0, 0, 0, padding)).view(
        batch, heads, blocks, rows, dim).permute(2, 0, 1, 3, 4)
    columns = bias.columns

    def step(carry, block):
        q_rows, rows_band, rows_weights = block
        # The block's bias rows (heads, rows, Nk) as one small matmul: the
        # scores' own matmul then keeps k as it is, which lets ONNX Runtime
        # fuse k's transpose into it (a Scan step cannot reuse a transpose
        # made outside it).
        rows_bias = rows_weights @ columns.index_select(1, rows_band)
        return carry.clone(), attend(q_rows, k, v, rows_bias)

    _, out = scan(step, q.new_zeros(()), (q_blocks, band_index, weights))
    out = out.permute(1, 2, 0, 3, 4).reshape(batch, heads, blocks * rows, -1)
    return out.narrow(2, 0, num_queries)
