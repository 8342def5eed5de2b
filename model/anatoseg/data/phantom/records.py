"""What the manifest says about each lesion and uptake source, measured on the generated case.

A lesion's ``relation`` comes from the organ map on the fine (CT) grid: ``"inside:<organ>"`` when
at least half of its voxels (volume fraction >= 0.5) lie in that organ, else ``"abutting:<organ>"``
for the organ with the most voxels in the lesion grown by one voxel, else ``"none"``; ``touches``
lists every organ in the grown lesion other than the one it is inside, most voxels first. ``volume_ml``
is the lesion's partial-volume sum on that grid. ``centre_zyx`` is the voxel of the lesion's
centre on the PET grid, in the ``(Z, Y, X)`` order of a loaded case, after the PET–CT
misregistration (so it lies in the lesion's SEG component); a lesion smaller than a voxel gets
its marked voxel in the 3×3×3 block around the centre.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from anatoseg.data.labels import ORGAN_NAMES
from anatoseg.data.phantom.body import Anatomy
from anatoseg.data.phantom.grid import Grid
from anatoseg.data.phantom.misregister import Misregistration


def relation(fractions: np.ndarray, organs: np.ndarray) -> tuple[str, list[str]]:
    """(relation, touches) of a lesion with volume ``fractions`` on the organ block ``organs`` (same shape)."""
    inside = fractions >= 0.5
    if not inside.any():
        inside = fractions == fractions.max()
    counts = np.bincount(organs[inside], minlength=len(ORGAN_NAMES))
    host = int(np.argmax(counts[1:])) + 1
    host = host if counts[host] * 2 >= inside.sum() else 0
    contact = np.bincount(organs[ndimage.binary_dilation(inside)], minlength=len(ORGAN_NAMES))
    contact[[0, host]] = 0
    touches = [ORGAN_NAMES[int(i)] for i in np.argsort(-contact, kind="stable") if contact[i] > 0]
    if host:
        return f"inside:{ORGAN_NAMES[host]}", touches
    return (f"abutting:{touches[0]}" if touches else "none"), touches


def pet_voxel(point, pet: Grid, misregistration: Misregistration) -> np.ndarray:
    """Index ``(i, j, k)`` (X, Y, Z order, clamped) of the PET voxel showing the CT-frame world ``point``."""
    p = misregistration.to_pet(point)
    return np.array(pet.index_of(p))


def _zyx(index) -> list[int]:
    return [int(index[2]), int(index[1]), int(index[0])]


def _in_mask(index: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``index`` if the mask holds it, else the nearest marked voxel of the 3×3×3 block around it (if any)."""
    if mask[tuple(index)]:
        return index
    lo = np.maximum(index - 1, 0)
    block = mask[tuple(slice(a, a + 3) for a in lo)]
    marked = np.argwhere(block) + lo
    if not len(marked):
        return index
    return marked[np.argmin(np.square(marked - index).sum(axis=1))]


def lesion_records(pieces, organs_fine: np.ndarray, fine: Grid, pet: Grid, mask: np.ndarray,
                   misregistration: Misregistration) -> list[dict]:
    """Manifest entries of the lesions of ``pieces`` (``(lesion, slices, fractions)`` on ``fine``, one per
    lesion): :meth:`~anatoseg.data.phantom.lesions.Lesion.info` plus ``volume_ml``, ``relation``,
    ``touches`` and ``centre_zyx``. ``mask``: the SEG ``(X, Y, Z)`` on ``pet``."""
    voxel_ml = float(np.prod(fine.spacing)) / 1000.0
    records = []
    for lesion, slices, fractions in pieces:
        where, touches = relation(fractions, organs_fine[slices])
        index = _in_mask(pet_voxel(lesion.shape.centre, pet, misregistration), mask)
        records.append({**lesion.info(), "volume_ml": round(float(fractions.sum()) * voxel_ml, 3),
                        "relation": where, "touches": touches, "centre_zyx": _zyx(index)})
    return records


def source_records(anatomy: Anatomy, suv_table: np.ndarray, pet: Grid,
                   misregistration: Misregistration) -> list[dict]:
    """Manifest entries of the uptake sources that are not lesions: kind, organ (None for the unlabelled
    injection site and reactive nodes), ``centre_zyx`` on the PET grid, and the source's SUV."""
    return [{"kind": kind, "organ": organ, "centre_zyx": _zyx(pet_voxel(centre, pet, misregistration)),
             "suv": round(float(suv_table[tissue]), 2)}
            for kind, organ, centre, tissue in anatomy.sources]
