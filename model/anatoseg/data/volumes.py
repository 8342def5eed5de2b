"""Bridging the data side's arrays and the network's, shared by training and inference.

The data side (:mod:`anatoseg.data`) keeps arrays as ``(X, Y, Z)`` (RAS) with the
preprocessed image's channels ``[CT, PET]``. The networks take ``(Z, Y, X)`` and
channels ``[PET, CT]``. These helpers return views, never copies.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from anatoseg.data.case import CaseFiles
from anatoseg.data.nifti import NIFTI_SUFFIXES
from anatoseg.errors import DataError


def network_image(image_cxyz: np.ndarray) -> np.ndarray:
    """Preprocessed ``(2, X, Y, Z)`` [CT, PET] -> network ``(2, Z, Y, X)`` [PET, CT] (a view)."""
    return image_cxyz[::-1].transpose(0, 3, 2, 1)


def network_labels(labels_xyz: np.ndarray) -> np.ndarray:
    """``(X, Y, Z)`` -> ``(Z, Y, X)`` (a view)."""
    return labels_xyz.transpose(2, 1, 0)


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
