"""Rectangular self-calibration: RCA attention and the RCM block of CGRSeg.

RCA (rectangular self-calibration attention) captures axial context with
horizontal and vertical pooling and a band-shaped depthwise excitation, and
gates a local depthwise conv with it. RCM wraps RCA in a MetaNeXt-style
residual block. Key names are those of the released CGRSeg checkpoints.
"""
import torch
import torch.nn as nn
from mmcv.cnn import build_norm_layer
from mmcv.cnn.bricks import DropPath
from mmseg.utils import ConfigType


class ConvMlp(nn.Module):
    """1×1 conv → GELU → 1×1 conv. Shapes: (B, C, H, W) → (B, C, H, W)."""

    def __init__(self, dim: int, hidden_dim: int):
        super().__init__()
        self.fc1 = nn.Conv2d(dim, hidden_dim, 1)
        self.act = nn.GELU()
        self.fc2 = nn.Conv2d(hidden_dim, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class RCA(nn.Module):
    """Rectangular self-calibration attention.

    ``att = σ(dwconv_{band×1}(ReLU(BN(dwconv_{1×band}(a)))))`` with
    ``a = pool_h(x) + pool_w(x)``,
    where ``pool_h`` averages over W and ``pool_w`` over H (broadcast to H×W);
    output ``att · dwconv_{k×k}(x)``.

    Shapes: (B, C, H, W) → (B, C, H, W).
    """

    def __init__(self,
                 dim: int,
                 band_kernel_size: int = 11,
                 square_kernel_size: int = 3,
                 ratio: int = 1,
                 norm_cfg: ConfigType = dict(type='BN')):
        super().__init__()
        self.dwconv_hw = nn.Conv2d(
            dim, dim, square_kernel_size, padding=square_kernel_size // 2,
            groups=dim)
        hidden = dim // ratio
        self.excite = nn.Sequential(
            nn.Conv2d(
                dim, hidden, (1, band_kernel_size),
                padding=(0, band_kernel_size // 2), groups=hidden),
            build_norm_layer(norm_cfg, hidden)[1],
            nn.ReLU(inplace=True),
            nn.Conv2d(
                hidden, dim, (band_kernel_size, 1),
                padding=(band_kernel_size // 2, 0), groups=hidden),
            nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        axial = x.mean(dim=3, keepdim=True) + x.mean(dim=2, keepdim=True)
        return self.excite(axial) * self.dwconv_hw(x)


class RCM(nn.Module):
    """Rectangular self-calibration module.

    ``x + drop_path(gamma ⊙ ConvMlp(BN(RCA(x))))``, ConvMlp with
    ``mlp_ratio · C`` hidden channels.

    Shapes: (B, C, H, W) → (B, C, H, W).
    """

    def __init__(self,
                 dim: int,
                 band_kernel_size: int = 11,
                 square_kernel_size: int = 3,
                 ratio: int = 1,
                 mlp_ratio: float = 2.,
                 layer_scale_init: float = 1e-6,
                 drop_path: float = 0.,
                 norm_cfg: ConfigType = dict(type='BN')):
        super().__init__()
        self.token_mixer = RCA(dim, band_kernel_size, square_kernel_size,
                               ratio, norm_cfg)
        self.norm = build_norm_layer(norm_cfg, dim)[1]
        self.mlp = ConvMlp(dim, int(mlp_ratio * dim))
        self.gamma = nn.Parameter(torch.full((dim, ), layer_scale_init))
        self.drop_path = DropPath(drop_path) if drop_path > 0 \
            else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.mlp(self.norm(self.token_mixer(x)))
        return x + self.drop_path(out * self.gamma.view(1, -1, 1, 1))
