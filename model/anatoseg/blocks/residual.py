"""Residual 3×3×3 convolution block (nnU-Net's residual encoder block)."""

from __future__ import annotations

import torch
from torch import nn

from anatoseg.blocks.norm import conv_norm


class ResidualBlock(nn.Module):
    """conv3³ → norm → LeakyReLU → conv3³ → norm, plus a shortcut, then LeakyReLU.

    (B, in_channels, Z, Y, X) → (B, out_channels, Z, Y, X). The shortcut is the
    identity when the widths match, else a 1×1×1 conv with norm.
    """

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv1 = nn.Conv3d(in_channels, out_channels, 3, padding=1, bias=False)
        self.norm1 = conv_norm(out_channels)
        self.conv2 = nn.Conv3d(out_channels, out_channels, 3, padding=1, bias=False)
        self.norm2 = conv_norm(out_channels)
        self.act = nn.LeakyReLU(0.01)
        self.shortcut = (nn.Identity() if in_channels == out_channels else
                         nn.Sequential(nn.Conv3d(in_channels, out_channels, 1, bias=False),
                                       conv_norm(out_channels)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.act(self.norm1(self.conv1(x)))
        h = self.norm2(self.conv2(h))
        return self.act(h + self.shortcut(x))
