"""Initialising the EfficientFormerV2 backbone from ImageNet weights."""
from typing import Dict

import torch
import torch.nn as nn
from mmengine.logging import MMLogger

from .checkpoint import (CheckpointError, checkpoint_format,
                         describe_checkpoint, mismatch_report, state_dict_of)
from .converters import convert_timm_efficientformerv2, read_weights

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
    zeros, as in the original).

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
    """Load ImageNet weights (original release or timm format, ``.pth`` or
    ``.safetensors``) into ``backbone``, strictly but for the keys an
    ImageNet checkpoint cannot have (the segmentation bias tables, which stay
    at zero as in the original) and the classifier it has in excess."""
    try:
        ckpt = read_weights(path)
    except FileNotFoundError as err:
        raise FileNotFoundError(
            f'backbone init_cfg checkpoint {path!r} does not exist. Download '
            f'the EfficientFormerV2 ImageNet weights (e.g. eformer_s1_450.pth '
            f'for CGRSeg-T, eformer_s2_450.pth for B, eformer_l_450.pth for '
            f'L, from the EfficientFormer release, or timm\'s '
            f'efficientformerv2_{{s1,s2,l}}.snap_dist_in1k) to that path, or '
            f'set model.backbone.init_cfg=None to train from scratch.'
        ) from err
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
