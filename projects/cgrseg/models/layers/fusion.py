"""Fusion blocks of the CGRSeg head."""
from typing import List, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmcv.cnn import ConvModule
from mmseg.utils import ConfigType

from ..utils.tracing import has_symbolic_size


def _pooling_matrix(in_size: int, out_size: int,
                    like: torch.Tensor) -> torch.Tensor:
    """(out_size, in_size) matrix averaging the bins of adaptive pooling:
    output i averages inputs [floor(i·n/m), ceil((i+1)·n/m))."""
    out_index = torch.arange(out_size, device=like.device)
    start = out_index * in_size // out_size
    end = ((out_index + 1) * in_size + out_size - 1) // out_size
    in_index = torch.arange(in_size, device=like.device)
    inside = (in_index >= start[:, None]) & (in_index < end[:, None])
    return inside.to(like.dtype) / (end - start)[:, None].to(like.dtype)


def adaptive_avg_pool2d(x: torch.Tensor,
                        size: Tuple[int, int]) -> torch.Tensor:
    """``F.adaptive_avg_pool2d`` that also traces with symbolic sizes.

    ONNX has no adaptive pooling, and exporters lower it to a fixed kernel
    valid only for the traced size. With symbolic sizes the bins are
    averaged by two matrix products instead (equal up to float rounding);
    eager and fixed-size graphs use the PyTorch kernel.
    """
    if not has_symbolic_size(*x.shape[-2:], *size):
        return F.adaptive_avg_pool2d(x, size)
    rows = _pooling_matrix(x.shape[-2], size[0], x)
    cols = _pooling_matrix(x.shape[-1], size[1], x)
    # (B, C, H, W) @ (W, w), then (B, C, w, H) @ (H, h): a matrix on the
    # right folds into one plain matrix product, without broadcasting.
    x = x @ cols.transpose(0, 1)
    return (x.transpose(-1, -2) @ rows.transpose(0, 1)).transpose(-1, -2)


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
        return torch.cat([adaptive_avg_pool2d(x, size) for x in inputs],
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
