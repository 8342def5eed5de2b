"""Stage-1 inputs: the labelled CT organ set (source domain) and the PET-CT set (target domain).

Every case is brought to the working grid with
:func:`anatoseg.data.preprocess.preprocess_case` (crop to the body, resample to
``Stage1Data.spacing``, normalise CT and SUV with the fixed :data:`PREPROCESSING`
numbers: HU and SUV are absolute units, and a normalisation fitted per dataset
would itself differ between the two domains).

The source set is either

- any dataset :func:`anatoseg.data.layouts.find_cases` reads (autoPET tree,
  nnU-Net raw, manifest; e.g. ``anato phantom OUT --domain diagnostic``) whose
  cases carry organ label maps, or
- a TotalSegmentator-format set: ``<root>/<subject>/ct.nii.gz`` with the
  per-structure masks in ``<root>/<subject>/segmentations/`` (mapped to the organ
  label set by :func:`anatoseg.data.totalseg.organs_from_totalseg_folder`; the
  ``breasts`` task's ``breast.nii.gz`` is used when it is there). These have no
  PET; the teacher only reads the CT.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
from tqdm import tqdm

from anatoseg.data.case import Case, load_case
from anatoseg.data.layouts import find_cases
from anatoseg.data.nifti import file_to_zyx, load_nifti
from anatoseg.data.preprocess import PreprocessedCase, Preprocessing, preprocess_case
from anatoseg.data.totalseg import organs_from_totalseg_folder
from anatoseg.errors import DataError

CT_CLIP_HU = (-1000.0, 1500.0)
SUV_CLIP = (0.0, 30.0)


def make_preprocessing(spacing) -> Preprocessing:
    """The fixed stage-1 normalisation at ``spacing`` (mm along Z, Y, X).

    CT: clip to [-1000, 1500] HU, then HU / 300 (soft tissue near 0, lung near -3).
    PET: clip SUV to [0, 30], then (SUV - 1) / 3.
    """
    return Preprocessing(target_spacing=tuple(float(s) for s in spacing), ct_clip=CT_CLIP_HU, ct_mean=0.0,
                         ct_std=300.0, suv_clip=SUV_CLIP, suv_mean=1.0, suv_std=3.0)


@dataclass
class Stage1Case:
    """One case on the working grid, plus what is needed to go back to its PET grid.

    ``work``: the preprocessed case; ``work.image`` is ``(2, Z, Y, X)`` float32
    (channel 0 CT, channel 1 PET; PET is all zero for TotalSegmentator sources)
    and ``work.organs`` the ``(Z, Y, X)`` uint8 organ ids on the working grid or None.
    ``truth``: ground-truth organ ids ``(Z, Y, X)`` uint8 on the case's own
    (canonical PET) grid, or None. ``output_shape``, ``output_affine``: the PET
    grid as stored in its file (the grid output label maps are written on).
    """

    case_id: str
    work: PreprocessedCase
    truth: np.ndarray | None
    output_shape: tuple[int, int, int]
    output_affine: np.ndarray


def _file_grid(case: Case) -> tuple[tuple[int, int, int], np.ndarray]:
    """The PET grid as stored in the PET file (case grids are reoriented and (Z, Y, X)); the case's own grid
    else. Label maps are resampled straight onto it, so they are written in the file's own voxel order."""
    path = case.meta.get("files", {}).get("pet")
    if path is None:
        return case.shape, case.affine
    img = nib.load(path)
    return tuple(int(n) for n in img.shape[:3]), np.asarray(img.affine, dtype=np.float64)


def prepare_case(case: Case, params: Preprocessing) -> Stage1Case:
    """Bring ``case`` to the working grid (see :class:`Stage1Case`)."""
    shape, affine = _file_grid(case)
    truth = None if case.organs is None else np.asarray(case.organs, dtype=np.uint8)
    return Stage1Case(case_id=case.case_id, work=preprocess_case(case, params), truth=truth,
                      output_shape=shape, output_affine=affine)


def _totalseg_subjects(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir()
                  if p.is_dir() and (p / "segmentations").is_dir() and
                  any((p / f"ct{suffix}").is_file() for suffix in (".nii.gz", ".nii")))


def _totalseg_case(subject: Path) -> Case:
    ct_path = next(subject / f"ct{s}" for s in (".nii.gz", ".nii") if (subject / f"ct{s}").is_file())
    ct = load_nifti(ct_path)
    breasts = subject / "segmentations" / "breast.nii.gz"
    organs = organs_from_totalseg_folder(subject / "segmentations", breasts=breasts if breasts.is_file() else None,
                                         reference=ct)
    ct_data, affine = file_to_zyx(ct.data, ct.affine)
    organs_data = file_to_zyx(organs.data, ct.affine)[0]
    pet = np.broadcast_to(np.float32(0.0), ct_data.shape)
    return Case(case_id=subject.name, pet=pet, ct=ct_data, affine=affine, organs=organs_data,
                meta={"files": {"ct": str(ct_path)}})


def load_source(source: str | os.PathLike, params: Preprocessing, *, progress: bool = True) -> list[Stage1Case]:
    """The labelled source set on the working grid. DataError if it has no case with organ labels."""
    source = Path(source)
    if not source.exists():
        raise DataError("file not found (expected the labelled CT organ set)", source)
    subjects = _totalseg_subjects(source) if source.is_dir() else []
    if subjects:
        return [prepare_case(_totalseg_case(s), params)
                for s in tqdm(subjects, desc="source cases (TotalSegmentator)", unit="case", disable=not progress)]
    files = [f for f in find_cases(source) if f.organs is not None]
    if not files:
        raise DataError("no labelled cases: the teacher needs organ label maps (ORGANS.nii.gz in autoPET "
                        "folders, 'organs' in a manifest, or TotalSegmentator <subject>/ct.nii.gz + "
                        "segmentations/)", source)
    return [prepare_case(load_case(f), params)
            for f in tqdm(files, desc="source cases", unit="case", disable=not progress)]


def load_target(target: str | os.PathLike, params: Preprocessing, *, progress: bool = True) -> list[Stage1Case]:
    """The PET-CT set on the working grid; ground-truth organs are kept when present (for the report)."""
    target = Path(target)
    if not target.exists():
        raise DataError("file not found (expected the PET-CT set)", target)
    return [prepare_case(load_case(f), params)
            for f in tqdm(find_cases(target), desc="target cases", unit="case", disable=not progress)]
