"""Conversions between checkpoint formats.

* :func:`convert_timm_efficientformerv2`: timm's EfficientFormerV2 weights
  (``efficientformerv2_{s0,s1,s2,l}.snap_dist_in1k``) to the key names of the
  original EfficientFormerV2 release (``eformer_*_450.pth``), which are the
  names of this package's backbone.
* :func:`convert_cgrseg_0x`: a CGRSeg checkpoint written by mmseg 0.x
  (mmcv runner: ``meta``, ``state_dict``, ``optimizer``) to an mmseg 1.x
  (MMEngine) checkpoint.

Both refuse keys they do not know, listing them, instead of dropping them.
"""
import math
import os
import re
from collections import OrderedDict
from typing import Dict, List, Optional, Tuple

import mmengine
import numpy as np
import torch
import torch.nn as nn

from .checkpoint import (EFFICIENTFORMERV2_WIDTHS, CheckpointError,
                         _listing, checkpoint_format, describe_checkpoint,
                         mismatch_report, read_checkpoint, state_dict_of)

_BN_OR_CONV_LEAVES = ('weight', 'bias', 'running_mean', 'running_var',
                      'num_batches_tracked')

# timm module path -> original module path, inside one block.
_TIMM_MLP = {
    'mlp.fc1.conv': 'mlp.fc1',
    'mlp.fc1.bn': 'mlp.norm1',
    'mlp.mid.conv': 'mlp.mid',
    'mlp.mid.bn': 'mlp.mid_norm',
    'mlp.fc2.conv': 'mlp.fc2',
    'mlp.fc2.bn': 'mlp.norm2',
}
# timm ConvNorm (``.conv``/``.bn``) vs the original nn.Sequential (0, 1);
# the output projections have an activation in front in the original (so
# 1, 2), and the attention downsample's local query conv is wrapped in a
# Sequential in the original.
_TIMM_ATTENTION = {
    **{f'{name}.{part}': f'{name}.{index}'
       for name in ('q', 'k', 'v', 'v_local', 'stride_conv')
       for part, index in (('conv', 0), ('bn', 1))},
    'proj.conv': 'proj.1',
    'proj.bn': 'proj.2',
    'talking_head1': 'talking_head1',
    'talking_head2': 'talking_head2',
}
_TIMM_DOWNSAMPLE_ATTENTION = {
    'q.local': 'q.local.0',
    'q.proj.conv': 'q.proj.0',
    'q.proj.bn': 'q.proj.1',
    **{f'{name}.{part}': f'{name}.{index}'
       for name in ('k', 'v', 'v_local')
       for part, index in (('conv', 0), ('bn', 1))},
    'proj.conv': 'proj.1',
    'proj.bn': 'proj.2',
}
_TIMM_STEM = {
    'stem.conv1.conv': 'patch_embed.0',
    'stem.conv1.bn': 'patch_embed.1',
    'stem.conv2.conv': 'patch_embed.3',
    'stem.conv2.bn': 'patch_embed.4',
}
# The ImageNet classifier: final norm, head and distillation head.
_TIMM_CLASSIFIER = {'norm': 'norm', 'head': 'head', 'head_dist': 'dist_head'}


def _map_module(path: str, table: Dict[str, str]) -> Optional[str]:
    """``table[module] + '.' + leaf`` for ``path = module.leaf``, if known."""
    module, _, leaf = path.rpartition('.')
    if module in table and leaf in _BN_OR_CONV_LEAVES:
        return f'{table[module]}.{leaf}'
    return None


