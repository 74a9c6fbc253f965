"""Optimizer wrappers MMEngine lacks: skipping non-finite steps (plain, with
CUDA's fp16 GradScaler, with CPU bfloat16 autocast)."""
from contextlib import contextmanager

import torch
import torch.nn as nn
from mmengine.logging import print_log
from mmengine.optim import AmpOptimWrapper, OptimWrapper
from mmengine.runner.amp import autocast
from mmseg.registry import OPTIM_WRAPPERS


class NonFiniteSkipMixin:
    """Bookkeeping of skipped non-finite steps for an :class:`OptimWrapper`.

    The model's buffers (BN running statistics, which the forward pass of a
    bad batch may already have poisoned) are snapshotted before each forward
    pass and restored when the step is skipped. After
    ``max_consecutive_skips`` skipped steps in a row training stops with an
    error, as the run has diverged.
    """

    def __init__(self, *args, max_consecutive_skips: int = 20, **kwargs):
        super().__init__(*args, **kwargs)
        self.max_consecutive_skips = max_consecutive_skips
        self.consecutive_skips = 0
        self.total_skips = 0
        self._buffers_before_forward: list = []

    @contextmanager
    def optim_context(self, model: nn.Module):
        self._buffers_before_forward = [(buffer, buffer.detach().clone())
                                        for buffer in model.buffers()]
        with super().optim_context(model):
            yield

    def _grads_finite(self) -> bool:
        """Whether every gradient is finite (one host sync). Checked element
        by element: a norm of large finite values could overflow."""
        flags = [
            torch.isfinite(p.grad).all()
            for group in self.optimizer.param_groups
            for p in group['params'] if p.grad is not None
        ]
        return not flags or bool(torch.stack(flags).all())

    def _record_step(self, finite: bool) -> None:
        """After a step (``finite``) or a skipped one: restore the buffers,
        count, log, and stop after too many skips in a row."""
        if finite:
            self.consecutive_skips = 0
            return
        with torch.no_grad():
            for buffer, saved in self._buffers_before_forward:
                buffer.copy_(saved)
        self.consecutive_skips += 1
        self.total_skips += 1
        self.message_hub.update_scalar('train/skipped_steps',
                                       self.total_skips)
        print_log(
            f'non-finite gradient: optimizer step skipped '
            f'({self.consecutive_skips} in a row, {self.total_skips} in '
            f'total)', logger='current', level=30)
        if self.consecutive_skips >= self.max_consecutive_skips:
            raise FloatingPointError(
                f'{self.consecutive_skips} consecutive optimizer steps had '
                f'non-finite gradients: training has diverged. Lower the '
                f'learning rate, check the data, or resume from an earlier '
                f'checkpoint.')


@OPTIM_WRAPPERS.register_module()
class NonFiniteSkipOptimWrapper(NonFiniteSkipMixin, OptimWrapper):
    """:class:`OptimWrapper` that skips the update when a gradient is NaN/inf
    (see :class:`NonFiniteSkipMixin`).

    The check runs after backward, on the (in DDP already all-reduced)
    gradients, so every rank takes the same decision and weights never
    receive a non-finite update.
    """

    def step(self, **kwargs) -> None:
        finite = self._grads_finite()
        if finite:
            super().step(**kwargs)
        self._record_step(finite)


@OPTIM_WRAPPERS.register_module()
class NonFiniteSkipAmpOptimWrapper(NonFiniteSkipMixin, AmpOptimWrapper):
    """MMEngine's :class:`AmpOptimWrapper` (CUDA fp16 autocast, dynamic loss
    scale) with the safeguards of :class:`NonFiniteSkipOptimWrapper`:
    what ``--amp`` builds on CUDA.

    The GradScaler skips an overflowing step and lowers the scale by itself,
    but would leave BN statistics that the forward pass poisoned, and skip
    silently for ever once the run diverged; the mixin restores the buffers
    and stops after ``max_consecutive_skips`` skips in a row (with the
    default back-off of 0.5, 20 skips lower the scale 10⁶-fold).
    """

    def step(self, **kwargs) -> None:
        # Unscaled first, so that the check and the clipping see true
        # gradients; the scaler's own step then skips the update when it
        # found inf/NaN, and update() backs the scale off (or grows it).
        self.loss_scaler.unscale_(self.optimizer)
        finite = self._grads_finite()
        if finite and self.clip_grad_kwargs:
            self._clip_grad()
        self.loss_scaler.step(self.optimizer, **kwargs)
        self.loss_scaler.update(self._scale_update_param)
        self._record_step(finite)


@OPTIM_WRAPPERS.register_module()
class CPUAmpOptimWrapper(NonFiniteSkipOptimWrapper):
    """Mixed precision on CPU: the forward pass runs under bfloat16 autocast.

    bfloat16 has float32's exponent range, so no loss scaling is needed
    (MMEngine's :class:`AmpOptimWrapper` is CUDA-only fp16 + GradScaler).
    The non-finite skip, inherited, stands in for the GradScaler's: ``--amp``
    skips inf/NaN steps on CPU as on CUDA, whatever wrapper the config names.
    """

    def __init__(self, *args, dtype: str = 'bfloat16', **kwargs):
        if dtype != 'bfloat16':
            raise ValueError(
                f'CPUAmpOptimWrapper: dtype {dtype!r} is not supported; CPU '
                f'autocast is used with bfloat16 only (float16 needs CUDA '
                f"and AmpOptimWrapper).")
        super().__init__(*args, **kwargs)

    @contextmanager
    def optim_context(self, model: nn.Module):
        with super().optim_context(model), autocast(
                device_type='cpu', dtype=torch.bfloat16):
            yield
