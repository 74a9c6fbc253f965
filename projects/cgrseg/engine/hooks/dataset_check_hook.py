"""Checks, before the first iteration, that the model and the dataset agree
on the classes and that the dataset's files can be learned from."""
from typing import Set

from mmengine.hooks import Hook
from mmseg.registry import HOOKS

from ...datasets import DatasetError, check_dataset_files
from ..unwrap import unwrap_model


@HOOKS.register_module()
class DatasetCheckHook(Hook):
    """Fails fast, with the fix, instead of an index error deep inside the
    loss or metric, a missing file in a data-loader worker or training on
    wrong labels: ``num_classes`` disagreeing with the dataset's classes,
    and (``check_files``) the faults :func:`~cgrseg.datasets.
    check_dataset_files` finds by reading every label map and image header
    once. Training checks its validation set too, before the first
    iteration; each dataset is checked once per run.

    Args:
        check_files: read the files (set False for a data set on a slow
            remote backend; BatchCheckHook still checks every batch).
    """

    def __init__(self, check_files: bool = True) -> None:
        self.check_files = check_files
        self._checked: Set[int] = set()

    def before_train(self, runner) -> None:
        self._check(runner, 'train', runner.train_dataloader.dataset)
        if runner.val_loop is not None:  # built by runner.train()
            self._check(runner, 'val', runner.val_loop.dataloader.dataset)

    def before_val(self, runner) -> None:
        self._check(runner, 'val', runner.val_loop.dataloader.dataset)

    def before_test(self, runner) -> None:
        self._check(runner, 'test', runner.test_loop.dataloader.dataset)

    def _check(self, runner, split: str, dataset) -> None:
        if id(dataset) in self._checked:
            return
        self._checked.add(id(dataset))
        classes = dataset.metainfo.get('classes')
        model = unwrap_model(runner.model)
        head = getattr(model, 'decode_head', None)
        if classes is not None and head is not None and \
                head.out_channels != len(classes) and not (
                    head.out_channels == 1 and len(classes) == 2):
            raise DatasetError(
                f'{type(dataset).__name__} ({split}) has {len(classes)} '
                f'classes but model.decode_head.num_classes is '
                f'{head.num_classes}: set model.decode_head.num_classes='
                f'{len(classes)} in the config (and in auxiliary heads).')
        if self.check_files:
            check_dataset_files(
                dataset, f'{split}_dataloader.dataset',
                None if classes is None else len(classes),
                getattr(head, 'ignore_index', 255))
