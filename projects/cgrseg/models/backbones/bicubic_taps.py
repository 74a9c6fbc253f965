"""``F.interpolate(mode='bicubic', align_corners=False)`` along one axis as
explicit taps: the source indices and weights ATen's CPU kernel uses, to
float32 rounding, so that a resize can be applied to a few rows at a time
(docs/porting.md Q22) with the original's numerics.

Each output i reads the 4 source entries ``floor(src_i) + TAP_OFFSETS``
(clamped to the border), where src_i = (i + 0.5)·in/out - 0.5. The rows a
block of outputs reads (:func:`tap_span`) and their number
(:func:`max_span_rows`) follow from that alone.

Inside :func:`cubic_taps_shared` (the backbone's forward) each resize is
computed once and shared by every attention that needs it: a graph traced
for any input size would otherwise repeat the same few dozen operations on
symbolic sizes in each attention, and symbolic arithmetic is what such an
export spends its time on (the demo model's dynamic export took 30 % less
time with the taps shared; docs/porting.md Q22).
"""
from contextlib import contextmanager
from contextvars import ContextVar
from functools import lru_cache
from typing import Iterator, List, Optional, Tuple

import torch
from torch.fx.experimental.symbolic_shapes import statically_known_true

# The bicubic convolution constant of PyTorch's (and OpenCV's) resize.
CUBIC_A = -0.75
# Source entries of output i, relative to floor(src_i).
TAP_OFFSETS = (-1, 0, 1, 2)
# A span computed from exact source positions is widened by one entry on
# either side: ATen's float32 position can round across an integer.
ROUNDING_MARGIN = 1
SPAN_BEFORE = -TAP_OFFSETS[0] + ROUNDING_MARGIN  # 2
SPAN_AFTER = TAP_OFFSETS[-1] + ROUNDING_MARGIN  # 3

CubicTaps = Tuple[torch.Tensor, torch.Tensor]

# (in_size, out_size, device, taps) computed in the current
# cubic_taps_shared() block; None outside one.
_SHARED: ContextVar[Optional[List[tuple]]] = ContextVar(
    'shared_cubic_taps', default=None)


@contextmanager
def cubic_taps_shared() -> Iterator[None]:
    """Within the block, :func:`cubic_taps` returns the same taps for the
    same sizes and device (sizes compared symbolically when traced)."""
    token = _SHARED.set([])
    try:
        yield
    finally:
        _SHARED.reset(token)


def _fma(a: torch.Tensor, b, c) -> torch.Tensor:
    """float32 a·b + c, emulating the fused multiply-add of ATen's
    compiled kernels. The product of float32s (and of the exact constants
    used here) is exact in float64, so the result is rounded twice, the
    float64 sum and then to float32, where a true fma rounds once; the two
    differ only when the first rounding lands exactly halfway between two
    float32s. The weights built with it match ``F.interpolate``'s to 1 ulp
    (tests/test_blockwise_attention.py)."""
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
    """:func:`compute_cubic_taps`, computed once per sizes and device inside
    :func:`cubic_taps_shared` (Dynamo cannot read a ContextVar, and
    dedupes the graph itself)."""
    if torch.compiler.is_dynamo_compiling():
        return compute_cubic_taps(in_size, out_size, device)
    shared = _SHARED.get()
    if shared is None:
        return compute_cubic_taps(in_size, out_size, device)
    for known_in, known_out, known_device, taps in shared:
        # statically_known_true: equal for every input size, without
        # adding a guard to a traced graph (plain ints simply compare)
        if (known_in == in_size and known_device == device
                and statically_known_true(known_out == out_size)):
            return taps
    taps = compute_cubic_taps(in_size, out_size, device)
    shared.append((in_size, out_size, device, taps))
    return taps


@lru_cache(maxsize=64)
def cached_cubic_taps(in_size: int, out_size: int,
                      device: torch.device) -> CubicTaps:
    """:func:`compute_cubic_taps` kept per (sizes, device) for the life of
    the process (plain int sizes only; never for autograd or tracing: the
    tensors are shared by every caller)."""
    return compute_cubic_taps(in_size, out_size, device)


def compute_cubic_taps(in_size: int, out_size, device=None) -> CubicTaps:
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
    offsets = torch.tensor(TAP_OFFSETS, device=device)
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
    # Gathered along the first axis: ONNX Runtime's Gather copies whole
    # slices there, but element by element along a later axis (measured,
    # 2 threads: 34 ms against 0.26 ms for (8, 256, 256) → 1024 entries;
    # a dynamic-shape file resizes its tables on every run).
    table = table.movedim(dim, 0)
    shape = [-1] + [1] * (table.dim() - 1)  # the weights run along dim
    weight = weight.to(table.dtype)
    out = table.index_select(0, index[:, 0]) * weight[:, 0].view(shape)
    for j in range(1, len(TAP_OFFSETS)):
        out = out + table.index_select(0, index[:, j]) * weight[:, j].view(
            shape)
    return out.movedim(0, dim).contiguous()


def _floor_source(i: int, in_size: int, out_size: int) -> int:
    """floor(src_i), exactly: src_i = ((2i + 1)·in - out) / (2·out)."""
    return ((2 * i + 1) * in_size - out_size) // (2 * out_size)


def tap_span(in_size: int, out_size: int, start: int,
             stop: int) -> Tuple[int, int]:
    """First and last source entry that any tap of outputs start:stop
    reads, with ``ROUNDING_MARGIN`` (see :data:`SPAN_BEFORE`)."""
    return (max(0, _floor_source(start, in_size, out_size) - SPAN_BEFORE),
            min(in_size - 1,
                _floor_source(stop - 1, in_size, out_size) + SPAN_AFTER))


def max_span_rows(rows: int, in_size: int, out_size: int) -> int:
    """An upper bound of the entries :func:`tap_span` covers for any
    ``rows`` consecutive outputs: their floors differ by at most
    ceil((rows - 1)·in/out), and the span adds ``SPAN_BEFORE`` +
    ``SPAN_AFTER`` + 1."""
    return (-(-(rows - 1) * in_size // out_size) + SPAN_BEFORE + SPAN_AFTER +
            1)