def _timm_key_to_original(key: str, attention_stages: set) -> Optional[str]:
    """The original-release name of one timm key, or None if unknown."""
    stem = _map_module(key, {**_TIMM_STEM, **_TIMM_CLASSIFIER})
    if stem is not None:
        return stem
    match = re.fullmatch(r'stages\.(\d+)\.blocks\.(\d+)\.(.+)', key)
    if match:
        stage, block, rest = match.groups()
        prefix = f'network.{2 * int(stage)}.{block}.'
        scales = {'ls1.gamma': 'layer_scale_1', 'ls2.gamma': 'layer_scale_2'}
        if rest in scales:
            return prefix + scales[rest]
        if rest == 'token_mixer.attention_biases':
            return prefix + rest
        if rest.startswith('token_mixer.'):
            inner = _map_module(rest[len('token_mixer.'):], _TIMM_ATTENTION)
            return None if inner is None else f'{prefix}token_mixer.{inner}'
        inner = _map_module(rest, _TIMM_MLP)
        return None if inner is None else prefix + inner
    match = re.fullmatch(r'stages\.(\d+)\.downsample\.(.+)', key)
    if match and int(match.group(1)) > 0:
        stage, rest = int(match.group(1)), match.group(2)
        prefix = f'network.{2 * stage - 1}.'
        if rest == 'attn.attention_biases':
            return prefix + rest
        if rest.startswith('attn.'):
            inner = _map_module(rest[len('attn.'):],
                                _TIMM_DOWNSAMPLE_ATTENTION)
            return None if inner is None else f'{prefix}attn.{inner}'
        # The attention downsample keeps its conv branch as conv/bn, the
        # plain one calls it proj/norm.
        conv, norm = (('conv', 'bn') if stage in attention_stages else
                      ('proj', 'norm'))
        inner = _map_module(rest, {'conv.conv': conv, 'conv.bn': norm})
        return None if inner is None else prefix + inner
    return None


def attention_bias_index(bias_key: str, num_offsets: int) -> torch.Tensor:
    """The original release's ``attention_bias_idxs`` for an ImageNet bias
    table of ``num_offsets`` entries (timm does not store them).

    The tables are laid out for a square key grid of side r = √num_offsets.
    Attention4D: queries = keys, entry |Δy|·r + |Δx|. Attention downsample
    (``network.*.attn.``): queries on the ⌈r/2⌉ grid at stride ⌈r/⌈r/2⌉⌉.
    This is the original's numbering (offsets in order of first occurrence,
    all of which occur for the first query).
    """
    side = math.isqrt(num_offsets)
    if side * side != num_offsets:
        raise CheckpointError(
            f'{bias_key} has {num_offsets} entries per head, which is not '
            f'a square token grid: not an EfficientFormerV2 bias table.')
    keys = torch.arange(side)
    if re.fullmatch(r'network\.\d+\.attn\.attention_biases', bias_key):
        query_side = math.ceil(side / 2)
        queries = torch.arange(query_side) * math.ceil(side / query_side)
    else:
        queries = keys
    dy = (queries[:, None, None, None] - keys[None, None, :, None]).abs()
    dx = (queries[None, :, None, None] - keys[None, None, None, :]).abs()
    index = dy * side + dx
    return index.reshape(len(queries)**2, side * side)


