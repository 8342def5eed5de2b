"""The data side of anatoseg: PET/CT cases, I/O, resampling, preprocessing, organ labels, phantom.

Arrays of a :class:`Case` are ``(X, Y, Z)`` on the PET grid in RAS+ voxel order;
PET in SUV, CT in HU; ``affine`` maps voxel indices to world mm.

- cases: :class:`Case`, :class:`CaseFiles`, :func:`load_case`, :func:`find_cases`,
  :func:`iter_cases` (autoPET, nnU-Net raw, manifest layouts; :mod:`.layouts`);
- NIfTI: :func:`load_nifti`, :func:`load_label_nifti`, :func:`save_nifti`, :func:`to_ras`;
- resampling in world coordinates: :func:`resample_to_grid`, :func:`resample_ct_to_pet`,
  :func:`resample_to_spacing`;
- fingerprint and preprocessing: :func:`compute_fingerprint`, :class:`Preprocessing`,
  :func:`preprocess_case`, :class:`PreprocessedCase`;
- organ label set: :data:`ORGANS`, :data:`ORGAN_IDS`, :data:`ORGAN_NAMES`, :data:`NUM_ORGANS`;
  TotalSegmentator import in :mod:`.totalseg`;
- synthetic data: :mod:`anatoseg.data.phantom`.
"""

from anatoseg.data.case import Case, CaseFiles, load_case
from anatoseg.data.fingerprint import compute_fingerprint, load_fingerprint, save_fingerprint
from anatoseg.data.labels import (
    LESION_LABEL_VALUES,
    NUM_ORGANS,
    ORGAN_IDS,
    ORGAN_LABEL_VALUES,
    ORGAN_NAMES,
    ORGANS,
    Organ,
    organ_table,
)
from anatoseg.data.layouts import detect_layout, find_cases, iter_cases
from anatoseg.data.nifti import Volume, load_label_nifti, load_nifti, save_nifti, to_ras
from anatoseg.data.preprocess import PreprocessedCase, Preprocessing, crop_to_body, preprocess_case
from anatoseg.data.resample import resample_ct_to_pet, resample_to_grid, resample_to_spacing

__all__ = [
    "LESION_LABEL_VALUES", "NUM_ORGANS", "ORGAN_IDS", "ORGAN_LABEL_VALUES", "ORGAN_NAMES", "ORGANS", "Case",
    "CaseFiles", "Organ", "PreprocessedCase", "Preprocessing", "Volume", "compute_fingerprint", "crop_to_body",
    "detect_layout", "find_cases", "iter_cases", "load_case", "load_fingerprint", "load_label_nifti", "load_nifti",
    "organ_table", "preprocess_case", "resample_ct_to_pet", "resample_to_grid", "resample_to_spacing",
    "save_fingerprint", "save_nifti", "to_ras",
]
