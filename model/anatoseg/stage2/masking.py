"""The stage-2 patch masks (one per modality), the learned-token fill and the token visibility.

Patch ids are raster over the patch grid ``(GZ, GY, GX)`` of a ``(Z, Y, X)``
volume (``anatokernels`` convention). :data:`MASK_MODES`:

- ``independent`` (default): PET and CT each draw their own random mask, so the
  layout of hidden patches around a position says nothing about the other
  modality's layout there (no mask fingerprint to match PET to CT by);
- ``complementary``: the visible patches of PET and CT are disjoint (needs
  ``ratio >= 0.5``), so every visible patch of one modality is hidden in the other;
- ``shared``: one mask for both (the design before issue 18; kept as an ablation).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from anatokernels import masked_patch_gather, masked_patch_scatter, random_patch_mask
from anatoseg.errors import ConfigError

MASK_MODES = ("independent", "complementary", "shared")
MODALITIES = ("pet", "ct")


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


def check_mask(grid: Sequence[int], ratio: float, mode: str) -> None:
    """:class:`ConfigError` unless ``mode`` is known and ``ratio`` leaves >= 1 masked and >= 1 visible
    patch of the ``grid`` in each modality (and, for ``complementary``, two disjoint visible sets)."""
    if mode not in MASK_MODES:
        raise ConfigError(f"mask.mode must be one of {', '.join(MASK_MODES)}, got {mode!r}")
    if not 0.0 < ratio < 1.0:
        raise ConfigError(f"mask.ratio must lie strictly between 0 and 1, got {ratio}")
    total = int(torch.tensor(grid).prod())
    masked = round(ratio * total)
    if masked == 0 or masked == total:
        raise ConfigError(f"mask.ratio {ratio} of {total} patches leaves {masked} masked and {total - masked} "
                          f"visible; both must be >= 1")
    if mode == "complementary" and 2 * (total - masked) > total:
        raise ConfigError(f"complementary masks need disjoint visible patches: mask.ratio {ratio} leaves "
                          f"{total - masked} of {total} visible per modality; use a ratio >= 0.5")


def draw_masks(batch: int, spatial: Sequence[int], patch: Sequence[int], ratio: float, mode: str = "independent",
               *, generator: torch.Generator | None = None,
               device: torch.device | str | None = None) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """One random patch mask per sample and modality, related across modalities as ``mode`` says.

    Returns ``{"pet": (visible, masked), "ct": (visible, masked)}``: sorted ``(B, G - M)``
    and ``(B, M)`` int64 patch ids with ``M = round(ratio·G)``, each pair a partition of ``[0, G)``.
    Reproducible with ``generator`` (drawn on the CPU).
    """
    grid = patch_grid(spatial, patch)
    check_mask(grid, ratio, mode)
    pet = random_patch_mask(batch, grid, ratio, generator=generator)
    if mode == "shared":
        ct = pet
    elif mode == "independent":
        ct = random_patch_mask(batch, grid, ratio, generator=generator)
    else:  # complementary: CT shows a random subset of the patches PET hides
        visible, hidden = pet
        shuffled = hidden.gather(1, torch.rand(hidden.shape, generator=generator).argsort(dim=1))
        shown, rest = shuffled[:, :visible.shape[1]], shuffled[:, visible.shape[1]:]
        ct = (shown.sort(dim=1).values, torch.cat([visible, rest], dim=1).sort(dim=1).values)
    return {m: (v.to(device), k.to(device)) for m, (v, k) in zip(MODALITIES, (pet, ct))}


def fill_masked(x: torch.Tensor, visible: torch.Tensor, patch: Sequence[int], token: torch.Tensor) -> torch.Tensor:
    """The volume with every patch not in ``visible`` replaced by the learned ``token``.

    x: ``(B, C, Z, Y, X)``; visible: ``(B, V)`` int64 patch ids; token: ``(C,)``,
    one value per channel. Returns ``(B, C, Z, Y, X)``, differentiable in ``x``
    (visible voxels) and ``token`` (masked voxels).
    """
    kept = masked_patch_gather(x, visible, patch)
    return masked_patch_scatter(kept, visible, patch, x.shape[2:], fill=token)


def visible_tokens(masked: torch.Tensor, spatial: Sequence[int], patch: Sequence[int], stride: int) -> torch.Tensor:
    """Which positions of the stride-``stride`` feature grid show only visible voxels.

    masked: ``(B, M)`` int64 patch ids of a ``(Z, Y, X)`` volume. Returns ``(B, Z/s, Y/s, X/s)``
    bool: True where the ``s³`` voxels of the position lie in visible patches only.
    """
    grid = patch_grid(spatial, patch)
    hidden = torch.zeros(masked.shape[0], grid[0] * grid[1] * grid[2], device=masked.device)
    hidden.scatter_(1, masked, 1.0)
    voxels = F.interpolate(hidden.view(-1, 1, *grid), size=tuple(int(s) for s in spatial), mode="nearest")
    return F.max_pool3d(voxels, stride)[:, 0] == 0
