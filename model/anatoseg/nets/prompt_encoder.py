"""Mamba-based prompt encoder: organ label map → organ tokens, occupancy and dense prompt features per scale."""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from anatoseg.blocks import MambaBlock, conv_norm, organ_occupancy, pool_organ_tokens
from anatoseg.nets.config import NetConfig


class StagePrompt(NamedTuple):
    """The prompts of one stage, on the grid of its features (stride 2**(s+1)): z, y, x.

    tokens (B, M, P) organ tokens; present (B, M) bool, False for an organ with no voxel in
    the patch; occupancy (B, M, z, y, x) float32, the fraction of each cell each organ
    covers; features (B, P, z, y, x), the spatial prompt features the tokens pool.
    """

    tokens: torch.Tensor
    present: torch.Tensor
    occupancy: torch.Tensor
    features: torch.Tensor


class PromptBranch(nn.Module):
    """Organ occupancy (B, M, z, y, x) → (tokens (B, M, P), present (B, M), features (B, P, z, y, x)).

    conv3³ embedding of the occupancy maps → norm → LeakyReLU → one Mamba block when
    ``mamba`` (each voxel's embedding sees the whole patch's anatomy along several scan
    orders) = the features → masked average pooling over each organ's voxels → + a
    learned per-organ identity embedding (so the key also says which organ it is).
    """

    def __init__(self, num_organs: int, prompt_dim: int, config: NetConfig, *, mamba: bool = True):
        super().__init__()
        self.embed = nn.Sequential(nn.Conv3d(num_organs, prompt_dim, 3, padding=1, bias=False),
                                   conv_norm(prompt_dim), nn.LeakyReLU(0.01))
        self.mamba = (MambaBlock(prompt_dim, config.d_state, config.orders, config.mlp_ratio,
                                 config.gradient_checkpointing) if mamba else nn.Identity())
        self.identity = nn.Parameter(torch.randn(num_organs, prompt_dim) * 0.02)

    def forward(self, occupancy: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        features = self.mamba(self.embed(occupancy.to(self.identity.dtype)))
        tokens, present = pool_organ_tokens(occupancy, features)
        return tokens + self.identity.to(tokens.dtype), present, features


class PromptEncoder(nn.Module):
    """Organ labels (B, Z, Y, X) int64 in [0, num_organs] → {stage: :class:`StagePrompt`}.

    One :class:`PromptBranch` per stage in ``config.hcca_stages``; stage s works on
    the occupancy maps at stride 2**(s+1), the resolution of the features it
    prompts. M = ``config.num_organs``, P = ``config.prompt_dim``. An organ with no
    voxel in the patch has a zero-content token and ``present`` False, so HCCA
    masks it out as a key. A branch has its Mamba block only where the image encoder's
    stage has Mamba blocks (``mamba_depths[s] > 0``): the stages where a scan over every
    token is too dear for the image (``base``: stride 2) are too dear for the prompts too.
    """

    def __init__(self, config: NetConfig):
        super().__init__()
        self.num_organs = config.num_organs
        self.branches = nn.ModuleDict({
            str(s): PromptBranch(config.num_organs, config.prompt_dim, config, mamba=config.mamba_depths[s] > 0)
            for s in config.hcca_stages})

    def forward(self, organs: torch.Tensor) -> dict[int, StagePrompt]:
        prompts = {}
        for s, branch in self.branches.items():
            occupancy = organ_occupancy(organs, self.num_organs, 2 ** (int(s) + 1))
            tokens, present, features = branch(occupancy)
            prompts[int(s)] = StagePrompt(tokens, present, occupancy, features)
        return prompts
