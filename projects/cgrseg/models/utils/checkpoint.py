"""Reading checkpoints from wherever MMEngine reads them, and checking them
against a model, with errors that say what the file is and how to use it
instead of a bare key listing.

A checkpoint *source* is anything MMEngine's ``CheckpointLoader`` takes: a
local path, an ``http(s)://`` URL (downloaded once into
``<torch hub dir>/checkpoints``, see :mod:`.checkpoint_download`), or one of
its other schemes (``s3://``, ``open-mmlab://``, ...). ``.safetensors`` files
(Hugging Face's format) are read with ``safetensors``, everything else with
``torch.load(weights_only=True)``.

Importing this module registers the local and ``http(s)://`` readers in
MMEngine's ``CheckpointLoader`` (its extension point for schemes), so that
``load_from``, ``--resume`` and ``init_cfg`` read through the same code: with
``weights_only=True`` (MMEngine's own URL loader unpickles arbitrary
objects), ``.safetensors`` support and these errors.

Generic code: it knows segmentor checkpoints (``backbone.*``,
``decode_head.*``) and nothing of any backbone; a backbone module registers
its ImageNet weight layouts in :data:`BACKBONE_FORMATS` and a phrase for its
weights in :data:`BACKBONE_DESCRIBERS`.
"""
import os
import pickle
from collections import OrderedDict
from typing import Callable, Dict, List, NamedTuple, Optional

import safetensors.torch
import torch
import torch.nn as nn
from mmengine.dist import barrier, get_dist_info
from mmengine.runner.checkpoint import CheckpointLoader
from safetensors import SafetensorError

from .checkpoint_download import (CheckpointError, cached_download,
                                  forget_download)

StateDict = Dict[str, torch.Tensor]


class BackboneFormat(NamedTuple):
    """A backbone's ImageNet weight layout (not a segmentor checkpoint)."""
    matches: Callable[[StateDict], bool]
    describe: Callable[[StateDict], str]


#: Backbone weight layouts by name, e.g. ``'timm'``; registered by the
#: backbone modules that read them.
BACKBONE_FORMATS: Dict[str, BackboneFormat] = {}
#: ``(state_dict, prefix) -> phrase or None``: what the backbone weights
#: under ``prefix`` are, e.g. ``'backbone EfficientFormerV2-s1 (CGRSeg-T)'``.
BACKBONE_DESCRIBERS: List[Callable[[StateDict, str], Optional[str]]] = []


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


@CheckpointLoader.register_scheme(prefixes='', force=True)
def load_from_local(filename: str, map_location=None) -> dict:
    """MMEngine's local scheme, through :func:`load_file`."""
    return load_file(os.path.expanduser(filename), map_location=map_location)


def _download_and_load(url: str, map_location) -> dict:
    path, downloaded = cached_download(url)
    try:
        return load_file(path, source=url, map_location=map_location)
    except CheckpointError as err:
        # A file that does not load must not stay where the next run would
        # take it for the checkpoint.
        raise forget_download(url, path, downloaded, err) from err


@CheckpointLoader.register_scheme(prefixes=('http://', 'https://'),
                                  force=True)
def load_from_http(filename: str, map_location=None) -> dict:
    """MMEngine's URL scheme (rank 0 downloads first, the other ranks then
    read its cached file), downloading through :mod:`.checkpoint_download`
    and reading through :func:`load_file`."""
    rank, world_size = get_dist_info()
    if rank == 0:
        ckpt = _download_and_load(filename, map_location)
    if world_size > 1:
        barrier()
        if rank > 0:
            ckpt = _download_and_load(filename, map_location)
    return ckpt


def read_checkpoint(source: str) -> dict:
    """The checkpoint dict at ``source`` (a path, a URL or another MMEngine
    scheme), on the CPU.

    Raises:
        FileNotFoundError: for a local path that does not exist.
        CheckpointError: one message naming the source and the cause, for a
            failed download, a corrupt file, or unsafe pickled objects.
    """
    ckpt = CheckpointLoader.load_checkpoint(source, map_location='cpu')
    if not isinstance(ckpt, dict):
        raise CheckpointError(f'checkpoint {source!r} holds a '
                              f'{type(ckpt).__name__}, not a dict of '
                              f'tensors.')
    return ckpt


def is_local_path(source: str) -> bool:
    """Whether ``source`` is a local file, not a URL or another MMEngine
    scheme (``s3://``, ``open-mmlab://``, ...: all have ``://``)."""
    return '://' not in source


