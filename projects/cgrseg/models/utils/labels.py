"""Validation of ground-truth label maps before they reach the loss."""
from typing import Sequence

import torch
from mmseg.structures import SegDataSample


def check_label_range(samples: Sequence[SegDataSample], num_classes: int,
                      ignore_index: int) -> None:
    """Raise if a label map holds a value outside ``[0, num_classes)`` other
    than ``ignore_index``, naming the file (a bare ``IndexError`` or a CUDA
    assertion inside the loss otherwise)."""
    for sample in samples:
        labels = sample.gt_sem_seg.data
        valid = labels[labels != ignore_index]
        if valid.numel() == 0:
            continue
        low, high = int(valid.min()), int(valid.max())
        if low < 0 or high >= num_classes:
            bad = torch.unique(valid[(valid < 0) | (valid >= num_classes)])
            path = sample.metainfo.get('seg_map_path', '<unknown file>')
            raise ValueError(
                f'label map {path} contains values {bad.tolist()[:10]} '
                f'outside [0, {num_classes - 1}] (ignore_index '
                f'{ignore_index}). Check num_classes, reduce_zero_label and '
                f'the label encoding of the dataset.')
