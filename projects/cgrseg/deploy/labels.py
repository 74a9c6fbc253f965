"""Label maps from low-resolution logits without full-resolution logits.

Both functions return exactly ``argmax(resize(logits))`` (bilinear,
``align_corners=False``; up to float rounding in near-ties) with far less
memory than the (N, C, H, W) resized logits.
"""
from typing import List, Tuple

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


def _candidate_tiers(classes: int) -> List[int]:
    """Candidate counts the mixed cells are padded to: 4, 8, 16, ... and
    all classes (doubling: a cell's padding is less than its count)."""
    tiers = [min(4, classes)]
    while tiers[-1] < classes:
        tiers.append(min(2 * tiers[-1], classes))
    return tiers


def _take(flat: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``flat[index]`` for 1-D ``flat``, as ONNX ``Gather`` (the exporter
    writes plain indexing as the slower ``GatherND``)."""
    return flat.index_select(0, index.reshape(-1)).view(index.shape)


def upsample_argmax(logits: torch.Tensor, factor: int,
                    crop_size: Tuple[int, int]) -> torch.Tensor:
    """``crop(resize(logits, factor × size), crop_size).argmax(1)`` for an
    integer upsampling ``factor``, interpolating only the classes that can
    win, only where the label can change.

    Between four neighbouring low-resolution pixels (a *cell*, covering
    factor × factor output pixels) every output value is a convex
    combination of the four corners, class by class with the same weights
    w_c >= 0. If all four corners have the same argmax k, k beats every
    other class at each corner and therefore everywhere in the cell (and
    keeps ties with later classes, like ``torch.argmax``): the cell is
    labelled k at once.

    In the other (*mixed*) cells, a class j that some class d beats at all
    four corners by more than a margin m, v_c[d] - v_c[j] > m for every
    corner c, loses to d at every pixel of the cell: there d's value
    exceeds j's by sum_c w_c (v_c[d] - v_c[j]) > m (the weights sum to 1).
    The margin makes this hold for the *computed* values too, in any
    summation order: a 4-term sum is off by at most gamma_4 ≈ 2^-22 ·
    max |logits|, two of them by 2^-21, and m = 2^-18 · max |logits| also
    covers the rounding of the thresholds v_c[d] - m (and keeps d from
    ruling itself out). So j is never the first class of highest computed
    value: leaving it out changes no label, ties included, as long as the
    classes kept are summed as before (the tests compare with summing
    every class). The classes d tried are the corners' argmaxes: first an
    interval test over all classes at once (j is out if its largest corner
    value is below the smallest of some d's, less m), then corner by
    corner on the classes left. A mixed cell keeps a few classes (random
    weights, ADE20K, 1024×2048: ~6 of 150 on average, 45 at most).

    The mixed cells are grouped by how many classes they keep and padded
    to 4, 8, 16, ... candidates by repeating their last one (a repeat
    comes after the original, so a tie still goes to the lower class);
    each group is interpolated a few rows of output pixels at a time, so
    the largest temporary stays 1/factor of the full-resolution logits
    even where every cell keeps every class. Borders replicate the edge
    pixels, as the resize clamps there.

    Shapes: logits (N, C, h, w) → labels (N, *crop_size), int64, with
    crop_size at most (factor·h, factor·w).
    """
    batch, classes, h, w = logits.shape
    device = logits.device
    # Class-last, so that a corner's classes are one row of the table.
    table = logits.permute(0, 2, 3, 1).reshape(-1, classes)
    low = table.argmax(dim=1)
    # (N, h + 1, w + 1, 4): the table rows of each cell's corners, clamped
    # at the borders (the resize replicates the edge pixels there).
    top = (torch.arange(h + 1, device=device) - 1).clamp(min=0)
    bottom = torch.arange(h + 1, device=device).clamp(max=h - 1)
    left = (torch.arange(w + 1, device=device) - 1).clamp(min=0)
    right = torch.arange(w + 1, device=device).clamp(max=w - 1)
    rows = torch.stack([top, top, bottom, bottom]) * w
    cols = torch.stack([left, right, left, right])
    pixels = (torch.arange(batch, device=device).view(-1, 1, 1, 1) * (h * w) +
              rows.t().view(1, -1, 1, 4) + cols.t().view(1, 1, -1, 4))
    winners = _take(low, pixels).reshape(-1, 4)
    mixed = (winners != winners[:, :1]).any(dim=1)
    cell = mixed.nonzero().squeeze(1)
    # The mixed cells' corners as four (M, C) tables: separate tensors, so
    # that ONNX Runtime needs no copies to take them apart.
    corners = [
        table.index_select(0, index)
        for index in pixels.reshape(-1, 4)[cell].unbind(1)
    ]
    margin = 2.0**-18 * torch.maximum(logits.max(), -logits.min())
    # (M, 4, 4): corner d's argmax at corner c, less the margin, [:, d, c].
    beaten_below = torch.stack(
        [values.gather(1, winners[cell]) for values in corners],
        dim=2) - margin
    floor = beaten_below.amin(dim=2).amax(dim=1)
    highest = torch.maximum(
        torch.maximum(corners[0], corners[1]),
        torch.maximum(corners[2], corners[3]))
    pair = (highest >= floor.unsqueeze(1)).reshape(-1).nonzero().squeeze(1)
    mixed_cell = pair // classes  # cell by cell, in class order
    label = pair - mixed_cell * classes
    values = torch.stack([_take(c.reshape(-1), pair) for c in corners],
                         dim=1)  # (P, 4)
    # Kept unless below some d's threshold at all four corners; as float
    # reductions, which ONNX Runtime runs faster than boolean ones.
    above = values.repeat(1, 4) - beaten_below.reshape(-1, 16).index_select(
        0, mixed_cell)  # (P, 16): tiled rather than broadcast, 3x faster
    above = above.view(-1, 4, 4)
    keep = (above.amax(dim=2).amin(dim=1) >= 0).nonzero().squeeze(1)
    values, mixed_cell, label = values[keep], mixed_cell[keep], label[keep]
    count = torch.zeros_like(cell).scatter_add(0, mixed_cell,
                                               torch.ones_like(mixed_cell))
    start = count.cumsum(0) - count
    weights = _cell_weights(factor, logits)
    groups, exacts = [], []
    fewer = 0
    for tier in _candidate_tiers(classes):
        group = ((count > fewer) & (count <= tier)).nonzero().squeeze(1)
        slot = torch.minimum(
            torch.arange(tier, device=device),
            count[group].unsqueeze(1) - 1)
        pick = start[group].unsqueeze(1) + slot  # (M, tier)
        options, names = values[pick].transpose(1, 2), label[pick]
        step = max(1, min(factor, classes // tier))  # ≤ 1/factor of full
        exacts.append(torch.cat([
            names.gather(1, (weights[r:r + step].reshape(-1, 4)
                             @ options).argmax(dim=-1))
            for r in range(0, factor, step)
        ], dim=1))
        groups.append(group)
        fewer = tier
    labels = winners[:, 0].unsqueeze(1).expand(-1, factor * factor)
    # One scatter for all groups: each copies the whole canvas in ONNX.
    labels = labels.index_put((cell[torch.cat(groups)], ), torch.cat(exacts))
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
