"""One PET/CT study on the PET grid: :class:`Case`, and :func:`load_case` that builds it from files.

Conventions for every array in a Case:

- shape ``(Z, Y, X)`` (:mod:`anatoseg.data.axes`), all on the PET grid, axes
  ordered and flipped to the closest RAS directions, then reversed (index z grows
  towards the head, y towards anterior, x towards the subject's right; see
  :func:`~anatoseg.data.nifti.file_to_zyx`) unless ``canonical=False`` was asked
  for (then the file's axes, reversed); ``affine`` maps these indices to world mm;
- ``pet``: float32 SUV (g/ml);
- ``ct``: float32 HU, the CT resampled onto the PET grid (-1024 where the CT
  did not cover);
- ``lesions``: uint8 {0, 1}; ``organs``: uint8 organ ids of
  :data:`anatoseg.data.labels.ORGANS`.

Arrays read from uncompressed ``.nii`` files may be lazy memory maps; use
``np.asarray(case.pet)`` or slicing as usual.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from anatoseg.data.axes import xyz_to_zyx
from anatoseg.data.labels import LESION_LABEL_VALUES, ORGAN_LABEL_VALUES
from anatoseg.data.nifti import OnGrid, file_to_zyx, load_label_nifti, load_nifti, same_grid
from anatoseg.data.resample import resample_ct_to_pet
from anatoseg.errors import DataError


@dataclass
class Case(OnGrid):
    """A PET/CT study on the PET grid (see the module docstring for units and axis order).

    ``pet``: ``(Z, Y, X)`` float32 SUV. ``ct``: ``(Z, Y, X)`` float32 HU on the PET grid.
    ``affine``: ``(4, 4)`` float64 voxel -> world mm. ``lesions``: ``(Z, Y, X)`` uint8
    {0, 1} or None. ``organs``: ``(Z, Y, X)`` uint8 organ ids or None.
    ``meta``: free-form provenance (source paths, phantom parameters, ...).
    ``shape``: the grid ``(Z, Y, X)``; ``spacing``: voxel size in mm along Z, Y, X.
    """

    GRID_ARRAY = "pet"

    case_id: str
    pet: np.ndarray
    ct: np.ndarray
    affine: np.ndarray
    lesions: np.ndarray | None = None
    organs: np.ndarray | None = None
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.affine = np.asarray(self.affine, dtype=np.float64)
        if self.affine.shape != (4, 4):
            raise ValueError(f"{self.case_id}: affine must be 4x4, got {self.affine.shape}")
        if self.pet.ndim != 3:
            raise ValueError(f"{self.case_id}: pet must be 3D, got shape {self.pet.shape}")
        for name in ("ct", "lesions", "organs"):
            array = getattr(self, name)
            if array is not None and array.shape != self.pet.shape:
                raise ValueError(f"{self.case_id}: {name} shape {array.shape} != pet shape {self.pet.shape}")

    @property
    def voxel_volume_ml(self) -> float:
        """Volume of one voxel in ml (mm³ / 1000)."""
        return float(np.prod(self.spacing)) / 1000.0


@dataclass(frozen=True)
class CaseFiles:
    """Where the files of one case are. ``pet`` is SUV; at least one of ``ct`` (any grid)
    and ``ctres`` (CT already on the PET grid) is given; masks are on the PET grid."""

    case_id: str
    pet: Path
    ct: Path | None = None
    ctres: Path | None = None
    lesions: Path | None = None
    organs: Path | None = None
    meta: dict = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        if self.ct is None and self.ctres is None:
            raise DataError(f"case {self.case_id} has no CT (neither CT nor CTres)", self.pet)


def _on_pet_grid(volume, pet, what: str) -> np.ndarray:
    if not same_grid(volume.shape, volume.affine, pet.shape, pet.affine):
        raise DataError(f"{what} is on a different grid than the PET {pet.path} "
                        f"(shape {volume.shape} vs {pet.shape}, or affine differs)", volume.path)
    return volume.data


def load_case(files: CaseFiles, *, canonical: bool = True, mmap: bool = True) -> Case:
    """Read one case: SUV, CT onto the PET grid, optional lesion mask and organ labels.

    The CT is taken from ``ctres`` when that is on the PET grid, else resampled
    from ``ct`` (or ``ctres``) in world coordinates with fill -1024 HU. Masks must
    be on the PET grid. Arrays come back ``(Z, Y, X)``; ``canonical``: reoriented to the
    closest RAS axes first (a copy-free flip/transpose). Raises DataError naming the offending file for a
    missing/corrupt/non-3D file, NaN/inf voxels, no PET/CT overlap, unknown label
    values or a mask on another grid.
    """
    pet = load_nifti(files.pet, mmap=mmap)
    ct = None
    for source in (files.ctres, files.ct):
        if source is None:
            continue
        ct_volume = load_nifti(source, dtype=None, mmap=mmap)  # int16 stays int16 until resampled
        if same_grid(ct_volume.shape, ct_volume.affine, pet.shape, pet.affine):
            ct = ct_volume.data.astype(np.float32, copy=False)
        else:
            ct = resample_ct_to_pet(ct_volume.data, ct_volume.affine, pet.shape, pet.affine, path=source)
        break
    lesions = organs = None
    if files.lesions is not None:
        lesions = _on_pet_grid(load_label_nifti(files.lesions, LESION_LABEL_VALUES, what="lesion mask",
                                                mmap=mmap), pet, "lesion mask")
    if files.organs is not None:
        organs = _on_pet_grid(load_label_nifti(files.organs, ORGAN_LABEL_VALUES, what="organ label map",
                                               mmap=mmap), pet, "organ label map")
    reorder = file_to_zyx if canonical else xyz_to_zyx
    pet_data, affine = reorder(pet.data, pet.affine)
    ct, lesions, organs = (None if array is None else reorder(array, pet.affine)[0] for array in (ct, lesions, organs))
    meta = dict(files.meta)
    meta["files"] = {k: str(v) for k, v in (("pet", files.pet), ("ct", files.ct), ("ctres", files.ctres),
                                            ("lesions", files.lesions), ("organs", files.organs)) if v}
    return Case(case_id=files.case_id, pet=pet_data, ct=ct, affine=affine, lesions=lesions,
                organs=organs, meta=meta)