def state_dict_of(ckpt: dict) -> StateDict:
    """The weights inside a checkpoint dict (``state_dict``/``model``/plain),
    with DDP's ``module.`` prefix removed."""
    for key in ('state_dict', 'model'):
        if isinstance(ckpt.get(key), dict):
            ckpt = ckpt[key]
            break
    return OrderedDict((k[len('module.'):] if k.startswith('module.') else k,
                        v) for k, v in ckpt.items()
                       if isinstance(v, torch.Tensor))


def checkpoint_format(state_dict: StateDict) -> str:
    """``'segmentor'``, a :data:`BACKBONE_FORMATS` name, or ``'unknown'``."""
    if any(k.startswith(('backbone.', 'decode_head.')) for k in state_dict):
        return 'segmentor'
    return next((name for name, fmt in BACKBONE_FORMATS.items()
                 if fmt.matches(state_dict)), 'unknown')


def _segmentor_era(meta: dict) -> str:
    if 'mmengine_version' in meta:
        return '1.x (mmengine)'
    if 'mmcv_version' in meta:
        return '0.x (mmcv-runner)'
    return 'version-unknown'


def describe_checkpoint(ckpt: dict) -> str:
    """One line saying what a checkpoint looks like."""
    state_dict = state_dict_of(ckpt)
    fmt = checkpoint_format(state_dict)
    if fmt == 'segmentor':
        parts = [f'an mmseg {_segmentor_era(ckpt.get("meta") or {})} '
                 f'segmentor checkpoint']
        parts += [phrase for phrase in (describe(state_dict, 'backbone.')
                                        for describe in BACKBONE_DESCRIBERS)
                  if phrase]
        if 'decode_head.conv_seg.weight' in state_dict:
            n = state_dict['decode_head.conv_seg.weight'].shape[0]
            parts.append(f'{n} classes')
        return ', '.join(parts)
    if fmt in BACKBONE_FORMATS:
        return BACKBONE_FORMATS[fmt].describe(state_dict)
    return 'a checkpoint of unknown format'


def listing(title: str, keys: List[str], limit: int = 8) -> str:
    shown = '\n    '.join(keys[:limit])
    more = f'\n    ... and {len(keys) - limit} more' if len(keys) > limit else ''
    return f'  {title} ({len(keys)}):\n    {shown}{more}'


def mismatch_report(model: nn.Module,
                    state_dict: StateDict) -> Optional[str]:
    """Missing, unexpected and wrongly shaped keys, or None if all fit."""
    own = model.state_dict()
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    shapes = [
        f'{k}: checkpoint {tuple(v.shape)} vs model {tuple(own[k].shape)}'
        for k, v in state_dict.items() if k in own and v.shape != own[k].shape
    ]
    parts = [
        listing(title, keys)
        for title, keys in (('missing in checkpoint', missing),
                            ('unexpected in checkpoint', unexpected),
                            ('shape mismatch', shapes)) if keys
    ]
    return '\n'.join(parts) if parts else None


def _advice(fmt: str) -> str:
    if fmt in BACKBONE_FORMATS:
        return ('This is a backbone (ImageNet) checkpoint, not a segmentor: '
                "use it as model.backbone.init_cfg=dict(type='Pretrained', "
                'checkpoint=...) and train.')
    if fmt == 'segmentor':
        return ('Check that the config matches the checkpoint: backbone '
                'arch, head in_channels/channels and num_classes.')
    return 'It is not a CGRSeg checkpoint.'


def segmentor_weights(model: nn.Module, ckpt: dict,
                      source: str) -> StateDict:
    """The weights of a segmentor checkpoint (0.x or 1.x) read from
    ``source``, after checking strictly that they fit ``model``.

    Raises:
        CheckpointError: counting the missing, unexpected and mis-shaped
            keys (naming the first 8 of each), saying what the file looks
            like and what to do instead.
    """
    state_dict = state_dict_of(ckpt)
    report = mismatch_report(model, state_dict)
    if report:
        raise CheckpointError(
            f'checkpoint {source!r} does not fit this model. It looks like '
            f'{describe_checkpoint(ckpt)}.\n{report}\n'
            f'{_advice(checkpoint_format(state_dict))}')
    return state_dict


def load_segmentor_checkpoint(model: nn.Module, source: str) -> dict:
    """Load a segmentor checkpoint (a path or URL) strictly into ``model``
    (errors: :func:`segmentor_weights`) and return it (e.g. for its
    ``meta``)."""
    ckpt = read_checkpoint(source)
    model.load_state_dict(segmentor_weights(model, ckpt, source),
                          strict=True)
    return ckpt
