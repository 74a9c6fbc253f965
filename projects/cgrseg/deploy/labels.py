"""Label maps from low-resolution logits without full-resolution logits."""
from typing import Tuple

import torch
import torch.nn.functional as F


def crop(x: torch.Tensor, size: Tuple[int, int]) -> torch.Tensor:
    """The top-left (h, w) of (..., H, W) maps. ``narrow`` rather than
    slicing: its output size is (h, w) by definition, so a graph traced
    with symbolic sizes needs no case split on whether h < H."""
    return x.narrow(-2, 0, size[0]).narrow(-1, 0, size[1])


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
