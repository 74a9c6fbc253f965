"""The layers a distillation loss compares: their names, and the maps they
give in one forward pass of a segmentor.

A layer is ``'backbone.out.<i>'``, ``'neck.out.<i>'``, ``'decode_head.logits'``
(returned by the model's parts) or the dotted name of a submodule, whose
output an :class:`OutputTap` keeps.
"""
import re
from typing import Dict, Optional, Sequence, Tuple

import torch.nn as nn
from mmseg.models import EncoderDecoder
from torch import Tensor

LOGITS = 'decode_head.logits'
LAYER_HELP = (
    "A layer is 'backbone.out.<i>' (the i-th backbone output), "
    "'neck.out.<i>', 'decode_head.logits' (the decode head's output "
    "before resizing) or the dotted name of a submodule whose output is "
    "taken, e.g. 'decode_head.conv_seg' (see model.named_modules()).")


class OutputTap:
    """Forward hook that keeps its module's output while armed."""

    def __init__(self) -> None:
        self.armed = False
        self.output = None

    def __call__(self, module: nn.Module, args: tuple, output) -> None:
        if self.armed:
            self.output = output


def parse_layer(spec: str) -> Tuple[str, Optional[int]]:
    """``('backbone'|'neck', i)``, ``('logits', None)`` or
    ``('module', None)``."""
    match = re.fullmatch(r'(backbone|neck)\.out\.(\d+)', spec)
    if match:
        return match.group(1), int(match.group(2))
    if spec == LOGITS:
        return 'logits', None
    return 'module', None


def layer_outputs(model: EncoderDecoder, inputs: Tensor,
                  run_head: bool) -> Tuple[list, Dict[str, Tensor]]:
    """Run the backbone (+ neck) (+ decode head forward) of ``model``.

    Returns:
        the features the decode head takes, and the return-value layers:
        ``'backbone.out.<i>'``, ``'neck.out.<i>'`` and, with ``run_head``,
        ``'decode_head.logits'`` (N, num_classes, H/s, W/s).
    """
    outputs: Dict[str, Tensor] = {}
    feats = model.backbone(inputs)
    outputs.update((f'backbone.out.{i}', x) for i, x in enumerate(feats))
    if model.with_neck:
        feats = model.neck(feats)
        outputs.update((f'neck.out.{i}', x) for i, x in enumerate(feats))
    if run_head:
        outputs[LOGITS] = model.decode_head.forward(feats)
    return feats, outputs


def teacher_needs_head(teacher_layers: Sequence[str]) -> bool:
    """Whether distilling these teacher layers needs its decode head (the
    teacher's backbone alone is run otherwise)."""
    return any(spec == LOGITS or spec.startswith('decode_head.')
               for spec in teacher_layers)
