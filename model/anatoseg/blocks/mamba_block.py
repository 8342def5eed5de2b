"""Pre-norm Mamba block on a volume: multi-order 3D Mamba mixer, then a channel MLP."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from anatokernels.nn import Mamba3d
from anatoseg.blocks.norm import ChannelLayerNorm


class MambaBlock(nn.Module):
    """x + Mamba3d(LN(x)), then x + MLP(LN(x)) (no MLP when ``mlp_ratio`` is 0).

    (B, C, Z, Y, X) → (B, C, Z, Y, X). :class:`anatokernels.nn.Mamba3d` scans the
    volume along every order of ``orders`` from the native layout and sums them,
    SegMamba's tri-oriented mixer. ``checkpoint`` is passed to Mamba3d, which then
    recomputes the mixer (the block's memory-heavy part) in the backward instead of storing
    its activations: the one level of gradient checkpointing.
    """

    def __init__(self, dim: int, d_state: int = 16, orders: Sequence[str] = ("zyx", "-zyx", "yxz"),
                 mlp_ratio: float = 2.0, checkpoint: bool = False):
        super().__init__()
        self.norm = ChannelLayerNorm(dim)
        self.mamba = Mamba3d(dim, d_state=d_state, orders=tuple(orders), checkpoint=checkpoint)
        hidden = int(round(dim * mlp_ratio))
        self.mlp = (nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))
                    if hidden > 0 else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.mamba(self.norm(x))
        if self.mlp is not None:
            x = x + self.mlp(x.movedim(1, -1)).movedim(-1, 1)
        return x
