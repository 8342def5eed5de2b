"""NIfTI reading and writing with nibabel, keeping the voxel-to-world affine.

:func:`load_nifti` keeps the file's voxel order ``(I, J, K)``; the 4×4 affine maps
voxel indices to world millimetres (NIfTI RAS+: x from the subject's left to Right,
y from posterior to Anterior, z from inferior to Superior). Everything past the
loader is ``(Z, Y, X)`` (:mod:`anatoseg.data.axes`): :func:`file_to_zyx` reorients
a file's array to the closest RAS axes and reverses them (copy-free), and
:func:`zyx_to_file` undoes exactly that before a result is written on the file's grid.

Every problem with a file becomes a :class:`~anatoseg.errors.DataError` that
names the file: missing, not NIfTI, corrupt or truncated, not 3D, NaN/inf
voxels, label values outside the allowed set.
"""

from __future__ import annotations

import os
import zlib
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from anatoseg.data.atomic import atomic_path
from anatoseg.data.axes import xyz_to_zyx, zyx_to_xyz
from anatoseg.errors import DataError

NIFTI_SUFFIXES = (".nii.gz", ".nii")
_SLAB_VOXELS = 1 << 22  # finite/label checks read at most this many voxels at a time
SPACING_RANGE_MM = (1e-2, 1e2)
"""Voxel sizes outside this range (mm) are refused as implausible (a broken header or units)."""
MAX_VOXELS = int(os.environ.get("ANATO_MAX_VOXELS", 1 << 31))
"""Largest grid (voxels) a file or a resampling target may have (``ANATO_MAX_VOXELS`` overrides)."""


def check_voxel_count(shape, itemsize: int, what: str, path: object | None = None) -> None:
    """DataError naming ``path`` and the would-be size if a grid of ``shape`` exceeds :data:`MAX_VOXELS`.

    Called before anything of that size is allocated."""
    count = int(np.prod(np.asarray(shape, dtype=np.float64)))
    if count > MAX_VOXELS:
        dims = "x".join(str(int(n)) for n in shape)
        raise DataError(f"{what} would be {dims} = {count:.3g} voxels ({count * itemsize / 1e9:.3g} GB), more "
                        f"than the limit of {MAX_VOXELS:.3g} (ANATO_MAX_VOXELS); check the voxel sizes", path)


def check_spacing(affine: np.ndarray, path: object | None = None) -> None:
    """DataError naming ``path`` if a voxel size of ``affine`` lies outside :data:`SPACING_RANGE_MM`."""
    spacing = spacing_of(affine)
    low, high = SPACING_RANGE_MM
    if not all(low <= s <= high for s in spacing):
        shown = ", ".join(f"{s:.3g}" for s in spacing)
        raise DataError(f"implausible voxel size ({shown}) mm: each must lie in [{low:g}, {high:g}] mm "
                        "(broken header or wrong units?)", path)


def is_nifti(path: str | os.PathLike) -> bool:
    """True if the file name ends in ``.nii`` or ``.nii.gz``."""
    return str(path).endswith(NIFTI_SUFFIXES)


def strip_nifti_suffix(name: str) -> str:
    """``"case_0001.nii.gz"`` -> ``"case_0001"``."""
    for suffix in NIFTI_SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


