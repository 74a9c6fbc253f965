"""Dynamic prototype guidance (DPG) of CGRSeg."""
import torch
import torch.nn as nn
from mmengine.model import constant_init, kaiming_init


class DPGBlock(nn.Module):
    """Channel gate computed from class prototypes.

    Given features x (B, C, H, W) and class prototypes y (B, C, K, 1), an
    attention over the K classes (1×1 conv ``conv_mask`` → softmax) pools the
    prototypes into one context vector c (B, C, 1, 1); the output is
    ``x · σ(conv(ReLU(LN(conv(c)))))`` (B, C, H, W).

    At initialisation the last conv is zero, so the gate is 0.5 everywhere.
    """

    def __init__(self, channels: int, hidden_channels: int):
        super().__init__()
        self.conv_mask = nn.Conv2d(channels, 1, kernel_size=1)
        self.softmax = nn.Softmax(dim=2)
        self.channel_mul_conv = nn.Sequential(
            nn.Conv2d(channels, hidden_channels, kernel_size=1),
            nn.LayerNorm([hidden_channels, 1, 1]),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden_channels, channels, kernel_size=1))
        kaiming_init(self.conv_mask, mode='fan_in')
        constant_init(self.channel_mul_conv[-1], val=0)

    def pool_prototypes(self, y: torch.Tensor) -> torch.Tensor:
        """(B, C, K, 1) prototypes → (B, C, 1, 1) attention-weighted sum."""
        batch, channels, height, width = y.shape
        weights = self.softmax(self.conv_mask(y).view(batch, 1, -1))
        context = torch.matmul(
            y.view(batch, channels, -1).unsqueeze(1), weights.unsqueeze(3))
        return context.view(batch, channels, 1, 1)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        gate = torch.sigmoid(self.channel_mul_conv(self.pool_prototypes(y)))
        return x * gate
