"""Label maps from low-resolution logits without full-resolution logits.

Both functions return exactly ``argmax(resize(logits))`` (bilinear,
``align_corners=False``; up to float rounding in near-ties) with far less
memory than the (N, C, H, W) resized logits.
"""
from typing import Tuple

import torch
import torch.nn.functional as F


def crop(x: torch.Tensor, size: Tuple[int, int]) -> torch.Tensor:
    """The top-left (h, w) of (..., H, W) maps. ``narrow`` rather than
    slicing: its output size is (h, w) by definition, so a graph traced
    with symbolic sizes needs no case split on whether h < H."""
    return x.narrow(-2, 0, size[0]).narrow(-1, 0, size[1])


def _cell_offset(factor: int) -> int:
    """How far the first output row lies inside the first cell: cell k
    spans the outputs whose source row lies in [k - 1, k), which start at
    factor·k - ceil(factor / 2)."""
    return (factor + 1) // 2


def _cell_weights(factor: int, like: torch.Tensor) -> torch.Tensor:
    """(factor, factor, 4) bilinear weights of the 4 corners of a cell for
    each output pixel in it (top-left, top-right, bottom-left, bottom-right).
    """
    t = (torch.arange(factor, dtype=like.dtype, device=like.device) -
         _cell_offset(factor) + 0.5) / factor + 0.5
    rows = torch.stack([1 - t, t], dim=1)
    return (rows[:, None, :, None] * rows[None, :, None, :]).reshape(
        factor, factor, 4)


def upsample_argmax(logits: torch.Tensor, factor: int,
                    crop_size: Tuple[int, int]) -> torch.Tensor:
    """``crop(resize(logits, factor × size), crop_size).argmax(1)`` for an
    integer upsampling ``factor``, evaluating the classes only where the
    label can change.

    Between four neighbouring low-resolution pixels (a *cell*, covering
    factor × factor output pixels) every output value is a convex
    combination of the four corners, class by class with the same weights.
    If all four corners have the same argmax k, k beats every other class at
    each corner and therefore everywhere in the cell (and keeps ties with
    later classes, like ``torch.argmax``): the cell is labelled k at once.
    Only cells whose corners disagree (along class boundaries) are
    interpolated, one row of output pixels at a time, so the largest
    temporary is 1/factor of the full-resolution logits even when every cell
    is mixed. Borders replicate the edge pixels, as the resize clamps there.

    Shapes: logits (N, C, h, w) → labels (N, *crop_size), int64, with
    crop_size at most (factor·h, factor·w).
    """
    batch, classes, h, w = logits.shape
    padded = F.pad(logits, (1, 1, 1, 1), mode='replicate')
    low = padded.argmax(dim=1)
    top_left = low[:, :-1, :-1]
    mixed = ((top_left != low[:, :-1, 1:]) | (top_left != low[:, 1:, :-1])
             | (top_left != low[:, 1:, 1:]))
    labels = top_left.reshape(-1, 1, 1).expand(-1, factor, factor)
    cell = mixed.reshape(-1).nonzero().squeeze(1)
    cells_per_image = (h + 1) * (w + 1)
    # Remainders spelled as differences: the ONNX exporter cannot convert
    # ``tensor % size`` when the size is symbolic (a dynamic-shape export).
    image = cell // cells_per_image
    within = cell - image * cells_per_image
    row = within // (w + 1)
    col = within - row * (w + 1)
    table = padded.permute(0, 2, 3, 1).reshape(-1, classes)
    first = image * ((h + 2) * (w + 2)) + row * (w + 2) + col
    corners = torch.stack([
        table[first], table[first + 1], table[first + w + 2],
        table[first + w + 3]
    ], dim=1)
    weights = _cell_weights(factor, logits)
    exact = torch.stack(
        [(weights[r] @ corners).argmax(dim=-1) for r in range(factor)],
        dim=1)
    labels = labels.index_put((cell, ), exact)
    canvas = labels.reshape(batch, h + 1, w + 1, factor, factor).permute(
        0, 1, 3, 2, 4).reshape(batch, (h + 1) * factor, (w + 1) * factor)
    offset = _cell_offset(factor)
    return canvas.narrow(1, offset, crop_size[0]).narrow(
        2, offset, crop_size[1])


def resize_argmax(logits: torch.Tensor,
                  size: Tuple[int, int],
                  crop_size: Tuple[int, int],
                  classes_per_chunk: int = 16,
                  align_corners: bool = False) -> torch.Tensor:
    """``resize(logits, size)[..., :crop_h, :crop_w].argmax(1)``, computed
    ``classes_per_chunk`` classes at a time.

    Bilinear resizing treats every class channel on its own, so resizing a
    chunk of channels gives exactly the values of the full resize. A running
    maximum over the chunks keeps the first class on ties, like
    ``torch.argmax``. Peak memory is one chunk at full resolution instead of
    all (N, C, H, W) logits.

    Shapes: logits (N, C, h, w) → labels (N, *crop_size), int64.
    """
    best_score = best_label = None
    for start in range(0, logits.shape[1], classes_per_chunk):
        chunk = F.interpolate(
            logits[:, start:start + classes_per_chunk],
            size=size,
            mode='bilinear',
            align_corners=align_corners)
        chunk = crop(chunk, crop_size)
        score, label = chunk.max(dim=1)
        label = label + start
        if best_score is None:
            best_score, best_label = score, label
        else:
            better = score > best_score
            best_score = torch.maximum(score, best_score)
            best_label = torch.where(better, label, best_label)
    return best_label
