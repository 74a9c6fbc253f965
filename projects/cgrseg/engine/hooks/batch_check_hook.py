"""Checks each batch before the model sees it: label maps of the size of
their images and with values the model can learn, finite input values; the
error names the files."""
from typing import Iterator, Optional, Sequence

import torch
from mmengine.hooks import Hook
from mmseg.registry import HOOKS
from mmseg.structures import SegDataSample

from ..unwrap import unwrap_model


def _files(sample) -> str:
    return (f"{sample.metainfo.get('img_path', '<unknown image>')} "
            f"(label map {sample.metainfo.get('seg_map_path', 'unknown')})")


def _image_sample_pairs(inputs: Sequence, samples: Sequence) -> Iterator:
    """(image, data sample) pairs; under test-time augmentation each entry
    is itself a sequence over the augmented views."""
    for image, sample in zip(inputs, samples):
        if isinstance(image, (list, tuple)):
            yield from _image_sample_pairs(image, sample)
        else:
            yield image, sample


def check_batch(data_batch: Optional[dict], training: bool) -> None:
    """Raise ``ValueError`` naming the files of a sample whose label map
    does not match its image (in training the pipeline transforms both, so
    they must have the same size; in testing the label map keeps the size
    of the image file, ``ori_shape``), or whose input holds NaN/inf."""
    if not data_batch or 'data_samples' not in data_batch:
        return
    for image, sample in _image_sample_pairs(data_batch['inputs'],
                                             data_batch['data_samples']):
        if image.is_floating_point() and not torch.isfinite(image).all():
            raise ValueError(
                f'the input image {_files(sample)} holds NaN or inf values '
                f'after the data pipeline: check the file and the '
                f'pipeline\'s transforms.')
        if 'gt_sem_seg' not in sample:
            continue
        label = tuple(sample.gt_sem_seg.shape)
        expected = tuple(image.shape[-2:]) if training else tuple(
            sample.metainfo.get('ori_shape', label))
        if label != expected:
            raise ValueError(
                f'label map {sample.metainfo.get("seg_map_path")} is '
                f'{label[0]}x{label[1]} but its image '
                f'{sample.metainfo.get("img_path")} is '
                f'{expected[0]}x{expected[1]}'
                f'{" after the training pipeline" if training else ""}: '
                f'a label map must have the height and width of its image.')


def check_label_range(samples: Sequence[SegDataSample], num_classes: int,
                      ignore_index: int) -> None:
    """Raise if a label map holds a value outside ``[0, num_classes)`` other
    than ``ignore_index``, naming the file (a bare ``IndexError`` or a CUDA
    assertion inside the loss otherwise)."""
    for sample in samples:
        labels = sample.gt_sem_seg.data
        low, high = labels.aminmax()  # the fast path: all labels in range
        if low >= 0 and high < num_classes:
            continue
        outside = ((labels < 0) | (labels >= num_classes)) & (
            labels != ignore_index)
        if outside.any():
            bad = torch.unique(labels[outside])
            path = sample.metainfo.get('seg_map_path', '<unknown file>')
            raise ValueError(
                f'label map {path} contains values {bad.tolist()[:10]} '
                f'outside [0, {num_classes - 1}] (ignore_index '
                f'{ignore_index}). Check num_classes, reduce_zero_label and '
                f'the label encoding of the dataset.')


@HOOKS.register_module()
class BatchCheckHook(Hook):
    """Fails with the file names, before the model sees the batch, instead
    of NaN weights, a deep shape error in the metric, an index error in the
    loss (label range, checked in training only: the metric ignores labels
    outside the classes), or training on label maps that do not fit."""

    priority = 'VERY_HIGH'

    def before_train_iter(self, runner, batch_idx: int,
                          data_batch: Optional[dict] = None) -> None:
        check_batch(data_batch, training=True)
        model = unwrap_model(runner.model)
        head = getattr(model, 'decode_head', None)
        if head is not None and data_batch:
            check_label_range(data_batch['data_samples'], head.num_classes,
                              head.ignore_index)

    def before_val_iter(self, runner, batch_idx: int,
                        data_batch: Optional[dict] = None) -> None:
        check_batch(data_batch, training=False)

    def before_test_iter(self, runner, batch_idx: int,
                         data_batch: Optional[dict] = None) -> None:
        check_batch(data_batch, training=False)