class OnGrid:
    """``shape`` and ``spacing`` of an image whose array attribute is named by ``GRID_ARRAY``."""

    GRID_ARRAY = "data"

    @property
    def shape(self) -> tuple[int, int, int]:
        """The array's shape (for every array past the loader: ``(Z, Y, X)``)."""
        return tuple(int(n) for n in getattr(self, self.GRID_ARRAY).shape)

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel size in mm along each array axis (column norms of the affine)."""
        return spacing_of(self.affine)


@dataclass(frozen=True)
class Volume(OnGrid):
    """A 3D image and where it lies in the world.

    ``data``: ``(I, J, K)`` array (a copy-on-write memory map for unscaled ``.nii``).
    ``affine``: ``(4, 4)`` float64, voxel index -> world mm.
    ``path``: the file it came from, if any.
    """

    data: np.ndarray
    affine: np.ndarray
    path: Path | None = None


def spacing_of(affine: np.ndarray) -> tuple[float, float, float]:
    """Voxel size in mm along each array axis of a ``(4, 4)`` affine."""
    return tuple(float(v) for v in np.linalg.norm(np.asarray(affine)[:3, :3], axis=0))


def same_grid(shape_a, affine_a, shape_b, affine_b, *, atol_mm: float = 1e-2) -> bool:
    """True if two grids have the same shape and the same voxel centres (within ``atol_mm``)."""
    if tuple(shape_a) != tuple(shape_b):
        return False
    a, b = np.asarray(affine_a, float), np.asarray(affine_b, float)
    # Compare the world positions of the grid's corners rather than raw matrix entries.
    corners = np.array([[i, j, k, 1.0] for i in (0, shape_a[0] - 1)
                        for j in (0, shape_a[1] - 1) for k in (0, shape_a[2] - 1)]).T
    return bool(np.abs(a @ corners - b @ corners).max() <= atol_mm)


def _open(path: Path, mmap: bool):
    if not path.exists():
        raise DataError("file not found", path)
    if path.is_dir():
        raise DataError("is a folder; expected a NIfTI file (.nii or .nii.gz)", path)
    if not is_nifti(path):
        raise DataError("not a NIfTI file name (expected .nii or .nii.gz)", path)
    import nibabel as nib  # imported here: the array-only helpers of this module work without it

    try:
        img = nib.load(str(path), mmap=mmap and not str(path).endswith(".gz"))
    except Exception as exc:  # nibabel raises many types for bad headers
        raise DataError(f"cannot read NIfTI header ({type(exc).__name__}: {exc})", path) from None
    if not isinstance(img, nib.Nifti1Image):
        raise DataError(f"not a NIfTI-1/2 image ({type(img).__name__})", path)
    shape = img.shape
    if len(shape) > 3 and all(n == 1 for n in shape[3:]):
        shape = shape[:3]
    if len(shape) != 3:
        raise DataError(f"is a {len(img.shape)}D image of shape {tuple(img.shape)}; expected a 3D volume", path)
    if min(shape) < 1:
        raise DataError(f"has an empty shape {tuple(img.shape)}", path)
    affine = np.asarray(img.affine, dtype=np.float64)
    if not np.isfinite(affine).all():
        raise DataError("has an invalid (non-finite) affine", path)
    check_spacing(affine, path)
    if abs(np.linalg.det(affine[:3, :3])) < 1e-9:
        raise DataError("has an invalid (singular) affine", path)
    check_voxel_count(shape, img.get_data_dtype().itemsize, "the image", path)
    return img, shape, affine


def read_header(path: str | os.PathLike) -> tuple[tuple[int, int, int], np.ndarray]:
    """``(shape, affine)`` of a 3D NIfTI file without reading its voxels; DataError as :func:`load_nifti`
    for a missing, unreadable, non-3D file or one with an implausible voxel size or grid size."""
    _, shape, affine = _open(Path(path), mmap=False)
    return tuple(int(n) for n in shape), affine


def _read(img, path: Path, shape, dtype) -> np.ndarray:
    try:
        data = np.asanyarray(img.dataobj, dtype=dtype) if dtype is not None else np.asanyarray(img.dataobj)
    except (EOFError, OSError, ValueError, zlib.error) as exc:
        raise DataError(f"truncated or corrupt image data ({type(exc).__name__}: {exc})", path) from None
    return data.reshape(shape)


def _slabs(array: np.ndarray):
    """Views of ``array`` along its last axis, each of at most ~_SLAB_VOXELS voxels."""
    per = max(1, _SLAB_VOXELS // max(1, int(np.prod(array.shape[:-1]))))
    for k in range(0, array.shape[-1], per):
        yield array[..., k:k + per]


def check_finite(array: np.ndarray, path: object | None = None) -> None:
    """Raise DataError if ``array`` holds NaN or ±inf (checked in slabs, no full-size temporaries)."""
    if not np.issubdtype(array.dtype, np.floating):
        return
    for slab in _slabs(array):
        if not np.isfinite(slab).all():
            bad = int((~np.isfinite(slab)).sum())
            raise DataError(f"contains NaN or infinite voxels (at least {bad})", path)


def check_labels(array: np.ndarray, allowed: Collection[int], path: object | None = None,
                 what: str = "label map") -> None:
    """Raise DataError if ``array`` holds a value outside ``allowed`` (or a non-integer value)."""
    allowed_set = {int(v) for v in allowed}
    found: set[int] = set()
    for slab in _slabs(array):
        if np.issubdtype(slab.dtype, np.floating):
            if not np.isfinite(slab).all() or (slab != np.round(slab)).any():
                raise DataError(f"{what} holds non-integer values", path)
        lo, hi = int(slab.min()), int(slab.max())
        if lo < 0 or hi > 65535:
            found.update(int(v) for v in np.unique(slab))
        else:
            found.update(np.flatnonzero(np.bincount(slab.astype(np.int64).ravel(), minlength=1)).tolist())
    unknown = sorted(found - allowed_set)
    if unknown:
        shown = ", ".join(str(v) for v in unknown[:8]) + (", ..." if len(unknown) > 8 else "")
        raise DataError(f"{what} holds unknown values {shown} (allowed: {_ranges(sorted(allowed_set))})", path)


def _ranges(values: list[int]) -> str:
    parts, start = [], None
    for i, v in enumerate(values):
        if start is None:
            start = v
        if i + 1 == len(values) or values[i + 1] != v + 1:
            parts.append(str(start) if start == v else f"{start}-{v}")
            start = None
    return ", ".join(parts)


def load_nifti(path: str | os.PathLike, *, dtype=np.float32, mmap: bool = True,
               check: bool = True) -> Volume:
    """Read a 3D NIfTI image.

    ``dtype``: returned array dtype (scaling ``scl_slope``/``scl_inter`` applied);
    ``None`` keeps the stored type. An uncompressed ``.nii`` whose stored type
    equals ``dtype`` and that has no scaling comes back as a copy-on-write
    memory map when ``mmap`` is true: nothing is read until used.
    ``check``: reject NaN/inf voxels (floating types only).
    A 4D file whose extra axes have length 1 is accepted as 3D.
    """
    path = Path(path)
    img, shape, affine = _open(path, mmap)
    data = _read(img, path, shape, dtype)
    if check:
        check_finite(data, path)
    return Volume(data=data, affine=affine, path=path)


def load_label_nifti(path: str | os.PathLike, allowed: Collection[int], *, what: str = "label map",
                     mmap: bool = True) -> Volume:
    """Read a 3D integer label map as ``uint8`` (``uint16`` if ``allowed`` needs it).

    Raises DataError naming the file if it holds a value not in ``allowed``.
    """
    path = Path(path)
    img, shape, affine = _open(path, mmap)
    raw = _read(img, path, shape, None)
    check_labels(raw, allowed, path, what)
    out_dtype = np.uint8 if max(allowed, default=0) < 256 else np.uint16
    data = raw if raw.dtype == out_dtype else raw.astype(out_dtype)
    return Volume(data=data, affine=affine, path=path)


def save_nifti(path: str | os.PathLike, data: np.ndarray, affine: np.ndarray, *, dtype=None) -> Path:
    """Write ``data`` ``(I, J, K)`` with ``affine`` ``(4, 4)`` atomically; returns the path.

    The affine goes into both sform and qform (code 1, scanner), units mm.
    ``dtype`` (default: the array's) is the stored type, without scaling:
    use ``np.int16`` for HU, ``np.float32`` for SUV, ``np.uint8`` for masks.
    """
    path = Path(path)
    if not is_nifti(path):
        raise DataError("output must end in .nii or .nii.gz", path)
    array = np.asarray(data)
    if dtype is not None:
        array = array.astype(dtype, copy=False)
    if array.ndim != 3:
        raise ValueError(f"save_nifti expects a 3D array, got shape {array.shape}")
    import nibabel as nib

    img = nib.Nifti1Image(array, np.asarray(affine, dtype=np.float64))
    img.header.set_data_dtype(array.dtype)
    img.header.set_xyzt_units("mm")
    img.set_sform(img.affine, code=1)
    img.set_qform(img.affine, code=1)
    img.header["scl_slope"], img.header["scl_inter"] = 1.0, 0.0
    with atomic_path(path) as tmp:
        nib.save(img, str(tmp))
    return path


def to_ras(data: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Flip/transpose ``data`` so its axes run closest to R, A, S; return (view, new affine).

    nibabel's orientation helpers: ``io_orientation`` (direction cosines made orthogonal,
    axes assigned by the largest cosine, as ``as_closest_canonical``), ``apply_orientation``
    (flips and a transpose: a view, no copy, so memory maps stay lazy) and ``inv_ornt_aff``.
    Every voxel keeps its world position: ``new_affine @ j == affine @ i`` for the same voxel.
    """
    import nibabel as nib

    ornt = nib.orientations.io_orientation(np.asarray(affine, dtype=np.float64))
    out = nib.orientations.apply_orientation(data, ornt)
    return out, np.asarray(affine, dtype=np.float64) @ nib.orientations.inv_ornt_aff(ornt, data.shape)


def from_ras(array: np.ndarray, original_affine: np.ndarray) -> np.ndarray:
    """Undo :func:`to_ras`: ``array`` in RAS order back to the voxel order of a
    file whose affine is ``original_affine`` (a view)."""
    import nibabel as nib

    original = nib.orientations.io_orientation(np.asarray(original_affine, dtype=np.float64))
    back = nib.orientations.ornt_transform(nib.orientations.axcodes2ornt("RAS"), original)
    return nib.orientations.apply_orientation(array, back)


def file_to_zyx(data: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A file's ``(I, J, K)`` array as ``(Z, Y, X)``: reoriented to the closest RAS axes
    (:func:`to_ras`), then reversed (:func:`~anatoseg.data.axes.xyz_to_zyx`). Returns (view, affine);
    every voxel keeps its world position."""
    return xyz_to_zyx(*to_ras(data, affine))


def zyx_to_file(array: np.ndarray, file_affine: np.ndarray) -> np.ndarray:
    """Undo :func:`file_to_zyx`: a ``(Z, Y, X)`` array on the grid read from a file whose affine is
    ``file_affine``, back in that file's voxel order (write it with ``file_affine``)."""
    return from_ras(zyx_to_xyz(array), file_affine)
