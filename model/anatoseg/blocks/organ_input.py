"""Organ label maps as extra input channels of the encoders (the organ-channel anatomy baseline)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class OrganChannels(nn.Module):
    """Organ labels (B, Z, Y, X) int64 in [0, num_organs] → ``count`` stem contributions, each
    (B, out_channels, Z, Y, X).

    The organ channels are the one-hot map of organs 1..M (``mode="onehot"``, M channels;
    background is all zeros) or a learned embedding of each label (``mode="embed"``,
    ``embed_dim`` channels), both made by one table lookup per voxel. One 3×3×3 conv
    (no bias, zero-initialised) maps them to ``count × out_channels`` channels, split into
    ``count`` parts. Added to a stem conv's output before its norm, a part is exactly that
    conv run over the image with the organ channels concatenated; at initialisation it
    adds nothing, so the network starts as the one without organ channels and its
    encoders stay loadable from a stage-2 checkpoint.
    """

    def __init__(self, mode: str, num_organs: int, embed_dim: int, out_channels: int, count: int):
        super().__init__()
        if mode not in ("onehot", "embed"):
            raise ValueError(f"OrganChannels: mode must be 'onehot' or 'embed', got {mode!r}")
        self.count = count
        if mode == "onehot":
            self.register_buffer("table", torch.eye(num_organs + 1)[:, 1:].contiguous(), persistent=False)
        else:
            self.table = nn.Parameter(torch.randn(num_organs + 1, embed_dim))
        self.conv = nn.Conv3d(self.table.shape[1], out_channels * count, 3, padding=1, bias=False)
        nn.init.zeros_(self.conv.weight)

    def forward(self, organs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        maps = F.embedding(organs, self.table).movedim(-1, 1)  # (B, M or embed_dim, Z, Y, X)
        return self.conv(maps).chunk(self.count, dim=1)
