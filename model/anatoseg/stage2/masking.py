"""The shared patch mask of stage 2, the learned-token fill and the normalised targets.

Patch ids are raster over the patch grid ``(GZ, GY, GX)`` of a ``(Z, Y, X)``
volume (``anatokernels`` convention). One mask is drawn per sample and applied
to both modalities, so PET and CT hide exactly the same patches.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from anatokernels import masked_patch_gather, masked_patch_scatter, random_patch_mask
from anatoseg.errors import ConfigError


def patch_grid(spatial: Sequence[int], patch: Sequence[int]) -> tuple[int, int, int]:
    """``(GZ, GY, GX)`` for a ``(Z, Y, X)`` volume cut into ``(pz, py, px)`` patches.

    Raises :class:`ConfigError` naming the axes the patch does not divide.
    """
    bad = [f"{axis}={size} by {p}" for axis, size, p in zip("ZYX", spatial, patch) if p < 1 or size % p]
    if bad:
        raise ConfigError(f"the mask patch size {tuple(patch)} must divide the crop {tuple(spatial)}; "
                          f"cannot divide {', '.join(bad)}")
    return tuple(int(s) // int(p) for s, p in zip(spatial, patch))  # type: ignore[return-value]


def check_crop(spatial: Sequence[int], patch: Sequence[int], divisor: int) -> tuple[int, int, int]:
    """The patch grid of a ``(Z, Y, X)`` crop that must be a multiple of the network ``divisor``
    and of the mask patch along every axis; :class:`ConfigError` otherwise."""
    if any(int(s) % divisor for s in spatial):
        raise ConfigError(f"the crop {tuple(spatial)} must be a multiple of the network divisor {divisor} "
                          f"(2**num_stages) along every axis")
    return patch_grid(spatial, patch)


def draw_shared_mask(batch: int, spatial: Sequence[int], patch: Sequence[int], ratio: float, *,
                     generator: torch.Generator | None = None,
                     device: torch.device | str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """One random patch mask per sample, for both modalities.

    Returns ``(visible, masked)``: sorted ``(B, G - M)`` and ``(B, M)`` int64 patch
    ids with ``M = round(ratio·G)``, together a partition of ``[0, G)``.
    """
    if not 0.0 < ratio < 1.0:
        raise ConfigError(f"mask ratio must lie strictly between 0 and 1, got {ratio}")
    grid = patch_grid(spatial, patch)
    visible, masked = random_patch_mask(batch, grid, ratio, generator=generator, device=device)
    if masked.shape[1] == 0 or visible.shape[1] == 0:
        raise ConfigError(f"mask ratio {ratio} of {visible.shape[1] + masked.shape[1]} patches leaves "
                          f"{masked.shape[1]} masked and {visible.shape[1]} visible; both must be >= 1")
    return visible, masked


def fill_masked(x: torch.Tensor, visible: torch.Tensor, patch: Sequence[int], token: torch.Tensor) -> torch.Tensor:
    """The volume with every patch not in ``visible`` replaced by the learned ``token``.

    x: ``(B, C, Z, Y, X)``; visible: ``(B, V)`` int64 patch ids; token: ``(C,)``,
    one value per channel. Returns ``(B, C, Z, Y, X)``, differentiable in ``x``
    (visible voxels) and ``token`` (masked voxels).
    """
    kept = masked_patch_gather(x, visible, patch)
    return masked_patch_scatter(kept, visible, patch, x.shape[2:], fill=token)


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
