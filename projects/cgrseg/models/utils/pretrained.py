"""Initialising the EfficientFormerV2 backbone from ImageNet weights."""
from typing import Dict

import torch
import torch.nn as nn
from mmengine.logging import MMLogger

from .checkpoint import (CheckpointError, checkpoint_format,
                         describe_checkpoint, mismatch_report, read_checkpoint,
                         state_dict_of)

# ImageNet checkpoints have a classifier but no segmentation bias tables.
CLASSIFIER_PREFIXES = ('norm.', 'head.', 'dist_head.')
SEGMENTATION_ONLY_SUFFIXES = ('attention_biases_seg',
                              'attention_bias_idxs_seg')


def backbone_state_dict(ckpt: dict, path: str) -> Dict[str, torch.Tensor]:
    """Backbone weights from an ImageNet or segmentor checkpoint."""
    state_dict = state_dict_of(ckpt)
    fmt = checkpoint_format(state_dict)
    if fmt == 'segmentor':
        return {
            k[len('backbone.'):]: v
            for k, v in state_dict.items() if k.startswith('backbone.')
        }
    if fmt == 'efficientformerv2-imagenet':
        return {
            k: v
            for k, v in state_dict.items()
            if not k.startswith(CLASSIFIER_PREFIXES)
        }
    raise CheckpointError(
        f'backbone checkpoint {path!r} looks like '
        f'{describe_checkpoint(ckpt)}; only the original EfficientFormerV2 '
        f'release format (keys patch_embed.*, network.*) and segmentor '
        f'checkpoints (backbone.*) can initialise the backbone.')


def load_pretrained_backbone(backbone: nn.Module, path: str) -> None:
    """Load ImageNet weights into ``backbone``, strictly but for the keys an
    ImageNet checkpoint cannot have (the segmentation bias tables, which stay
    at zero as in the original) and the classifier it has in excess."""
    try:
        ckpt = read_checkpoint(path)
    except FileNotFoundError as err:
        raise FileNotFoundError(
            f'backbone init_cfg checkpoint {path!r} does not exist. Download '
            f'the EfficientFormerV2 ImageNet weights (e.g. eformer_s1_450.pth '
            f'for CGRSeg-T, eformer_s2_450.pth for B, eformer_l_450.pth for '
            f'L, from the EfficientFormer release) to that path, or set '
            f'model.backbone.init_cfg=None to train from scratch.') from err
    state_dict = backbone_state_dict(ckpt, path)
    for key, value in backbone.state_dict().items():
        if key.endswith(SEGMENTATION_ONLY_SUFFIXES) and key not in state_dict:
            state_dict[key] = value
    report = mismatch_report(backbone, state_dict)
    if report:
        raise CheckpointError(
            f'backbone checkpoint {path!r} ({describe_checkpoint(ckpt)}) does '
            f'not fit EfficientFormerV2-{getattr(backbone, "arch", "?")}:\n'
            f'{report}\nCheck that model.backbone.arch matches the '
            f'checkpoint.')
    backbone.load_state_dict(state_dict, strict=True)
    MMLogger.get_current_instance().info(
        f'EfficientFormerV2: loaded {path} ({describe_checkpoint(ckpt)}).')
