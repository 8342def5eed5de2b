"""The stage-2 pretraining model: the stage-3 PET/CT encoders plus light heads that only pretraining uses.

Data flow for a PET crop and a CT crop (B, 1, Z, Y, X), each with its own mask
(:func:`~anatoseg.stage2.masking.draw_masks`):

1. :func:`~anatoseg.stage2.masking.fill_masked` replaces the masked patches of
   each modality by its learned mask token (one value per channel);
2. ``pet_encoder`` and ``ct_encoder`` (:class:`anatoseg.nets.ModalityEncoder`,
   exactly the stage-3 architecture) give their per-scale features; the heads read
   the deepest one (stride ``s = config.divisor``), so every encoder stage learns;
3. one projection per modality (1×1×1 convs) maps those features into **one
   shared latent space** (``loss.proj_dim`` channels on the stride-``s`` grid);
4. **one decoder per target modality** reads either modality's latent: the PET
   decoder gives PET from the PET latent (intra) and from the CT latent (cross), the
   CT decoder likewise. A decoder cannot tell which encoder a latent came from, so
   cross reconstruction pulls the two latents of a position together by
   construction. Every term is scored on the patches hidden from its target
   modality's own encoder (MAE), against :mod:`~anatoseg.stage2.targets`;
5. optionally (``loss.align``), InfoNCE between the PET and CT latents at the
   positions visible in both views only, with the positions within
   ``loss.align_radius`` voxels of a token (same sample) left out of its negatives.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn

from anatokernels import unpatchify
from anatoseg.nets import ModalityEncoder, NetConfig
from anatoseg.stage2.config import ObjectiveConfig
from anatoseg.stage2.losses import info_nce, masked_reconstruction_loss, near_pairs
from anatoseg.stage2.masking import MODALITIES, check_crop, fill_masked, visible_tokens
from anatoseg.stage2.targets import normalised_targets, pet_targets

#: Reconstruction terms: (name, source latent, target modality = its decoder, the switch that enables it).
RECONSTRUCTIONS = (("pet_from_pet", "pet", "pet", "intra"), ("ct_from_ct", "ct", "ct", "intra"),
                   ("ct_from_pet", "pet", "ct", "cross"), ("pet_from_ct", "ct", "pet", "cross"))
Masks = Mapping[str, tuple[torch.Tensor, torch.Tensor]]


class PatchDecoder(nn.Module):
    """Light decoder: (B, C, z, y, x) latents at stride s → (B, 1, z·s, y·s, x·s) intensities.

    Two 1×1×1 convolutions give s³ values at each latent position, laid out as
    the s³ voxels it covers (SimMIM's linear head with a hidden layer).
    """

    def __init__(self, in_channels: int, hidden: int, stride: int):
        super().__init__()
        self.stride = stride
        self.net = nn.Sequential(nn.Conv3d(in_channels, hidden, 1), nn.GELU(), nn.Conv3d(hidden, stride**3, 1))

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        out = self.net(latent)  # (B, s³, z, y, x)
        spatial = [n * self.stride for n in out.shape[2:]]
        return unpatchify(out.flatten(2).transpose(1, 2), self.stride, spatial)


def projection(in_channels: int, dim: int) -> nn.Module:
    """(B, C, z, y, x) encoder features → (B, dim, z, y, x) latents in the shared space."""
    return nn.Sequential(nn.Conv3d(in_channels, dim, 1), nn.GELU(), nn.Conv3d(dim, dim, 1))


class PretrainModel(nn.Module):
    """PET and CT encoders with mask tokens, projections into a shared latent space, and one decoder
    per target modality.

    ``pet_encoder`` and ``ct_encoder`` have the attribute names of the stage-3
    network, so :func:`anatoseg.nets.encoder_state_dict` and the stage-3 loaders
    apply unchanged. Only the decoders of enabled terms are built. ``suv_norm``:
    the ``(suv_mean, suv_std)`` that normalised the PET (``loss.pet_target=log_suv``).

    forward(pet, ct (B, 1, Z, Y, X) normalised, masks ``{"pet": (visible, masked),
    "ct": (visible, masked)}`` of (B, ·) int64 patch ids) → dict of scalar losses: the
    enabled terms among ``pet_from_pet``, ``ct_from_ct``, ``ct_from_pet``,
    ``pet_from_ct``, ``align``, and their weighted sum ``loss``. Z, Y, X must be
    multiples of the mask patch and of ``config.divisor``.
    """

    def __init__(self, config: NetConfig, patch: Sequence[int], objective: ObjectiveConfig, *,
                 suv_norm: tuple[float, float] | None = None):
        super().__init__()
        self.config = config
        self.patch = tuple(int(p) for p in patch)
        self.objective = objective
        self.suv_norm = suv_norm
        self.pet_encoder = ModalityEncoder(config)
        self.ct_encoder = ModalityEncoder(config)
        self.stride = self.pet_encoder.strides[-1]
        channels = self.pet_encoder.channels[-1]
        self.mask_tokens = nn.ParameterDict({m: nn.Parameter(torch.zeros(1)) for m in MODALITIES})
        self.projections = nn.ModuleDict({m: projection(channels, objective.proj_dim) for m in MODALITIES})
        targets = {target for _, _, target, switch in RECONSTRUCTIONS if getattr(objective, switch)}
        self.decoders = nn.ModuleDict({m: PatchDecoder(objective.proj_dim, objective.decoder_hidden, self.stride)
                                       for m in MODALITIES if m in targets})

    def latents(self, pet: torch.Tensor, ct: torch.Tensor, masks: Masks) -> dict[str, torch.Tensor]:
        """``{"pet", "ct"}`` → (B, proj_dim, Z/s, Y/s, X/s): each masked modality encoded into the shared space."""
        check_crop(pet.shape[2:], self.patch, self.config.divisor)
        images = {"pet": pet, "ct": ct}
        encoders = {"pet": self.pet_encoder, "ct": self.ct_encoder}
        return {m: self.projections[m](encoders[m](fill_masked(images[m], masks[m][0], self.patch,
                                                               self.mask_tokens[m]))[-1])
                for m in MODALITIES}

    def forward(self, pet: torch.Tensor, ct: torch.Tensor, masks: Masks) -> dict[str, torch.Tensor]:
        latents = self.latents(pet, ct, masks)
        images = {"pet": pet, "ct": ct}
        objective = self.objective
        targets = {m: self._targets(m, images[m], masks[m][1]) for m in self.decoders}
        terms: dict[str, torch.Tensor] = {}
        total = pet.new_zeros((), dtype=torch.float32)
        for name, source, target, switch in RECONSTRUCTIONS:
            if getattr(objective, switch):
                pred = self.decoders[target](latents[source])
                terms[name] = masked_reconstruction_loss(pred, targets[target], masks[target][1], self.patch)
                total = total + getattr(objective, f"{switch}_weight") * terms[name]
        if objective.align:
            terms["align"] = self.alignment(latents, masks, pet.shape[2:])
            total = total + objective.align_weight * terms["align"]
        terms["loss"] = total
        return terms

    def _targets(self, modality: str, image: torch.Tensor, masked: torch.Tensor) -> torch.Tensor:
        """(B, M, pz·py·px) targets of the ``masked`` patches of one modality."""
        eps = self.objective.target_eps
        if modality == "pet":
            return pet_targets(image, masked, self.patch, self.objective.pet_target, eps=eps, suv_norm=self.suv_norm)
        return normalised_targets(image, masked, self.patch, eps)

    def alignment(self, latents: Mapping[str, torch.Tensor], masks: Masks, spatial: Sequence[int]) -> torch.Tensor:
        """InfoNCE between the PET and CT latents (B, D, z, y, x) at the positions visible in both views.

        A position's negatives are the other such positions of the batch, except those of the same
        sample within ``loss.align_radius`` voxels. 0 (still in the graph) when no position qualifies.
        """
        both = visible_tokens(masks["pet"][1], spatial, self.patch, self.stride)
        both = both & visible_tokens(masks["ct"][1], spatial, self.patch, self.stride)
        if not both.any():
            return 0.0 * sum(latent.sum() for latent in latents.values())
        tokens = {m: latents[m].movedim(1, -1)[both] for m in MODALITIES}  # (N, D), raster order
        exclude = near_pairs(both.nonzero(), self.objective.align_radius / self.stride)
        return info_nce(tokens["pet"], tokens["ct"], self.objective.temperature, exclude)
