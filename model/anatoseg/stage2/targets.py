"""Stage-2 reconstruction targets: per-patch normalised (CT, and PET as an ablation) or absolute SUV (PET).

:data:`PET_TARGETS` (``loss.pet_target``):

- ``suv`` (default): the PET channel as the network reads it, ``(clip(SUV) - suv_mean) / suv_std``
  with the dataset fingerprint's constants, i.e. absolute SUV on one fixed scale, so a hot
  lesion and a cold patch of the same shape are different targets;
- ``log_suv``: ``log1p(SUV)``, SUV recovered with the run's ``(suv_mean, suv_std)``; it
  compresses the heavy tail of lesion uptake;
- ``patch``: each patch normalised on its own (MAE's target; drops the absolute uptake).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from anatokernels import masked_patch_gather
from anatoseg.errors import ConfigError

PET_TARGETS = ("suv", "log_suv", "patch")


def normalised_targets(x: torch.Tensor, masked: torch.Tensor, patch: Sequence[int], eps: float) -> torch.Tensor:
    """MAE-style reconstruction targets: the masked patches, each normalised on its own.

    x: ``(B, C, Z, Y, X)``; masked: ``(B, M)`` int64 patch ids. Returns
    ``(B, M, C·pz·py·px)``: each patch minus its mean, divided by
    ``sqrt(var + eps)`` (over all its voxels and channels). No gradient.
    """
    with torch.no_grad():
        target = masked_patch_gather(x.float(), masked, patch)
        mean = target.mean(dim=-1, keepdim=True)
        var = target.var(dim=-1, unbiased=False, keepdim=True)
        return (target - mean) / (var + eps).sqrt()


def pet_targets(pet: torch.Tensor, masked: torch.Tensor, patch: Sequence[int], kind: str, *, eps: float,
                suv_norm: tuple[float, float] | None = None) -> torch.Tensor:
    """The PET reconstruction targets of the masked patches, as ``kind`` (:data:`PET_TARGETS`) says.

    pet: ``(B, 1, Z, Y, X)`` normalised PET; masked: ``(B, M)`` int64 patch ids;
    suv_norm: the ``(suv_mean, suv_std)`` that normalised it (needed by ``log_suv`` only).
    Returns ``(B, M, pz·py·px)``, no gradient.
    """
    if kind == "patch":
        return normalised_targets(pet, masked, patch, eps)
    with torch.no_grad():
        values = masked_patch_gather(pet.float(), masked, patch)
        if kind == "suv":
            return values
        if kind != "log_suv":
            raise ConfigError(f"loss.pet_target must be one of {', '.join(PET_TARGETS)}, got {kind!r}")
        if suv_norm is None:
            raise ConfigError("loss.pet_target=log_suv needs the (suv_mean, suv_std) that normalised the PET "
                              "(the run's preprocessing); none given")
        mean, std = suv_norm
        return torch.log1p((values * std + mean).clamp_min(0.0))
