"""The data side of anatoseg: PET/CT cases, I/O, resampling, preprocessing, organ labels, phantom.

Arrays of a :class:`Case`, and every array, size and spacing past the NIfTI loader,
are ``(Z, Y, X)`` (:mod:`.axes`): on the PET grid, RAS+ axes reversed; PET in SUV,
CT in HU; ``affine`` maps voxel indices to world mm.

- cases: :class:`Case`, :class:`CaseFiles`, :func:`load_case`, :func:`find_cases`,
  :func:`iter_cases` (autoPET, nnU-Net raw, manifest layouts; :mod:`.layouts`);
- NIfTI: :func:`load_nifti`, :func:`load_label_nifti`, :func:`save_nifti`, and the axis
  conversions at the edges: :func:`file_to_zyx` (read), :func:`zyx_to_file` (write);
- resampling in world coordinates: :func:`resample_to_grid`, :func:`resample_ct_to_pet`,
  :func:`resample_to_spacing`;
- fingerprint and preprocessing: :func:`compute_fingerprint`, :class:`Preprocessing`,
  :func:`preprocess_case`, :class:`PreprocessedCase`;
- organ label set: :data:`ORGANS`, :data:`ORGAN_IDS`, :data:`ORGAN_NAMES`, :data:`NUM_ORGANS`;
  TotalSegmentator import in :mod:`.totalseg`;
- synthetic data: :mod:`anatoseg.data.phantom`.
"""

from anatoseg.data.axes import AXES, xyz_to_zyx, zyx_to_xyz
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
from anatoseg.data.nifti import Volume, file_to_zyx, load_label_nifti, load_nifti, save_nifti, to_ras, zyx_to_file
from anatoseg.data.preprocess import PreprocessedCase, Preprocessing, crop_to_body, preprocess_case
from anatoseg.data.resample import resample_ct_to_pet, resample_to_grid, resample_to_spacing

__all__ = [
    "AXES", "LESION_LABEL_VALUES", "NUM_ORGANS", "ORGAN_IDS", "ORGAN_LABEL_VALUES", "ORGAN_NAMES", "ORGANS", "Case",
    "CaseFiles", "Organ", "PreprocessedCase", "Preprocessing", "Volume", "compute_fingerprint", "crop_to_body",
    "detect_layout", "find_cases", "iter_cases", "load_case", "load_fingerprint", "load_label_nifti", "load_nifti",
    "organ_table", "preprocess_case", "resample_ct_to_pet", "resample_to_grid", "resample_to_spacing",
    "save_fingerprint", "save_nifti", "to_ras", "file_to_zyx", "xyz_to_zyx", "zyx_to_file", "zyx_to_xyz",
]
