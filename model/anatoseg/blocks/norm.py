"""Normalisation layers used by every block.

Convolutional features use GroupNorm with at least two channels per group, so a
1×1×1 bottleneck (a patch of exactly ``NetConfig.divisor``) still normalises
over something; InstanceNorm would fail there in training mode.
Token-style blocks (Mamba, MLP) use a LayerNorm over channels at each voxel.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def conv_norm(channels: int) -> nn.GroupNorm:
    """GroupNorm for (B, C, Z, Y, X) features: gcd(C, 8) groups, halved until each has ≥ 2 channels."""
    groups = math.gcd(channels, 8)
    while groups > 1 and channels // groups < 2:
        groups //= 2
    return nn.GroupNorm(groups, channels)


class ChannelLayerNorm(nn.LayerNorm):
    """LayerNorm over C at every voxel of (B, C, Z, Y, X), without a permuted copy of the input.

    The output keeps the shape (B, C, Z, Y, X) in channels-last memory order.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x.movedim(1, -1), self.normalized_shape, self.weight, self.bias,
                            self.eps).movedim(-1, 1)
