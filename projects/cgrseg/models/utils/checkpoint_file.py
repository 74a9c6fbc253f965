"""Reading one local checkpoint file safely: ``.safetensors`` with
``safetensors``, anything else with ``torch.load(weights_only=True)``, and
one :class:`CheckpointError` line for a file that is truncated, corrupt or
holds Python objects."""
import os
import pickle
from typing import List, Optional

import safetensors.torch
import torch
from safetensors import SafetensorError

from .checkpoint_download import CheckpointError


def _corrupt(source: str, err: Exception) -> CheckpointError:
    return CheckpointError(
        f'cannot read checkpoint {source!r}: it is truncated, corrupt or not '
        f'a PyTorch checkpoint ({type(err).__name__}: '
        f'{(str(err).splitlines() or [""])[0]}).')


def _unsafe_globals(path: str) -> Optional[List[str]]:
    """The globals a ``torch.save`` file would unpickle beyond tensors, or
    None for a file that is no such file (e.g. an HTML page)."""
    try:
        return torch.serialization.get_unsafe_globals_in_checkpoint(path)
    except (ValueError, RuntimeError, pickle.UnpicklingError):
        return None


def _torch_load(path: str, source: str, map_location) -> dict:
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        needed = _unsafe_globals(path) if 'Weights only load failed' in str(
            err) else None
        if not needed:
            raise _corrupt(source, err) from err
        raise CheckpointError(
            f'checkpoint {source!r} holds Python objects that cannot be '
            f'loaded safely (torch.load with weights_only=True): {needed}. '
            f'If you trust the file, extract the weights where it was made, '
            f'e.g. torch.save({{"state_dict": ckpt["state_dict"], "meta": '
            f'{{"CLASSES": ..., "PALETTE": ...}}}}, "clean.pth"), and use '
            f'that file. Never load untrusted files with weights_only=False.'
        ) from err
    except (RuntimeError, EOFError, ValueError) as err:
        raise _corrupt(source, err) from err


def _safetensors_load(path: str, source: str) -> dict:
    try:
        return dict(safetensors.torch.load_file(path, device='cpu'))
    except (SafetensorError, OSError) as err:
        raise CheckpointError(
            f'cannot read {source!r}: not a valid safetensors file '
            f'({err}).') from err


def load_file(path: str, source: Optional[str] = None,
              map_location='cpu') -> dict:
    """The checkpoint dict in a local file (``.safetensors`` or a
    ``torch.save`` file); ``source`` names it in errors (e.g. its URL)."""
    source = source or path
    if not os.path.isfile(path):
        raise FileNotFoundError(f'checkpoint file not found: {source!r}')
    if path.endswith('.safetensors'):
        ckpt = _safetensors_load(path, source)
    else:
        ckpt = _torch_load(path, source, map_location)
    if not isinstance(ckpt, dict):
        raise CheckpointError(f'checkpoint {source!r} holds a '
                              f'{type(ckpt).__name__}, not a dict of '
                              f'tensors.')
    return ckpt
