"""Dense prompt injection: spatial prompt features added to decoder features through a gate that starts shut."""

from __future__ import annotations

import torch
from torch import nn

from anatoseg.blocks.norm import ChannelLayerNorm


class GatedInjection(nn.Module):
    """x + g ⊙ W·LN(f): decoder features x (B, C, Z, Y, X) and prompt features f (B, P, Z, Y, X)
    on the same grid → (B, C, Z, Y, X) in x's dtype.

    LN is a LayerNorm over P at each voxel, W a 1×1×1 conv P → C with bias, g (C,) a
    per-channel gate initialised to zero: the block starts as the identity (a network
    initialised from stage 2 starts as the no-prompt network), and g gets a gradient
    from the first step, which then opens the path to W and to the prompt encoder.
    """

    def __init__(self, prompt_dim: int, channels: int):
        super().__init__()
        self.norm = ChannelLayerNorm(prompt_dim)
        self.proj = nn.Conv3d(prompt_dim, channels, 1)
        self.gate = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        injected = self.proj(self.norm(features)) * self.gate.view(1, -1, 1, 1, 1)
        return x + injected.to(x.dtype)
