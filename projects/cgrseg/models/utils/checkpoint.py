"""Reading checkpoints and checking them against a model, with errors that
say what the file is and how to use it instead of a bare key listing.

Formats recognised (see :func:`checkpoint_format`):

* ``segmentor``: an mmseg segmentor (CGRSeg 0.x/mmcv-runner or 1.x/mmengine;
  keys ``backbone.*``/``decode_head.*``, usually under ``state_dict``);
* ``efficientformerv2-imagenet``: the EfficientFormerV2 ImageNet release
  (``{'model': state_dict}``, keys ``patch_embed.*``, ``network.*``,
  ``head.*``, ``dist_head.*``);
* ``timm``: timm's EfficientFormerV2 (keys ``stem.*``, ``stages.*``).
"""
import os
import pickle
from collections import OrderedDict
from typing import Dict, List, Optional

import torch
import torch.nn as nn

from ..backbones.efficientformer_v2 import (arch_label, arch_of_widths,
                                            stage_widths)


class CheckpointError(ValueError):
    """A checkpoint that cannot be used for the model at hand."""


def _corrupt(path: str, err: Exception) -> CheckpointError:
    return CheckpointError(
        f'cannot read checkpoint {path!r}: it is truncated, corrupt or not a '
        f'PyTorch checkpoint ({type(err).__name__}: '
        f'{str(err).splitlines()[0]}).')


def read_checkpoint(path: str) -> dict:
    """``torch.load`` with ``weights_only=True`` and errors that name the file.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f'checkpoint file not found: {path!r}')
    try:
        ckpt = torch.load(path, map_location='cpu', weights_only=True)
    except pickle.UnpicklingError as err:
        if 'Weights only load failed' not in str(err):
            raise _corrupt(path, err) from err
        needed = torch.serialization.get_unsafe_globals_in_checkpoint(path)
        raise CheckpointError(
            f'checkpoint {path!r} holds Python objects that cannot be loaded '
            f'safely (torch.load with weights_only=True): {needed}. If you '
            f'trust the file, extract the weights where it was made, e.g. '
            f'torch.save({{"state_dict": ckpt["state_dict"], "meta": '
            f'{{"CLASSES": ..., "PALETTE": ...}}}}, "clean.pth"), and use '
            f'that file. Never load untrusted files with weights_only=False.'
        ) from err
    except (RuntimeError, EOFError) as err:
        raise _corrupt(path, err) from err
    if not isinstance(ckpt, dict):
        raise CheckpointError(f'checkpoint {path!r} holds a '
                              f'{type(ckpt).__name__}, not a dict of tensors.')
    return ckpt


def read_weights(path: str) -> dict:
    """A checkpoint dict from ``.pth``/``.bin`` (``torch.load`` with
    ``weights_only=True``) or ``.safetensors`` (timm's hub format)."""
    if not path.endswith('.safetensors'):
        return read_checkpoint(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f'checkpoint file not found: {path!r}')
    try:
        from safetensors.torch import load_file
    except ImportError as err:
        raise CheckpointError(
            f'{path!r} is a safetensors file: `pip install safetensors`, or '
            f'use the hub\'s pytorch_model.bin instead.') from err
    return dict(load_file(path, device='cpu'))


def state_dict_of(ckpt: dict) -> Dict[str, torch.Tensor]:
    """The weights inside a checkpoint dict (``state_dict``/``model``/plain),
    with DDP's ``module.`` prefix removed."""
    for key in ('state_dict', 'model'):
        if isinstance(ckpt.get(key), dict):
            ckpt = ckpt[key]
            break
    return OrderedDict((k[len('module.'):] if k.startswith('module.') else k,
                        v) for k, v in ckpt.items()
                       if isinstance(v, torch.Tensor))


def checkpoint_format(state_dict: Dict[str, torch.Tensor]) -> str:
    keys = list(state_dict)
    if any(k.startswith(('backbone.', 'decode_head.')) for k in keys):
        return 'segmentor'
    if 'patch_embed.0.weight' in state_dict and any(
            k.startswith('network.') for k in keys):
        return 'efficientformerv2-imagenet'
    if any(k.startswith(('stem.conv1.', 'stages.')) for k in keys):
        return 'timm'
    return 'unknown'


def _backbone_size(state_dict: Dict[str, torch.Tensor], prefix: str) -> str:
    """``'EfficientFormerV2-s1 (CGRSeg-T)'``, or '' without the keys."""
    widths = stage_widths(state_dict, prefix)
    if widths is None:
        return ''
    arch = arch_of_widths(widths)
    return 'EfficientFormerV2-' + (
        arch_label(arch) if arch else f'unknown widths {widths}')


def describe_checkpoint(ckpt: dict) -> str:
    """One line saying what a checkpoint looks like."""
    state_dict = state_dict_of(ckpt)
    fmt = checkpoint_format(state_dict)
    if fmt == 'segmentor':
        meta = ckpt.get('meta') or {}
        if 'mmengine_version' in meta:
            era = '1.x (mmengine)'
        elif 'mmcv_version' in meta:
            era = '0.x (mmcv-runner)'
        else:
            era = 'version-unknown'
        parts = [f'an mmseg {era} segmentor checkpoint']
        arch = _backbone_size(state_dict, 'backbone.')
        if arch:
            parts.append(f'backbone {arch}')
        if 'decode_head.conv_seg.weight' in state_dict:
            n = state_dict['decode_head.conv_seg.weight'].shape[0]
            parts.append(f'{n} classes')
        return ', '.join(parts)
    if fmt == 'efficientformerv2-imagenet':
        arch = _backbone_size(state_dict, '')
        return (f'an EfficientFormerV2 ImageNet checkpoint (original release '
                f'format{", " + arch if arch else ""})')
    if fmt == 'timm':
        return 'a timm EfficientFormerV2 ImageNet checkpoint'
    return 'a checkpoint of unknown format'


def listing(title: str, keys: List[str], limit: int = 8) -> str:
    shown = '\n    '.join(keys[:limit])
    more = f'\n    ... and {len(keys) - limit} more' if len(keys) > limit else ''
    return f'  {title} ({len(keys)}):\n    {shown}{more}'


def mismatch_report(model: nn.Module,
                    state_dict: Dict[str, torch.Tensor]) -> Optional[str]:
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
    if fmt in ('efficientformerv2-imagenet', 'timm'):
        return ('This is a backbone (ImageNet) checkpoint, not a segmentor: '
                "use it as model.backbone.init_cfg=dict(type='Pretrained', "
                'checkpoint=...) and train.')
    if fmt == 'segmentor':
        return ('Check that the config matches the checkpoint: backbone '
                'arch, head in_channels/channels and num_classes.')
    return 'It is not a CGRSeg checkpoint.'


def load_segmentor_checkpoint(model: nn.Module, path: str) -> dict:
    """Load a segmentor checkpoint (0.x or 1.x) strictly.

    Raises:
        CheckpointError: counting the missing, unexpected and mis-shaped
            keys (naming the first 8 of each), saying what the file looks
            like and what to do instead.

    Returns:
        the checkpoint dict (e.g. for its ``meta``).
    """
    ckpt = read_checkpoint(path)
    state_dict = state_dict_of(ckpt)
    report = mismatch_report(model, state_dict)
    if report:
        raise CheckpointError(
            f'checkpoint {path!r} does not fit this model. It looks like '
            f'{describe_checkpoint(ckpt)}.\n{report}\n'
            f'{_advice(checkpoint_format(state_dict))}')
    model.load_state_dict(state_dict, strict=True)
    return ckpt
