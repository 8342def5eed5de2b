"""Masked 3D patch gather/scatter (MAE/SimMIM-style masked-patch pretraining).

Patch ids are raster over the patch grid: ``id = (gd·GH + gh)·GW + gw``; a
patch's elements are in (c, pd, ph, pw) order, so ``masked_patch_gather(x, i, p)
== patchify(x, p)[b, i[b]]``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from anatokernels import _checks, _dispatch
from anatokernels._library import backend_name
from anatokernels.masked_patch import function, reference

_COMMON = dict(package="anatokernels.masked_patch", backends=("reference", "triton", "cuda", "cpu"))
GATHER = _dispatch.register(_dispatch.OpSpec(
    name="masked_patch_gather", extension_ops={"cpu": ("masked_patch_gather_cpu", "masked_patch_scatter_cpu"),
                                               "cuda": ("masked_patch_gather_cuda", "masked_patch_scatter_cuda")},
    **_COMMON))
SCATTER = _dispatch.register(_dispatch.OpSpec(
    name="masked_patch_scatter", extension_ops=GATHER.extension_ops, **_COMMON))

__all__ = ["masked_patch_gather", "masked_patch_scatter", "patchify", "unpatchify", "random_patch_mask"]


def _grid(op: str, spatial: Sequence[int], patch: tuple[int, int, int]) -> tuple[int, int, int]:
    bad = [f"{axis}={size} by {p}" for axis, size, p in zip("DHW", spatial, patch) if size % p]
    if bad:
        raise ValueError(f"{op}: patch_size {patch} must divide the volume {tuple(spatial)}; "
                         f"cannot divide {', '.join(bad)}")
    return tuple(s // p for s, p in zip(spatial, patch))  # type: ignore[return-value]


def _check_index(op: str, index, batch: int, n_patches: int, device: torch.device,
                 check_indices: bool | None) -> bool:
    """Shape, dtype and device of ``index``; its values too if ``check_indices`` (None: on CPU tensors
    only, since reading values back from a GPU waits for it; under ``torch.compile``/``torch.export`` a
    device-side assert, with no read-back). Returns whether values were checked."""
    _checks.check_tensor(op, "index", index, ndim=2, layout="(B, M)", dtypes=(torch.int64,))
    if index.shape[0] != batch:
        raise ValueError(f"{op}: index has batch {index.shape[0]}, expected {batch}")
    if index.device != device:
        raise ValueError(f"{op}: index is on {index.device}, the data on {device}")
    if check_indices is None:
        check_indices = device.type == "cpu"
    if check_indices and torch.compiler.is_compiling():  # no host read-back in a traced graph: a device-side assert
        torch._assert_async(((index >= 0) & (index < n_patches)).all(), f"{op}: patch ids must lie in [0, G)")
    elif check_indices and index.numel() and (int(index.min()) < 0 or int(index.max()) >= n_patches):
        raise ValueError(f"{op}: patch ids must lie in [0, {n_patches}), got ids in "
                         f"[{int(index.min())}, {int(index.max())}]")
    return bool(check_indices)


def patchify(x: torch.Tensor, patch_size: int | Sequence[int]) -> torch.Tensor:
    """(B, C, D, H, W) -> (B, G, C·pd·ph·pw) with G = (D/pd)(H/ph)(W/pw)."""
    op = "patchify"
    _checks.check_tensor(op, "x", x, ndim=5, layout="(B, C, D, H, W)", dtypes=None)
    patch = _checks.triple(op, "patch_size", patch_size)
    _grid(op, x.shape[2:], patch)
    return reference.patchify(x, patch)


def unpatchify(patches: torch.Tensor, patch_size: int | Sequence[int], spatial_size: Sequence[int]) -> torch.Tensor:
    """(B, G, C·pd·ph·pw) -> (B, C, D, H, W); inverse of :func:`patchify`."""
    op = "unpatchify"
    _checks.check_tensor(op, "patches", patches, ndim=3, layout="(B, G, P)", dtypes=None)
    patch = _checks.triple(op, "patch_size", patch_size)
    spatial = _checks.triple(op, "spatial_size", spatial_size)
    grid = _grid(op, spatial, patch)
    _checks.check_dim(op, "patches", patches.shape[1], grid[0] * grid[1] * grid[2], "number of patches G")
    if patches.shape[2] % (patch[0] * patch[1] * patch[2]):
        raise ValueError(f"{op}: patch length {patches.shape[2]} is not a multiple of pd·ph·pw = "
                         f"{patch[0] * patch[1] * patch[2]}")
    return reference.unpatchify(patches, patch, spatial)


def masked_patch_gather(x: torch.Tensor, index: torch.Tensor, patch_size: int | Sequence[int], *,
                        backend: str = "auto", check_indices: bool | None = None) -> torch.Tensor:
    """Gather patches ``index`` of a volume without patchifying it.

    x: (B, C, D, H, W) float16/bfloat16/float32/float64, any strides.
    index: (B, M) int64 patch ids in [0, G). Duplicates are allowed (their
        gradients accumulate).
    patch_size: int or (pd, ph, pw), dividing (D, H, W).
    check_indices: check that every id lies in [0, G) (a ValueError if not).
        None (default): on for CPU tensors, off for CUDA tensors, because the
        check reads values back from the GPU and so waits for it (a host sync)
        on every call. Unchecked, an out-of-range id is undefined behaviour
        (an out-of-bounds read on the fast backends).
    Returns (B, M, C·pd·ph·pw), equal to ``patchify(x)[b, index[b]]``.
    Differentiable in x (twice: the backward is built from differentiable ops).
    """
    op = "masked_patch_gather"
    _checks.check_tensor(op, "x", x, ndim=5, layout="(B, C, D, H, W)")
    patch = _checks.triple(op, "patch_size", patch_size)
    grid = _grid(op, x.shape[2:], patch)
    _check_index(op, index, x.shape[0], grid[0] * grid[1] * grid[2], x.device, check_indices)
    return _dispatch.dispatch(op, backend, x.device,
                              fast=lambda impl: function.masked_patch_gather(x, index, list(patch),
                                                                             backend_name(impl)),
                              reference=lambda: reference.masked_patch_gather(x, index, patch))


def masked_patch_scatter(patches: torch.Tensor, index: torch.Tensor, patch_size: int | Sequence[int],
                         spatial_size: Sequence[int], *, fill: float | torch.Tensor = 0.0,
                         backend: str = "auto", check_indices: bool | None = None) -> torch.Tensor:
    """Write patches into a volume; the inverse of :func:`masked_patch_gather`.

    patches: (B, M, P) with P = C·pd·ph·pw in (c, pd, ph, pw) order.
    index: (B, M) int64 patch ids, unique within each sample.
    spatial_size: (D, H, W), divisible by patch_size.
    fill: value of every voxel not covered by a patch: a float, or a (C,)
        tensor such as a learnable mask token (then differentiable).
    check_indices: check that ids lie in [0, G) and are unique per sample (a
        ValueError if not); None (default): on for CPU tensors, off for CUDA
        tensors (each check is a host sync). Unchecked, an out-of-range id is
        undefined behaviour and a duplicate id leaves either patch's values.
    Returns (B, C, D, H, W). Differentiable in patches and a tensor fill (twice).
    """
    op = "masked_patch_scatter"
    _checks.check_tensor(op, "patches", patches, ndim=3, layout="(B, M, P)")
    patch = _checks.triple(op, "patch_size", patch_size)
    spatial = _checks.triple(op, "spatial_size", spatial_size)
    grid = _grid(op, spatial, patch)
    voxels = patch[0] * patch[1] * patch[2]
    if patches.shape[2] % voxels:
        raise ValueError(f"{op}: patch length P={patches.shape[2]} is not a multiple of pd·ph·pw={voxels}")
    channels = patches.shape[2] // voxels
    checked = _check_index(op, index, patches.shape[0], grid[0] * grid[1] * grid[2], patches.device,
                           check_indices)
    _checks.check_dim(op, "index", index.shape[1], patches.shape[1], "M (number of patches)")
    if checked and index.shape[1] > 1:
        _check_unique(op, index)
    fill = _fill_tensor(op, fill, channels, patches)
    return _dispatch.dispatch(op, backend, patches.device,
                              fast=lambda impl: function.masked_patch_scatter(patches, fill, index, list(patch),
                                                                              list(spatial), backend_name(impl)),
                              reference=lambda: reference.masked_patch_scatter(patches, index, patch, spatial, fill))


def _check_unique(op: str, index: torch.Tensor) -> None:
    repeated = (index.sort(dim=1).values.diff(dim=1) == 0).any()
    if torch.compiler.is_compiling():
        torch._assert_async(~repeated, f"{op}: index has a duplicate patch id within a sample")
    elif bool(repeated):
        raise ValueError(f"{op}: index has a duplicate patch id within a sample; scatter needs unique ids")


def _fill_tensor(op: str, fill, channels: int, patches: torch.Tensor) -> torch.Tensor:
    if isinstance(fill, torch.Tensor):
        if fill.shape != (channels,):
            raise ValueError(f"{op}: a tensor fill must have shape ({channels},) (one value per channel), "
                             f"got {_checks.shape_str(fill.shape)}")
        if fill.device != patches.device:
            raise ValueError(f"{op}: fill is on {fill.device}, patches on {patches.device}")
        return fill.to(patches.dtype)
    if isinstance(fill, (int, float)) and not isinstance(fill, bool):
        return torch.full((channels,), float(fill), dtype=patches.dtype, device=patches.device)
    raise TypeError(f"{op}: fill must be a float or a (C,) tensor, got {type(fill).__name__}")


def random_patch_mask(batch: int, grid: int | Sequence[int], ratio: float, *,
                      generator: torch.Generator | None = None,
                      device: torch.device | str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Split the G patch ids of each sample into (visible, masked), both sorted (B, ·) int64.

    grid: number of patches G, or the patch grid (GD, GH, GW).
    ratio: fraction masked in [0, 1]; round(ratio·G) ids are masked in every sample.
    Reproducible with ``generator`` (drawn on the CPU, then moved to ``device``).
    """
    op = "random_patch_mask"
    if isinstance(grid, int) and not isinstance(grid, bool):
        n_patches = grid
    else:
        gd, gh, gw = _checks.triple(op, "grid", grid)
        n_patches = gd * gh * gw
    if n_patches <= 0 or batch <= 0:
        raise ValueError(f"{op}: batch and grid must be positive, got batch={batch}, grid={grid}")
    if not 0.0 <= float(ratio) <= 1.0:
        raise ValueError(f"{op}: ratio must lie in [0, 1], got {ratio}")
    n_masked = int(round(float(ratio) * n_patches))
    order = torch.rand(batch, n_patches, generator=generator).argsort(dim=1)
    masked = order[:, :n_masked].sort(dim=1).values
    visible = order[:, n_masked:].sort(dim=1).values
    return visible.to(device), masked.to(device)
