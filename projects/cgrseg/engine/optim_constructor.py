"""An optimizer-wrapper constructor that logs the parameter groups it builds
as one line per distinct (lr, weight decay) instead of one line per setting
of every parameter.

MMEngine's :class:`DefaultOptimWrapperConstructor` prints
``paramwise_options -- <name>:<key>=<value>`` at INFO for each parameter
and key when a ``paramwise_cfg`` is set: ~900 lines for CGRSeg-T, which
bury the training progress. Those lines are kept at DEBUG (``log_level =
'DEBUG'`` in a config shows them again); the groups are built unchanged.
"""
import logging
from collections import defaultdict

import torch.nn as nn
from mmengine.logging import MMLogger, print_log
from mmengine.optim import DefaultOptimWrapperConstructor, OptimWrapper
from mmseg.registry import OPTIM_WRAPPER_CONSTRUCTORS

PARAMWISE_PREFIX = 'paramwise_options -- '


class DemoteToDebug(logging.Filter):
    """Lowers records whose message starts with ``prefix`` to DEBUG, so
    handlers at INFO drop them and handlers at DEBUG keep them."""

    def __init__(self, prefix: str):
        super().__init__()
        self.prefix = prefix

    def filter(self, record: logging.LogRecord) -> bool:
        if str(record.msg).startswith(self.prefix):
            record.levelno, record.levelname = logging.DEBUG, 'DEBUG'
        return True


def group_summary(optim_wrapper: OptimWrapper) -> str:
    """``lr=.. weight_decay=..: T tensors, P parameters`` per distinct pair,
    largest group first."""
    counts: dict = defaultdict(lambda: [0, 0])
    for group in optim_wrapper.optimizer.param_groups:
        key = (group['lr'], group.get('weight_decay', 0.0))
        counts[key][0] += len(group['params'])
        counts[key][1] += sum(p.numel() for p in group['params'])
    lines = [
        f'  lr={lr:g} weight_decay={wd:g}: {tensors} tensors, '
        f'{numel:,} parameters'
        for (lr, wd), (tensors, numel) in sorted(
            counts.items(), key=lambda item: -item[1][1])
    ]
    return (f'{type(optim_wrapper.optimizer).__name__} parameter groups '
            f'(per-parameter listing at log_level DEBUG):\n' +
            '\n'.join(lines))


@OPTIM_WRAPPER_CONSTRUCTORS.register_module()
class GroupSummaryOptimWrapperConstructor(DefaultOptimWrapperConstructor):
    """:class:`DefaultOptimWrapperConstructor` with a one-line-per-group log
    (see the module docstring)."""

    def __call__(self, model: nn.Module) -> OptimWrapper:
        logger = MMLogger.get_current_instance()
        demote = DemoteToDebug(PARAMWISE_PREFIX)
        logger.addFilter(demote)
        try:
            optim_wrapper = super().__call__(model)
        finally:
            logger.removeFilter(demote)
        print_log(group_summary(optim_wrapper), logger='current')
        return optim_wrapper
