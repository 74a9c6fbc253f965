"""A schedule (warm-up, decay) for the weight of the distillation losses."""
from typing import Optional

from mmengine.hooks import Hook
from mmseg.registry import HOOKS

from ..unwrap import unwrap_model


@HOOKS.register_module()
class DistillLossWeightHook(Hook):
    r"""Sets ``model.distill_loss_multiplier`` before every training
    iteration; :class:`~cgrseg.models.DistillEncoderDecoder` multiplies all
    its distillation losses (each with its own ``loss_weight``) by it.

    At iteration :math:`i` (0-based) the multiplier is

    .. math::

        m(i) = \begin{cases}
            s + (1 - s)\, i / W & i < W \quad \text{(linear warm-up)} \\
            1 & W \le i < B \\
            1 + (e - 1)\,(i - B) / (E - B) & B \le i < E
                \quad \text{(linear decay)} \\
            e & i \ge E
        \end{cases}

    with :math:`W` = ``warmup_iters``, :math:`s` = ``warmup_start``,
    :math:`B` = ``decay_begin`` (``None``: no decay), :math:`E` =
    ``decay_end`` (``None``: the last iteration, ``max_iters``) and
    :math:`e` = ``decay_factor``. The value is logged as
    ``distill_loss_multiplier``. It depends on the iteration only, so a
    resumed run continues the schedule.

    Args:
        warmup_iters: :math:`W` (0: no warm-up).
        warmup_start: :math:`s`, the multiplier at iteration 0.
        decay_begin: :math:`B` (>= ``warmup_iters``), or ``None``.
        decay_end: :math:`E` (> ``decay_begin``), or ``None``.
        decay_factor: :math:`e`, the multiplier from :math:`E` on.
    """

    priority = 'NORMAL'

    def __init__(self,
                 warmup_iters: int = 0,
                 warmup_start: float = 0.0,
                 decay_begin: Optional[int] = None,
                 decay_end: Optional[int] = None,
                 decay_factor: float = 0.0) -> None:
        if warmup_iters < 0:
            raise ValueError(f'DistillLossWeightHook: warmup_iters must be '
                             f'>= 0, got {warmup_iters}.')
        if decay_begin is not None and decay_begin < warmup_iters:
            raise ValueError(
                f'DistillLossWeightHook: decay_begin ({decay_begin}) must '
                f'not come before the end of the warm-up ({warmup_iters}).')
        if decay_begin is None and decay_end is not None:
            raise ValueError('DistillLossWeightHook: decay_end is set but '
                             'decay_begin is not.')
        self.warmup_iters = warmup_iters
        self.warmup_start = warmup_start
        self.decay_begin = decay_begin
        self.decay_end = decay_end
        self.decay_factor = decay_factor

    def multiplier(self, i: int, max_iters: int) -> float:
        """:math:`m(i)` for a run of ``max_iters`` iterations."""
        if i < self.warmup_iters:
            return self.warmup_start + (
                1 - self.warmup_start) * i / self.warmup_iters
        if self.decay_begin is None or i < self.decay_begin:
            return 1.0
        end = max_iters if self.decay_end is None else self.decay_end
        if end <= self.decay_begin:
            raise ValueError(
                f'DistillLossWeightHook: the decay ends at iteration {end}, '
                f'not after it begins ({self.decay_begin}).')
        if i >= end:
            return self.decay_factor
        return 1 + (self.decay_factor - 1) * (i - self.decay_begin) / (
            end - self.decay_begin)

    def before_train_iter(self,
                          runner,
                          batch_idx: int,
                          data_batch: Optional[dict] = None) -> None:
        model = unwrap_model(runner.model)
        if not hasattr(model, 'distill_loss_multiplier'):
            raise TypeError(
                f'DistillLossWeightHook needs a distillation model '
                f'(DistillEncoderDecoder), got {type(model).__name__}.')
        value = self.multiplier(runner.iter, runner.max_iters)
        model.distill_loss_multiplier = value
        runner.message_hub.update_scalar('train/distill_loss_multiplier',
                                         value)
