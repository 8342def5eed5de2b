"""The stage-2 pretraining model: the stage-3 PET/CT encoders plus light heads that only pretraining uses.

Data flow for a PET crop and a CT crop (B, 1, Z, Y, X) and one shared mask:

1. :func:`~anatoseg.stage2.masking.fill_masked` replaces the masked patches of
   each modality by its learned mask token (one value per channel);
2. ``pet_encoder`` and ``ct_encoder`` (:class:`anatoseg.nets.ModalityEncoder`,
   exactly the stage-3 architecture) give their per-scale features; the heads read
   the deepest one (stride ``s = config.divisor``), so every encoder stage learns;
3. four light decoders (1×1×1 convs, then the s³ outputs of each position laid
   out as the voxels it covers) reconstruct PET and CT from each modality's
   features; the loss reads only the masked patches, against per-patch
   normalised targets;
4. two projections map each modality's deepest features into a shared latent
   space; InfoNCE pulls the PET and CT tokens of the same position together and
   pushes every other position of the batch away. Positions are the deepest
   feature grid (Z/s, Y/s, X/s), visible and masked alike.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from anatokernels import unpatchify
from anatoseg.nets import ModalityEncoder, NetConfig
from anatoseg.stage2.config import ObjectiveConfig
from anatoseg.stage2.losses import info_nce, masked_reconstruction_loss
from anatoseg.stage2.masking import check_crop, fill_masked, normalised_targets

MODALITIES = ("pet", "ct")
#: Reconstruction terms: (name, source features, target modality, the switch that enables it).
RECONSTRUCTIONS = (("pet_from_pet", "pet", "pet", "intra"), ("ct_from_ct", "ct", "ct", "intra"),
                   ("ct_from_pet", "pet", "ct", "cross"), ("pet_from_ct", "ct", "pet", "cross"))


class PatchDecoder(nn.Module):
    """Light decoder: (B, C, z, y, x) features at stride s → (B, 1, z·s, y·s, x·s) intensities.

    Two 1×1×1 convolutions give s³ values at each feature position, laid out as
    the s³ voxels it covers (SimMIM's linear head with a hidden layer).
    """

    def __init__(self, in_channels: int, hidden: int, stride: int):
        super().__init__()
        self.stride = stride
        self.net = nn.Sequential(nn.Conv3d(in_channels, hidden, 1), nn.GELU(), nn.Conv3d(hidden, stride**3, 1))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        out = self.net(features)  # (B, s³, z, y, x)
        spatial = [n * self.stride for n in out.shape[2:]]
        return unpatchify(out.flatten(2).transpose(1, 2), self.stride, spatial)


class Projection(nn.Module):
    """(B, C, z, y, x) features → (B, z·y·x, D) tokens in the shared latent space (raster order)."""

    def __init__(self, in_channels: int, dim: int):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(in_channels, dim), nn.GELU(), nn.Linear(dim, dim))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.net(features.flatten(2).transpose(1, 2))


class PretrainModel(nn.Module):
    """PET and CT encoders with mask tokens, reconstruction decoders and alignment projections.

    ``pet_encoder`` and ``ct_encoder`` have the attribute names of the stage-3
    network, so :func:`anatoseg.nets.encoder_state_dict` and the stage-3 loaders
    apply unchanged. Only the heads of enabled loss terms are built.

    forward(pet, ct (B, 1, Z, Y, X) normalised, visible (B, V), masked (B, M) int64
    patch ids of one shared mask) → dict of scalar losses: the enabled terms among
    ``pet_from_pet``, ``ct_from_ct``, ``ct_from_pet``, ``pet_from_ct``, ``align``,
    and their weighted sum ``loss``. Z, Y, X must be multiples of the mask patch and
    of ``config.divisor``.
    """

    def __init__(self, config: NetConfig, patch: Sequence[int], objective: ObjectiveConfig):
        super().__init__()
        self.config = config
        self.patch = tuple(int(p) for p in patch)
        self.objective = objective
        self.pet_encoder = ModalityEncoder(config)
        self.ct_encoder = ModalityEncoder(config)
        self.stride = self.pet_encoder.strides[-1]
        channels = self.pet_encoder.channels[-1]
        self.mask_tokens = nn.ParameterDict({m: nn.Parameter(torch.zeros(1)) for m in MODALITIES})
        self.decoders = nn.ModuleDict({name: PatchDecoder(channels, objective.decoder_hidden, self.stride)
                                       for name, _, _, switch in RECONSTRUCTIONS if getattr(objective, switch)})
        self.projections = nn.ModuleDict({m: Projection(channels, objective.proj_dim) for m in MODALITIES}
                                         if objective.align else {})

    def forward(self, pet: torch.Tensor, ct: torch.Tensor, visible: torch.Tensor,
                masked: torch.Tensor) -> dict[str, torch.Tensor]:
        check_crop(pet.shape[2:], self.patch, self.config.divisor)
        images = {"pet": pet, "ct": ct}
        encoders = {"pet": self.pet_encoder, "ct": self.ct_encoder}
        features = {m: encoders[m](fill_masked(images[m], visible, self.patch, self.mask_tokens[m]))[-1]
                    for m in MODALITIES}
        objective = self.objective
        terms: dict[str, torch.Tensor] = {}
        total = pet.new_zeros((), dtype=torch.float32)
        targets = {m: normalised_targets(images[m], masked, self.patch, objective.target_eps)
                   for m in MODALITIES if self.decoders}
        for name, source, target, switch in RECONSTRUCTIONS:
            if name in self.decoders:
                pred = self.decoders[name](features[source])
                terms[name] = masked_reconstruction_loss(pred, targets[target], masked, self.patch)
                total = total + getattr(objective, f"{switch}_weight") * terms[name]
        if objective.align:
            tokens = {m: self.projections[m](features[m]) for m in MODALITIES}
            terms["align"] = info_nce(tokens["pet"].flatten(0, 1), tokens["ct"].flatten(0, 1),
                                      objective.temperature)
            total = total + objective.align_weight * terms["align"]
        terms["loss"] = total
        return terms
