"""One encoder stage: downsample, residual conv blocks, Mamba blocks."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from anatoseg.blocks.mamba_block import MambaBlock
from anatoseg.blocks.residual import ResidualBlock
from anatoseg.blocks.sampling import Downsample


class EncoderStage(nn.Module):
    """(B, in_channels, Z, Y, X) → (B, out_channels, Z/2, Y/2, X/2).

    Downsample, then ``res_depth`` residual conv blocks (local texture), then
    ``mamba_depth`` Mamba blocks (long-range context along several scan orders).
    """

    def __init__(self, in_channels: int, out_channels: int, res_depth: int, mamba_depth: int, *,
                 d_state: int, orders: Sequence[str], mlp_ratio: float, checkpoint: bool):
        super().__init__()
        self.down = Downsample(in_channels, out_channels)
        self.res = nn.Sequential(*(ResidualBlock(out_channels, out_channels) for _ in range(res_depth)))
        self.mamba = nn.Sequential(*(MambaBlock(out_channels, d_state, orders, mlp_ratio, checkpoint)
                                     for _ in range(mamba_depth)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mamba(self.res(self.down(x)))
