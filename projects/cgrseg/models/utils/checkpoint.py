"""Reading checkpoints from wherever MMEngine reads them, and checking them
against a model, with errors that say what the file is and how to use it
instead of a bare key listing.

A checkpoint *source* is anything MMEngine's ``CheckpointLoader`` takes: a
local path, an ``http(s)://`` URL (downloaded once into
``<torch hub dir>/checkpoints``, see :mod:`.checkpoint_download`), or one of
its other schemes (``s3://``, ``open-mmlab://``, ...), each read by
:mod:`.checkpoint_schemes` with ``torch.load(weights_only=True)`` (or
``safetensors`` for ``.safetensors`` files), so that ``load_from``,
``--resume`` and ``init_cfg`` read through the same code and errors.

Generic code: it knows segmentor checkpoints (``backbone.*``,
``decode_head.*``) and nothing of any backbone; a backbone module registers
its ImageNet weight layouts in :data:`BACKBONE_FORMATS` and a phrase for its
weights in :data:`BACKBONE_DESCRIBERS`.
"""
from collections import OrderedDict
from typing import Callable, Dict, List, NamedTuple, Optional

import torch
import torch.nn as nn

from .checkpoint_download import CheckpointError
from .checkpoint_schemes import load_checkpoint

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


def read_checkpoint(source: str) -> dict:
    """The checkpoint dict at ``source`` (a path, a URL or another MMEngine
    scheme), on the CPU.

    Raises:
        FileNotFoundError: for a local path that does not exist.
        CheckpointError: one message naming the source and the cause, for a
            failed download, a corrupt file, or unsafe pickled objects.
    """
    ckpt = load_checkpoint(source, map_location='cpu')
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