def convert_timm_efficientformerv2(
        state_dict: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """timm EfficientFormerV2 weights under the original release's names.

    Renames every key (``stem.conv1.conv`` → ``patch_embed.0``,
    ``stages.i.blocks.j`` → ``network.2i.j``, ``stages.i.downsample`` →
    ``network.2i-1``, ConvNorm ``conv``/``bn`` → Sequential indices,
    ``head_dist`` → ``dist_head``, ...), reshapes the layer scales from (C,)
    to (C, 1, 1) and adds the ``attention_bias_idxs`` buffers that timm
    recomputes instead of storing. The classifier (``norm``, ``head``,
    ``dist_head``) is kept; :func:`backbone_state_dict` drops it.

    Raises:
        CheckpointError: listing every key that is not part of timm's
            EfficientFormerV2.
    """
    attention_stages = {
        int(k.split('.')[1])
        for k in state_dict if re.match(r'stages\.\d+\.downsample\.attn\.', k)
    }
    converted: Dict[str, torch.Tensor] = OrderedDict()
    unknown: List[str] = []
    for key, value in state_dict.items():
        new_key = _timm_key_to_original(key, attention_stages)
        if new_key is None:
            unknown.append(key)
            continue
        if new_key.endswith(('layer_scale_1', 'layer_scale_2')):
            value = value.reshape(-1, 1, 1)
        converted[new_key] = value
        if new_key.endswith('attention_biases'):
            idxs_key = new_key[:-len('attention_biases')] + \
                'attention_bias_idxs'
            converted[idxs_key] = attention_bias_index(new_key,
                                                       value.shape[-1])
    if unknown:
        raise CheckpointError(
            'keys that timm\'s EfficientFormerV2 does not have (it has '
            'stem.*, stages.*, norm.*, head.*, head_dist.*):\n'
            f'{_listing("unknown keys", unknown, limit=20)}\n'
            'Is this an EfficientFormerV2 checkpoint?')
    return converted


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


def efficientformerv2_arch(state_dict: Dict[str, torch.Tensor],
                           prefix: str = '') -> str:
    """'s0', 's1', 's2' or 'l', from the stage widths of the weights (keys
    in the original naming, after ``prefix``)."""
    names = ('patch_embed.3.weight', 'network.1.proj.weight',
             'network.3.proj.weight', 'network.5.conv.weight')
    missing = [prefix + n for n in names if prefix + n not in state_dict]
    if missing:
        raise CheckpointError(
            f'cannot tell the EfficientFormerV2 size: no {missing}.')
    widths = tuple(state_dict[prefix + n].shape[0] for n in names)
    if widths not in EFFICIENTFORMERV2_WIDTHS:
        raise CheckpointError(
            f'stage widths {widths} are not those of an EfficientFormerV2 '
            f'size ({sorted(EFFICIENTFORMERV2_WIDTHS.values())}).')
    return EFFICIENTFORMERV2_WIDTHS[widths].split()[0]


def _plain(value):
    """numpy values (and containers of them) as Python builtins, so that
    the converted file loads with ``weights_only=True``."""
    if isinstance(value, (np.ndarray, np.generic)):
        return value.tolist()
    if isinstance(value, (list, tuple)):
        return type(value)(_plain(v) for v in value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


_0X_PROVENANCE = ('mmcv_version', 'mmseg_version', 'iter', 'epoch', 'time')


def convert_cgrseg_0x(ckpt: dict,
                      source: str = '') -> Tuple[dict, List[str]]:
    """The mmseg 1.x (MMEngine) checkpoint of a 0.x CGRSeg checkpoint.

    The weights keep their keys (the port's keys are the original's), less
    DDP's ``module.`` prefix. ``meta.CLASSES``/``PALETTE`` become
    ``meta.dataset_meta`` (``classes``/``palette``, read by
    ``mmseg.apis.init_model``); versions and the iteration are kept under
    ``meta.converted_from``.

    Returns:
        (the new checkpoint, the top-level and ``meta`` entries left out,
        e.g. ``optimizer`` and ``meta.config``).

    Raises:
        CheckpointError: if ``ckpt`` is not an mmseg segmentor checkpoint,
            or is already a 1.x one.
    """
    state_dict = state_dict_of(ckpt)
    if checkpoint_format(state_dict) != 'segmentor':
        raise CheckpointError(
            f'{source or "the checkpoint"} is {describe_checkpoint(ckpt)}, '
            f'not an mmseg 0.x CGRSeg checkpoint (keys backbone.*, '
            f'decode_head.*).')
    meta = ckpt.get('meta') or {}
    if 'mmengine_version' in meta:
        raise CheckpointError(
            f'{source or "the checkpoint"} is already an mmseg 1.x '
            f'(MMEngine) checkpoint; load it as it is.')
    origin = {'file': os.path.basename(source)} if source else {}
    origin.update({k: _plain(meta[k]) for k in _0X_PROVENANCE if k in meta})
    new_meta = {
        'mmengine_version': mmengine.__version__,
        'converted_from': origin
    }
    if 'CLASSES' in meta:
        new_meta['dataset_meta'] = {
            'classes': _plain(meta['CLASSES']),
            'palette': _plain(meta.get('PALETTE'))
        }
    kept = set(_0X_PROVENANCE) | {'CLASSES', 'PALETTE'}
    left_out = [k for k in ckpt if k not in ('meta', 'state_dict')]
    left_out += [f'meta.{k}' for k in meta if k not in kept]
    return {'meta': new_meta, 'state_dict': state_dict}, left_out


def check_state_dict(model: nn.Module, state_dict: Dict[str, torch.Tensor],
                     what: str) -> None:
    """Raise a :class:`CheckpointError` listing the missing, unexpected and
    mis-shaped keys of ``state_dict`` for ``model`` (``what`` names both).
    """
    report = mismatch_report(model, state_dict)
    if report:
        raise CheckpointError(f'{what} does not fit:\n{report}')
