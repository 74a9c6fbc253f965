from .atomic_backend import AtomicLocalBackend, CheckpointWriteError
from .hooks import *  # noqa: F401,F403
from .optim_constructor import GroupSummaryOptimWrapperConstructor
from .optim_wrappers import (CPUAmpOptimWrapper, NonFiniteSkipAmpOptimWrapper,
                             NonFiniteSkipOptimWrapper)

__all__ = [
    'AtomicLocalBackend', 'CheckpointWriteError', 'CPUAmpOptimWrapper',
    'GroupSummaryOptimWrapperConstructor',
    'NonFiniteSkipAmpOptimWrapper', 'NonFiniteSkipOptimWrapper'
]
