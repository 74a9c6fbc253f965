"""CGRSeg decode head (Ni et al., "Context-Guided Spatial Feature
Reconstruction for Efficient Semantic Segmentation", ECCV 2024).

State-dict keys are those of the released CGRSeg checkpoints, which load
unchanged: ``linear_fuse``, ``trans.transformer_blocks.N``,
``SIM.{i}.{fuse1,fuse2}``, ``meta.{i}``, ``conv.{i}``, ``lgc`` and mmseg's
``conv_seg``. The released configs' argument names are mapped to these in
docs/porting.md (Names).
"""
from typing import List, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmcv.cnn import ConvModule
from mmseg.models.decode_heads.decode_head import BaseDecodeHead
from mmseg.models.decode_heads.ocr_head import SpatialGatherModule
from mmseg.registry import MODELS
from mmseg.utils import ConfigType

from ..layers import RCM, DPGBlock, FuseBlockMulti, PyramidPoolAgg


class RCMStack(nn.Module):
    """``depth`` RCM blocks in sequence. Shapes: (B, C, H, W) kept."""

    def __init__(self, depth: int, dim: int, **rcm_kwargs):
        super().__init__()
        self.transformer_blocks = nn.ModuleList(
            RCM(dim, **rcm_kwargs) for _ in range(depth))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.transformer_blocks:
            x = block(x)
        return x


@MODELS.register_module()
class CGRSegHead(BaseDecodeHead):
    """Context-guided spatial feature reconstruction head.

    1. Pyramid pooling aggregation: the selected maps (strides 8, 16, 32) are
       pooled to stride 64 and concatenated; ``neck_depth`` RCM blocks with
       band kernel ``neck_band_kernel_size`` build global context, which is
       split back per level.
    2. Top-down, from the coarsest level: local features (plus a 1×1 conv of
       the upsampled previous result) pass one RCM block (band kernel
       ``band_kernel_size``) and are fused with that level's global context
       (:class:`FuseBlockMulti`), giving (B, channels, H/8, W/8).
    3. Dynamic prototype guidance: coarse logits ``cls_seg(linear_fuse(x))``
       weight a spatial gather of class prototypes (B, channels, K, 1);
       :class:`DPGBlock` turns them into a channel gate and
       ``cls_seg(x · gate + x)`` gives the logits (B, K, H/8, W/8).

    Args (besides :class:`BaseDecodeHead`'s):
        depthwise_fuse: ``linear_fuse`` is depthwise.
        neck_depth: RCM blocks in the global neck.
        mlp_ratio: RCM MLP expansion.
        band_kernel_size: band kernel of the per-level RCMs.
        neck_band_kernel_size: band kernel of the neck RCMs.
        square_kernel_size: RCA local depthwise kernel.
        rca_ratio: RCA excitation channel ratio.
        block_norm_cfg: norm of the RCM/RCA blocks (plain BN by default, as
            the released models were trained: docs/porting.md H1).
            ``norm_cfg`` is used by ``linear_fuse`` and the fusion blocks.

    The head always selects several inputs (``input_transform`` is
    ``'multiple_select'``), one per ``in_channels`` entry.
    """

    def __init__(self,
                 in_channels: Sequence[int],
                 channels: int,
                 depthwise_fuse: bool = True,
                 neck_depth: int = 5,
                 mlp_ratio: float = 2.,
                 band_kernel_size: int = 11,
                 neck_band_kernel_size: int = 11,
                 square_kernel_size: int = 3,
                 rca_ratio: int = 1,
                 block_norm_cfg: ConfigType = dict(type='BN'),
                 **kwargs):
        input_transform = kwargs.pop('input_transform', 'multiple_select')
        if input_transform != 'multiple_select':
            raise ValueError(
                "CGRSegHead consumes one map per in_channels entry; "
                f"input_transform must be 'multiple_select', got "
                f"{input_transform!r}.")
        super().__init__(
            in_channels, channels, input_transform=input_transform, **kwargs)
        if len(self.in_channels) < 2:
            raise ValueError('CGRSegHead needs at least two input levels, '
                             f'got in_channels={self.in_channels}.')
        rcm_cfg = dict(
            mlp_ratio=mlp_ratio,
            square_kernel_size=square_kernel_size,
            ratio=rca_ratio,
            norm_cfg=block_norm_cfg)

        self.linear_fuse = ConvModule(
            channels,
            channels,
            1,
            groups=channels if depthwise_fuse else 1,
            norm_cfg=self.norm_cfg,
            act_cfg=self.act_cfg)
        self.ppa = PyramidPoolAgg(stride=2)
        self.trans = RCMStack(
            neck_depth,
            sum(self.in_channels),
            band_kernel_size=neck_band_kernel_size,
            **rcm_cfg)
        self.SIM = nn.ModuleList(
            FuseBlockMulti(c, channels, self.norm_cfg)
            for c in self.in_channels)
        self.meta = nn.ModuleList(
            RCM(c, band_kernel_size=band_kernel_size, **rcm_cfg)
            for c in self.in_channels)
        self.conv = nn.ModuleList(
            nn.Conv2d(channels, c, 1) for c in self.in_channels[:-1])
        self.spatial_gather_module = SpatialGatherModule(1)
        self.lgc = DPGBlock(channels, channels)

    def _check_inputs(self, inputs: List[torch.Tensor]) -> None:
        for i, (x, c) in enumerate(zip(inputs, self.in_channels)):
            if x.dim() != 4 or x.shape[1] != c:
                raise ValueError(
                    f'CGRSegHead input level {i} (backbone output '
                    f'{self.in_index[i]}) should have {c} channels, got '
                    f'shape {tuple(x.shape)}; in_channels/in_index must '
                    f'match the backbone.')

    def forward(self, inputs: List[torch.Tensor]) -> torch.Tensor:
        feats = self._transform_inputs(inputs)
        self._check_inputs(feats)
        global_context = self.trans(self.ppa(feats)).split(
            self.in_channels, dim=1)

        x = None
        for i in reversed(range(len(self.in_channels))):
            local = feats[i]
            if x is not None:
                local = local + self.conv[i](
                    F.interpolate(
                        x,
                        size=local.shape[-2:],
                        mode='bilinear',
                        align_corners=False))
            x = self.SIM[i](self.meta[i](local), global_context[i])

        coarse_logits = self.cls_seg(self.linear_fuse(x))
        prototypes = self.spatial_gather_module(x, coarse_logits)
        return self.cls_seg(self.lgc(x, prototypes) + x)
