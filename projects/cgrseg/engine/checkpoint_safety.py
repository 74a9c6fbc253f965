"""Lets ``torch.load(weights_only=True)`` (the default since torch 2.6) read
MMEngine checkpoints, by allowing exactly what they contain besides tensors:

* the message hub's ``HistoryBuffer`` and the NumPy arrays, scalars and
  dtypes it stores;
* ``getattr``, but only in the one form MMEngine's pickles use it,
  ``getattr(HistoryBuffer, <statistics method>)`` (each buffer pickles its
  table of statistics methods); any other ``getattr`` is refused.

The safety check stays on for everything else."""
import pickle

import numpy as np
import torch
from mmengine.logging import HistoryBuffer

_multiarray = np._core.multiarray if hasattr(np, '_core') else \
    np.core.multiarray
DTYPE_NAMES = ('float64', 'float32', 'float16', 'int64', 'int32', 'int16',
               'int8', 'uint8', 'bool')
HISTORY_BUFFER_METHODS = ('min', 'max', 'current', 'mean')


def history_buffer_method(obj, name: str):
    """``getattr`` restricted to ``HistoryBuffer``'s statistics methods."""
    if obj is HistoryBuffer and (name in HISTORY_BUFFER_METHODS
                                 or name in HistoryBuffer._statistics_methods):
        return getattr(obj, name)
    raise pickle.UnpicklingError(
        f'refused getattr({obj!r}, {name!r}) while loading a checkpoint '
        f'with weights_only=True: only HistoryBuffer statistics methods are '
        f'allowed.')


def mmengine_checkpoint_globals() -> list:
    """The allowed globals; NumPy's pickling helpers under both their NumPy 1
    (``numpy.core``) and NumPy 2 (``numpy._core``) names."""
    allowed = [HistoryBuffer, np.ndarray, np.dtype,
               (history_buffer_method, 'builtins.getattr')]
    allowed += [type(np.dtype(name)) for name in DTYPE_NAMES]
    for func in (_multiarray._reconstruct, _multiarray.scalar):
        allowed += [(func, f'numpy.core.multiarray.{func.__name__}'),
                    (func, f'numpy._core.multiarray.{func.__name__}')]
    return allowed


def allow_mmengine_checkpoints() -> None:
    torch.serialization.add_safe_globals(mmengine_checkpoint_globals())
