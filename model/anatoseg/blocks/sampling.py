"""Resolution changes by a factor of 2 along every axis."""

from __future__ import annotations

from torch import nn

from anatoseg.blocks.norm import conv_norm


class Downsample(nn.Sequential):
    """Patch merging: 2×2×2 conv with stride 2, then norm.

    (B, in_channels, Z, Y, X) → (B, out_channels, Z/2, Y/2, X/2); Z, Y, X even.
    Windows do not overlap, so a stride-16 token sees exactly one 16³ input patch
    through the downsamplings (context comes from the conv and Mamba blocks).
    """

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__(nn.Conv3d(in_channels, out_channels, 2, stride=2, bias=False), conv_norm(out_channels))


class Upsample(nn.ConvTranspose3d):
    """2×2×2 transposed conv with stride 2: (B, in_channels, Z, Y, X) → (B, out_channels, 2Z, 2Y, 2X)."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__(in_channels, out_channels, 2, stride=2)
