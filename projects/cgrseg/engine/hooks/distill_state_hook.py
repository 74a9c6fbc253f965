"""Gives every checkpoint the distillation layout of
:mod:`cgrseg.models.segmentors.distill_state`, whichever checkpoint hook
saves it."""
from mmengine.hooks import Hook
from mmseg.registry import HOOKS

from ...models.segmentors.distill_state import (merge_distill_state,
                                                split_distill_state)
from ..unwrap import unwrap_model


@HOOKS.register_module()
class DistillStateHook(Hook):
    """A checkpoint's ``state_dict`` holds the student alone: a
    distillation model's connectors (``distill_losses.*``, part of its
    ``state_dict()``) are filed under ``distill_state_dict`` when any
    checkpoint is saved (MMEngine's ``CheckpointHook``,
    ``CrashSafeCheckpointHook``, ``runner.save_checkpoint``), and put back
    when a checkpoint is loaded into a distillation model (``--resume``,
    ``load_from``). Other models' checkpoints are left as they are.

    MMEngine's runner writes ``model.state_dict()`` into the checkpoint and
    then calls ``before_save_checkpoint`` on every hook, so this hook, not
    the checkpoint hook, is where the layout is made. The project's
    ``default_runtime.py`` lists it, so every config has it."""

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        split_distill_state(checkpoint)

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        model = unwrap_model(runner.model)
        if hasattr(model, 'distill_losses'):
            merge_distill_state(checkpoint)
