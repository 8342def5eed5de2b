"""Resampling in world coordinates, driven by the affines (never by array shapes).

A target voxel ``t`` (index vector) sits at world position ``A_dst @ t``; its
value is read from the source at index ``inv(A_src) @ A_dst @ t`` (linear or
nearest interpolation). Target voxels that fall outside the source take
``fill``: -1024 HU for CT, as autoPET's CTres, and 0 for masks.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from anatoseg.data.nifti import check_voxel_count, spacing_of
from anatoseg.errors import DataError

CT_FILL_HU = -1024.0
"""Value of CT voxels outside the CT field of view after resampling (autoPET CTres)."""


def _index_map(src_affine: np.ndarray, dst_affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(matrix (3, 3), offset (3,)) taking target indices to source indices."""
    m = np.linalg.inv(np.asarray(src_affine, float)) @ np.asarray(dst_affine, float)
    return m[:3, :3], m[:3, 3]


def overlap_fraction(src_shape, src_affine, dst_shape, dst_affine, *, samples: int = 24) -> float:
    """Fraction of the target grid's volume that lies inside the source grid (estimated).

    Tested on a ``samples``³ lattice spanning the target grid; 0.0 means the two
    images do not overlap in world space.
    """
    matrix, offset = _index_map(src_affine, dst_affine)
    axes = [np.linspace(0, n - 1, min(samples, n)) for n in dst_shape]
    pts = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, 3)
    src = pts @ matrix.T + offset
    inside = np.all((src >= -0.5) & (src <= np.asarray(src_shape) - 0.5), axis=1)
    return float(inside.mean())


def resample_to_grid(array: np.ndarray, affine: np.ndarray, shape, target_affine: np.ndarray, *,
                     order: int = 1, fill: float = 0.0, dtype=np.float32) -> np.ndarray:
    """Resample ``array`` (on ``affine``) onto the grid ``shape`` / ``target_affine``.

    ``array``: ``(I, J, K)``; ``affine``, ``target_affine``: ``(4, 4)`` voxel -> world mm.
    ``order``: 0 nearest (labels), 1 trilinear (images). Returns ``shape`` in ``dtype``.
    Memory: the output plus, for ``order`` 1, no more than the input itself.
    """
    shape = tuple(int(n) for n in shape)
    check_voxel_count(shape, np.dtype(dtype).itemsize, "the resampled grid")
    matrix, offset = _index_map(affine, target_affine)
    source = np.asarray(array)
    if order > 1:
        raise ValueError("order must be 0 (nearest) or 1 (linear); splines would copy the input as float64")
    out = np.empty(shape, dtype=dtype)
    if np.allclose(matrix, np.diag(np.diag(matrix))):
        # Axis-aligned: scipy takes the diagonal as a per-axis zoom, much faster.
        matrix = np.diag(matrix)
    ndimage.affine_transform(source, matrix, offset=offset, output_shape=shape, output=out,
                             order=order, mode="constant", cval=fill, prefilter=False)
    return out


def resample_ct_to_pet(ct: np.ndarray, ct_affine: np.ndarray, pet_shape, pet_affine: np.ndarray, *,
                       path: object | None = None) -> np.ndarray:
    """CT in HU ``(I, J, K)`` resampled onto the PET grid (trilinear, fill -1024 HU), as autoPET's CTres.

    Raises DataError naming ``path`` if the CT does not overlap the PET in world space.
    Returns a float32 array of shape ``pet_shape``.
    """
    if overlap_fraction(ct.shape, ct_affine, pet_shape, pet_affine) == 0.0:
        raise DataError("CT does not overlap the PET image in world space (check both affines)", path)
    return resample_to_grid(ct, ct_affine, pet_shape, pet_affine, order=1, fill=CT_FILL_HU)


def grid_for_spacing(shape, affine: np.ndarray, spacing, *, path: object | None = None
                     ) -> tuple[tuple[int, int, int], np.ndarray]:
    """The grid covering the same field of view as (``shape``, ``affine``) at about ``spacing`` mm.

    The new shape is ``round(n * old / new)`` per axis; the exact new spacing is
    ``old * n / n_new`` so that the outer voxel edges coincide. Axis directions
    are kept. Returns (shape, affine). DataError naming ``path`` (the image resampled)
    and the would-be size if that grid is implausibly large (before anything is allocated).
    """
    old = np.asarray(spacing_of(affine))
    n_old = np.asarray(shape, float)
    target = np.asarray(spacing, float)
    if target.shape != (3,) or not (np.isfinite(target).all() and (target > 0).all()):
        raise DataError(f"target spacing must be three positive finite numbers (mm), got {spacing}", path)
    ideal = np.maximum(1, np.round(n_old * old / target))
    check_voxel_count(ideal, 4, f"resampling to spacing {tuple(float(v) for v in target)} mm", path)
    n_new = ideal.astype(int)
    scale = n_old / n_new
    # old index of new voxel centre i: (i + 0.5) * scale - 0.5
    step = np.eye(4)
    step[:3, :3] = np.diag(scale)
    step[:3, 3] = 0.5 * scale - 0.5
    return tuple(int(n) for n in n_new), np.asarray(affine, float) @ step


def resample_to_spacing(array: np.ndarray, affine: np.ndarray, spacing, *, order: int = 1,
                        fill: float = 0.0, dtype=np.float32) -> tuple[np.ndarray, np.ndarray]:
    """Resample ``array`` ``(I, J, K)`` to about ``spacing`` mm (see :func:`grid_for_spacing`).

    Returns (array of the new shape in ``dtype``, new ``(4, 4)`` affine).
    """
    shape, new_affine = grid_for_spacing(array.shape, affine, spacing)
    return resample_to_grid(array, affine, shape, new_affine, order=order, fill=fill, dtype=dtype), new_affine
