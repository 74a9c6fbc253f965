from .dataset_check_hook import DatasetCheckHook
from .finite_checkpoint_hook import FiniteCheckpointHook
from .rng_state_hook import RNGStateHook

__all__ = ['DatasetCheckHook', 'FiniteCheckpointHook', 'RNGStateHook']
