from .batch_check_hook import BatchCheckHook
from .crash_safe_checkpoint_hook import CrashSafeCheckpointHook
from .dataset_check_hook import DatasetCheckHook
from .distill_loss_weight_hook import DistillLossWeightHook
from .distill_state_hook import DistillStateHook
from .finite_checkpoint_hook import FiniteCheckpointHook
from .rng_state_hook import RNGStateHook
from .signal_stop_hook import (SignalStopHook, TrainingStopped,
                               signal_exit_status)

__all__ = [
    'BatchCheckHook', 'CrashSafeCheckpointHook', 'DatasetCheckHook',
    'DistillLossWeightHook', 'DistillStateHook', 'FiniteCheckpointHook',
    'RNGStateHook', 'SignalStopHook', 'TrainingStopped', 'signal_exit_status'
]
