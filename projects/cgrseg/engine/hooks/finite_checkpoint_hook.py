"""Refuses to write a checkpoint whose weights are not finite."""
import torch
from mmengine.hooks import Hook
from mmseg.registry import HOOKS


@HOOKS.register_module()
class FiniteCheckpointHook(Hook):
    """Raises before a checkpoint with NaN/inf weights or buffers is saved,
    so the last good checkpoint stays the one to resume from."""

    priority = 'VERY_HIGH'

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        bad = [
            key for key, value in checkpoint['state_dict'].items()
            if torch.is_tensor(value) and value.is_floating_point()
            and not torch.isfinite(value).all()
        ]
        if bad:
            listing = ', '.join(bad[:5]) + (' ...' if len(bad) > 5 else '')
            raise FloatingPointError(
                f'refusing to save a checkpoint after iteration '
                f'{runner.iter + 1}: {len(bad)} entries are not finite '
                f'({listing}). Training has diverged; resume from the last checkpoint in '
                f'{runner.work_dir} with a lower learning rate.')
