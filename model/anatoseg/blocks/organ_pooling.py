"""From an organ label map to per-organ occupancy maps and per-organ tokens.

Organ labels are int64 (B, Z, Y, X) with 0 = background and 1..M the organs.
"""

from __future__ import annotations

import torch


def organ_occupancy(organs: torch.Tensor, num_organs: int, stride: int) -> torch.Tensor:
    """Fraction of each stride³ cell covered by each organ: the one-hot map average-pooled by ``stride``.

    organs: (B, Z, Y, X) int64 in [0, num_organs], Z, Y, X divisible by ``stride``.
    Returns (B, num_organs, Z/stride, Y/stride, X/stride) float32 in [0, 1].

    Counted with one scatter-add over the label map, so the full-resolution
    (B, M, Z, Y, X) one-hot is never built, and small organs are not lost as
    they would be by nearest-neighbour subsampling.
    """
    batch, depth, height, width = organs.shape
    z, y, x = depth // stride, height // stride, width // stride
    device = organs.device
    cell = ((torch.arange(depth, device=device) // stride * (y * x)).view(-1, 1, 1)
            + (torch.arange(height, device=device) // stride * x).view(1, -1, 1)
            + (torch.arange(width, device=device) // stride).view(1, 1, -1))
    cells = z * y * x
    sample = torch.arange(batch, device=device).view(-1, 1, 1, 1)
    index = ((sample * num_organs + organs - 1) * cells + cell).flatten()
    trash = batch * num_organs * cells  # background voxels are counted here and dropped
    index = torch.where(organs.flatten() > 0, index, trash)
    counts = torch.zeros(trash + 1, device=device, dtype=torch.float32)
    counts.scatter_add_(0, index, torch.ones((), device=device).expand(index.numel()))
    return counts[:trash].view(batch, num_organs, z, y, x) / stride**3


def pool_organ_tokens(occupancy: torch.Tensor, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Masked average pooling of features over each organ's voxels.

    occupancy: (B, M, Z, Y, X) weights ≥ 0 (from :func:`organ_occupancy`).
    features: (B, P, Z, Y, X).
    Returns tokens (B, M, P) in the features' dtype, the occupancy-weighted mean feature of each organ
    (zero for an organ absent from the patch), and present (B, M) bool.
    """
    weights = occupancy.flatten(2)
    mass = weights.float().sum(dim=2)
    tokens = torch.bmm(weights.to(features.dtype), features.flatten(2).transpose(1, 2))
    tokens = tokens.float() / mass.clamp_min(torch.finfo(torch.float32).tiny).unsqueeze(-1)
    return tokens.to(features.dtype), mass > 0
