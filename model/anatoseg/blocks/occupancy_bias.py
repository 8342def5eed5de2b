"""Attention-logit bias from organ occupancy: each image token attends first to the organ it lies in."""

from __future__ import annotations

import torch
from torch import nn

OCCUPANCY_EPS = 1e-3
"""ε of log(occupancy + ε): a key organ absent from a token's cell gets log ε ≈ −6.9 before the scale."""


class OccupancyBias(nn.Module):
    """occupancy (B, M, Z, Y, X) in [0, 1] → (bias (B, L, M), scale (H,)), L = Z·Y·X.

    The logit added for head h is scale[h] · bias[b, l, m] with bias = log(occupancy + ε),
    ε = :data:`OCCUPANCY_EPS`, and a learned per-head scale that starts at 1; the pair is
    what :func:`anatokernels.hyper_cross_attention` takes as ``attn_bias`` and
    ``attn_bias_scale``, which apply the scale per tile and never expand the bias to
    (B, H, L, M). The tokens l run in the raster order in which
    :class:`anatokernels.nn.HyperCrossAttention` flattens (B, C, Z, Y, X) features, so
    ``occupancy`` must be on the features' grid (:func:`organ_occupancy` at their stride).
    A token inside organ m gets ≈0 on m's key and ≈ scale·log ε on the organs its cell
    does not touch, so it attends to its own organ first; a token in no organ gets the
    same bias on every key, which the softmax ignores.
    """

    def __init__(self, num_heads: int):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(num_heads))

    def forward(self, occupancy: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        bias = torch.log(occupancy.to(self.scale.dtype).flatten(2).transpose(1, 2) + OCCUPANCY_EPS)
        return bias, self.scale
