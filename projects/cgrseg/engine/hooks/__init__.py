from .batch_check_hook import BatchCheckHook
from .dataset_check_hook import DatasetCheckHook
from .distill_checkpoint_hook import DistillCheckpointHook
from .distill_loss_weight_hook import DistillLossWeightHook
from .finite_checkpoint_hook import FiniteCheckpointHook
from .rng_state_hook import RNGStateHook
from .signal_stop_hook import SignalStopHook, signal_exit_status

__all__ = [
    'BatchCheckHook', 'DatasetCheckHook', 'DistillCheckpointHook',
    'DistillLossWeightHook', 'FiniteCheckpointHook', 'RNGStateHook', 'SignalStopHook',
    'signal_exit_status'
]
