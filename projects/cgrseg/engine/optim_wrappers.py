"""Optimizer wrappers MMEngine lacks: skipping non-finite steps, CPU AMP."""
from contextlib import contextmanager

import torch
import torch.nn as nn
from mmengine.logging import print_log
from mmengine.optim import OptimWrapper
from mmengine.runner.amp import autocast
from mmseg.registry import OPTIM_WRAPPERS


@OPTIM_WRAPPERS.register_module()
class NonFiniteSkipOptimWrapper(OptimWrapper):
    """:class:`OptimWrapper` that skips the update when a gradient is NaN/inf.

    The check runs after backward, on the (in DDP already all-reduced)
    gradients, so every rank takes the same decision and weights never
    receive a non-finite update. The model's buffers (BN running statistics,
    which the forward pass of a bad batch may already have poisoned) are
    restored to their state before that forward pass. After
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
        grads = [
            p.grad for group in self.optimizer.param_groups
            for p in group['params'] if p.grad is not None
        ]
        if not grads:
            return True
        return bool(torch.isfinite(nn.utils.get_total_norm(grads)))

    def step(self, **kwargs) -> None:
        if self._grads_finite():
            self.consecutive_skips = 0
            super().step(**kwargs)
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
