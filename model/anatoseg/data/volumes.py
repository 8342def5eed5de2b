"""What training and inference share on the data side: the network's channel order and stage-1 organ maps.

The preprocessed image (:class:`anatoseg.data.preprocess.PreprocessedCase`) has
channels ``[CT, PET]``; the segmentation networks take ``[PET, CT]``. Both are
``(Z, Y, X)`` like every array past the loader.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from anatoseg.data.case import CaseFiles
from anatoseg.data.nifti import NIFTI_SUFFIXES
from anatoseg.errors import DataError


def pet_ct_channels(image: np.ndarray) -> np.ndarray:
    """Preprocessed ``(2, Z, Y, X)`` [CT, PET] -> network ``(2, Z, Y, X)`` [PET, CT] (a view)."""
    return image[::-1]


def with_organs_from(files: CaseFiles, organs_dir: str | Path) -> CaseFiles:
    """``files`` with the organ label map taken from ``organs_dir/<case_id>.nii.gz`` (or ``.nii``).

    This is the layout ``anato pseudolabel`` (stage 1) writes. Raises DataError if
    the case's file is missing.
    """
    folder = Path(organs_dir)
    if not folder.is_dir():
        raise DataError("organ label folder not found", folder)
    for suffix in NIFTI_SUFFIXES:
        candidate = folder / f"{files.case_id}{suffix}"
        if candidate.is_file():
            return dataclasses.replace(files, organs=candidate)
    raise DataError(f"no organ label map for case {files.case_id!r} (expected {files.case_id}.nii.gz)", folder)
