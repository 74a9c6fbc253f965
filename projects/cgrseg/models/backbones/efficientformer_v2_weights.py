"""EfficientFormerV2 weights: the size of a checkpoint, timm's key names, and
initialising the backbone from ImageNet weights. Importing it registers the
two ImageNet layouts and a description of the backbone's weights with the
generic checkpoint code (:mod:`..utils.checkpoint`).

The backbone's keys are those of the original EfficientFormerV2 release
(``eformer_*_450.pth``); timm's (``efficientformerv2_*.snap_dist_in1k``) are
renamed to them by :func:`convert_timm_efficientformerv2`.
"""
import math
import re
from collections import OrderedDict
from typing import Dict, List, Optional

import torch
import torch.nn as nn
from mmengine.logging import MMLogger

from ..utils.checkpoint import (BACKBONE_DESCRIBERS, BACKBONE_FORMATS,
                                BackboneFormat, CheckpointError,
                                checkpoint_format, describe_checkpoint,
                                listing, mismatch_report, read_checkpoint,
                                state_dict_of)
from .efficientformer_v2_arch import (ARCH_SETTINGS, WIDTH_KEYS,
                                      arch_label, arch_of_widths,
                                      relative_offset_index, stage_widths)


def efficientformerv2_arch(state_dict: Dict[str, torch.Tensor],
                           prefix: str = '') -> str:
    """'s0', 's1', 's2' or 'l', from the stage widths of the weights (keys
    in the original naming, after ``prefix``)."""
    widths = stage_widths(state_dict, prefix)
    if widths is None:
        missing = [prefix + k for k in WIDTH_KEYS
                   if prefix + k not in state_dict]
        raise CheckpointError(
            f'cannot tell the EfficientFormerV2 size: no {missing}.')
    arch = arch_of_widths(widths)
    if arch is None:
        raise CheckpointError(
            f'stage widths {widths} are not those of an EfficientFormerV2 '
            f'size ({sorted(arch_label(a) for a in ARCH_SETTINGS)}).')
    return arch


def describe_efficientformerv2(state_dict: Dict[str, torch.Tensor],
                               prefix: str = '') -> Optional[str]:
    """``'backbone EfficientFormerV2-s1 (CGRSeg-T)'`` for weights under
    ``prefix``, or None without EfficientFormerV2's width keys."""
    widths = stage_widths(state_dict, prefix)
    if widths is None:
        return None
    arch = arch_of_widths(widths)
    return 'backbone EfficientFormerV2-' + (
        arch_label(arch) if arch else f'unknown widths {widths}')


def _is_original_release(state_dict: Dict[str, torch.Tensor]) -> bool:
    return 'patch_embed.0.weight' in state_dict and any(
        k.startswith('network.') for k in state_dict)


def _describe_original_release(state_dict: Dict[str, torch.Tensor]) -> str:
    arch = describe_efficientformerv2(state_dict)
    arch = f', {arch[len("backbone "):]}' if arch else ''
    return (f'an EfficientFormerV2 ImageNet checkpoint (original release '
            f'format{arch})')


BACKBONE_FORMATS['efficientformerv2-imagenet'] = BackboneFormat(
    _is_original_release, _describe_original_release)


def _is_timm(state_dict: Dict[str, torch.Tensor]) -> bool:
    # The first conv of timm's EfficientFormerV2 stem, a ConvNorm
    # (``.conv``/``.bn``). Other timm models have stem.* and stages.* too
    # (ConvNeXt: stem.0, EfficientFormer: stem.conv1.weight).
    return 'stem.conv1.conv.weight' in state_dict


BACKBONE_FORMATS['timm'] = BackboneFormat(
    _is_timm,
    lambda state_dict: 'a timm EfficientFormerV2 ImageNet checkpoint')
