"""One decoder stage: upsample, concatenate the skip, residual conv block."""

from __future__ import annotations

import torch
from torch import nn

from anatoseg.blocks.residual import ResidualBlock
from anatoseg.blocks.sampling import Upsample


class DecoderStage(nn.Module):
    """(B, in_channels, Z, Y, X) and skip (B, skip_channels, 2Z, 2Y, 2X) → (B, out_channels, 2Z, 2Y, 2X)."""

    def __init__(self, in_channels: int, skip_channels: int, out_channels: int):
        super().__init__()
        self.up = Upsample(in_channels, out_channels)
        self.block = ResidualBlock(out_channels + skip_channels, out_channels)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.block(torch.cat([self.up(x), skip], dim=1))
