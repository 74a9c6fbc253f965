"""Fusion blocks of the CGRSeg head."""
from typing import List

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmcv.cnn import ConvModule
from mmseg.utils import ConfigType


class PyramidPoolAgg(nn.Module):
    """Pools every map to the coarsest map's size divided by ``stride``
    (rounded up) and concatenates them along channels.

    Shapes: list of (B, C_i, H_i, W_i) → (B, ΣC_i, ⌈H_last/s⌉, ⌈W_last/s⌉).
    """

    def __init__(self, stride: int = 2):
        super().__init__()
        self.stride = stride

    def forward(self, inputs: List[torch.Tensor]) -> torch.Tensor:
        H, W = inputs[-1].shape[-2:]
        size = ((H - 1) // self.stride + 1, (W - 1) // self.stride + 1)
        return torch.cat([F.adaptive_avg_pool2d(x, size) for x in inputs],
                         dim=1)


class FuseBlockMulti(nn.Module):
    """Injects global semantics into a local map with a hard-sigmoid gate.

    ``BN(conv1x1(x_l)) · resize(h_sigmoid(BN(conv1x1(x_h))), size of x_l)``,
    h_sigmoid(t) = ReLU6(t + 3) / 6.

    Shapes: x_l (B, C_in, H, W), x_h (B, C_in, h, w) → (B, C_out, H, W).
    """

    def __init__(self, in_channels: int, out_channels: int,
                 norm_cfg: ConfigType):
        super().__init__()
        self.fuse1 = ConvModule(
            in_channels, out_channels, 1, norm_cfg=norm_cfg, act_cfg=None)
        self.fuse2 = ConvModule(
            in_channels, out_channels, 1, norm_cfg=norm_cfg, act_cfg=None)

    def forward(self, x_l: torch.Tensor, x_h: torch.Tensor) -> torch.Tensor:
        gate = F.relu6(self.fuse2(x_h) + 3) / 6
        gate = F.interpolate(
            gate, size=x_l.shape[-2:], mode='bilinear', align_corners=False)
        return self.fuse1(x_l) * gate
