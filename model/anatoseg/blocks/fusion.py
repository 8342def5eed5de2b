"""Cross-modal fusion of PET and CT features at one scale."""

from __future__ import annotations

import torch
from torch import nn

from anatoseg.blocks.norm import conv_norm


class CrossModalFusion(nn.Module):
    """Fuse PET and CT features (B, C, Z, Y, X) each → (B, C, Z, Y, X).

    out = a_pet ⊙ pet + a_ct ⊙ ct + LeakyReLU(norm(W_pet·pet + W_ct·ct))

    - a_pet, a_ct (B, C): per-sample, per-channel modality weights, a softmax over
      the two modalities of an MLP of both globally pooled features (selective-kernel
      style). They let the network lean on CT for anatomy and PET for uptake.
    - W_pet, W_ct: 1×1×1 convs; their sum is the 1×1×1 conv of the concatenation,
      without materialising the 2C-channel concatenation at full resolution.
    """

    def __init__(self, channels: int):
        super().__init__()
        hidden = max(channels // 4, 8)
        self.gate = nn.Sequential(nn.Linear(2 * channels, hidden), nn.ReLU(), nn.Linear(hidden, 2 * channels))
        self.mix_pet = nn.Conv3d(channels, channels, 1, bias=False)
        self.mix_ct = nn.Conv3d(channels, channels, 1, bias=False)
        self.norm = conv_norm(channels)
        self.act = nn.LeakyReLU(0.01)

    def forward(self, pet: torch.Tensor, ct: torch.Tensor) -> torch.Tensor:
        batch, channels = pet.shape[:2]
        pooled = torch.cat([pet.mean(dim=(2, 3, 4)), ct.mean(dim=(2, 3, 4))], dim=1)
        weights = self.gate(pooled).view(batch, 2, channels, 1, 1, 1).softmax(dim=1)
        mixed = self.act(self.norm(self.mix_pet(pet) + self.mix_ct(ct)))
        return weights[:, 0] * pet + weights[:, 1] * ct + mixed
