"""Checks that the model and the dataset agree on the classes."""
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmseg.registry import HOOKS


def _check(runner, split: str) -> None:
    loader = getattr(runner, f'{split}_dataloader')
    classes = loader.dataset.metainfo.get('classes')
    model = runner.model.module if is_model_wrapper(runner.model) \
        else runner.model
    head = getattr(model, 'decode_head', None)
    if classes is None or head is None:
        return
    if head.out_channels != len(classes) and not (
            head.out_channels == 1 and len(classes) == 2):
        raise ValueError(
            f'{type(loader.dataset).__name__} ({split}) has {len(classes)} '
            f'classes but model.decode_head.num_classes is '
            f'{head.num_classes}: set model.decode_head.num_classes='
            f'{len(classes)} in the config (and in auxiliary heads).')


@HOOKS.register_module()
class DatasetCheckHook(Hook):
    """Fails fast, with the fix, when ``num_classes`` disagrees with the
    dataset, instead of an index error deep inside the loss or metric."""

    def before_train(self, runner) -> None:
        _check(runner, 'train')

    def before_val(self, runner) -> None:
        _check(runner, 'val')

    def before_test(self, runner) -> None:
        _check(runner, 'test')
