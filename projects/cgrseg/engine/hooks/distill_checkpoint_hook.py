"""Saves and restores the learned distillation parameters (connectors),
which a distillation model keeps out of its student ``state_dict``."""
from mmengine.hooks import Hook
from mmengine.logging import print_log
from mmengine.model import is_model_wrapper
from mmengine.runner.checkpoint import weights_to_cpu
from mmseg.registry import HOOKS

from ...models.segmentors import DistillEncoderDecoder

KEY = 'distill_state_dict'


def _distill_model(runner) -> DistillEncoderDecoder:
    model = runner.model.module if is_model_wrapper(runner.model) \
        else runner.model
    if not isinstance(model, DistillEncoderDecoder):
        raise TypeError(f'DistillCheckpointHook needs a '
                        f'DistillEncoderDecoder model, got '
                        f'{type(model).__name__}.')
    return model


@HOOKS.register_module()
class DistillCheckpointHook(Hook):
    """Checkpoints of a :class:`~cgrseg.models.DistillEncoderDecoder`
    keep the student alone under ``state_dict`` (it loads into the plain
    student config) and the learned distillation parameters under
    ``distill_state_dict``; resuming (or ``load_from``) restores them.

    A checkpoint without them (e.g. a plain student checkpoint used as
    ``load_from``) leaves the connectors at their initialisation, with a
    log message. The teacher is never saved: it comes from
    ``model.teacher.checkpoint``.
    """

    priority = 'NORMAL'

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        checkpoint[KEY] = weights_to_cpu(
            _distill_model(runner).distill_state_dict())

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        model = _distill_model(runner)
        if KEY in checkpoint:
            model.load_distill_state_dict(checkpoint[KEY])
        elif model.distill_state_dict():
            print_log(
                'the checkpoint holds no distillation parameters '
                f'({KEY}): the connectors start from their initialisation.',
                logger='current', level=30)