BACKBONE_DESCRIBERS.append(describe_efficientformerv2)

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

    The tables are laid out for a square key grid of side r = √num_offsets;
    the attention downsample (``network.*.attn.``) has its queries on the
    ⌈r/2⌉ grid at stride ⌈r/⌈r/2⌉⌉, Attention4D on the key grid.
    """
    side = math.isqrt(num_offsets)
    if side * side != num_offsets:
        raise CheckpointError(
            f'{bias_key} has {num_offsets} entries per head, which is not '
            f'a square token grid: not an EfficientFormerV2 bias table.')
    if re.fullmatch(r'network\.\d+\.attn\.attention_biases', bias_key):
        query_side = math.ceil(side / 2)
        return relative_offset_index(query_side, side,
                                     math.ceil(side / query_side))[0]
    return relative_offset_index(side, side, 1)[0]


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
            f'{listing("unknown keys", unknown, limit=20)}\n'
            'Is this an EfficientFormerV2 checkpoint?')
    return converted


# ImageNet checkpoints have a classifier but no segmentation bias tables.
CLASSIFIER_PREFIXES = ('norm.', 'head.', 'dist_head.')
SEGMENTATION_ONLY_SUFFIXES = ('attention_biases_seg',
                              'attention_bias_idxs_seg')


def backbone_state_dict(ckpt: dict, path: str) -> Dict[str, torch.Tensor]:
    """Backbone weights, under the original release's key names, from an
    ImageNet checkpoint (original release or timm format) or a segmentor
    checkpoint (``backbone.*``). The ImageNet classifier (``norm``, ``head``,
    ``dist_head``/``head_dist``) is dropped, and the dropping is logged."""
    state_dict = state_dict_of(ckpt)
    fmt = checkpoint_format(state_dict)
    if fmt == 'segmentor':
        return {
            k[len('backbone.'):]: v
            for k, v in state_dict.items() if k.startswith('backbone.')
        }
    if fmt == 'timm':
        try:
            state_dict = convert_timm_efficientformerv2(state_dict)
        except CheckpointError as err:
            raise CheckpointError(f'{path!r}: {err}') from err
    elif fmt != 'efficientformerv2-imagenet':
        raise CheckpointError(
            f'backbone checkpoint {path!r} looks like '
            f'{describe_checkpoint(ckpt)}; only EfficientFormerV2 ImageNet '
            f'checkpoints (the original release, keys patch_embed.*/'
            f'network.*, or timm, keys stem.*/stages.*) and segmentor '
            f'checkpoints (backbone.*) can initialise the backbone.')
    classifier = [k for k in state_dict if k.startswith(CLASSIFIER_PREFIXES)]
    if classifier:
        MMLogger.get_current_instance().info(
            f'EfficientFormerV2: {path}: ignoring the ImageNet classifier '
            f'({len(classifier)} entries: {", ".join(classifier)}).')
    return {k: v for k, v in state_dict.items() if k not in classifier}


def complete_backbone_state_dict(
        backbone: nn.Module,
        state_dict: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """``state_dict`` plus the backbone's own segmentation bias tables where
    it has none (ImageNet checkpoints never do; they stay at their initial
    zeros, docs/porting.md Q17).

    Raises:
        CheckpointError: listing every other missing, unexpected or
            mis-shaped key.
    """
    state_dict = dict(state_dict)
    for key, value in backbone.state_dict().items():
        if key.endswith(SEGMENTATION_ONLY_SUFFIXES) and key not in state_dict:
            state_dict[key] = value
    report = mismatch_report(backbone, state_dict)
    if report:
        raise CheckpointError(
            f'does not fit EfficientFormerV2-'
            f'{getattr(backbone, "arch", "?")}:\n{report}\nCheck that '
            f'model.backbone.arch matches the checkpoint.')
    return state_dict


def load_pretrained_backbone(backbone: nn.Module, path: str) -> None:
    """Load ImageNet weights (original release or timm format, ``.pth``,
    ``.bin`` or ``.safetensors``, a path or a URL) into ``backbone``,
    strictly but for the keys an ImageNet checkpoint cannot have (the
    segmentation bias tables, which stay at zero) and the classifier it has
    in excess."""
    try:
        ckpt = read_checkpoint(path)
    except FileNotFoundError as err:
        raise FileNotFoundError(
            f'backbone init_cfg checkpoint {path!r} does not exist. Give the '
            f'EfficientFormerV2 ImageNet weights by URL (as the configs do: '
            f'https://huggingface.co/timm/efficientformerv2_{{s1,s2,l}}.'
            f'snap_dist_in1k/resolve/main/model.safetensors for CGRSeg-T/B/L, '
            f'downloaded once) or a local copy of them, or set '
            f'model.backbone.init_cfg=None to train from scratch.') from err
    description = describe_checkpoint(ckpt)
    state_dict = backbone_state_dict(ckpt, path)
    try:
        state_dict = complete_backbone_state_dict(backbone, state_dict)
    except CheckpointError as err:
        raise CheckpointError(
            f'backbone checkpoint {path!r} ({description}) {err}') from err
    backbone.load_state_dict(state_dict, strict=True)
    MMLogger.get_current_instance().info(
        f'EfficientFormerV2: loaded {path} ({description}).')
