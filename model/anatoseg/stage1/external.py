"""Teacher labels made elsewhere: organ predictions on the target CTs, read instead of a trained teacher.

``anato pseudolabel --teacher-labels DIR`` reads, for every target case ``<case_id>``, one of

- ``DIR/<case_id>/``: a folder of per-structure files ``<class_name>.nii.gz`` in
  TotalSegmentator's naming (its default output; the ``breasts`` task's
  ``breast.nii.gz`` may sit in the same folder). Values are binary masks or
  probabilities in [0, 1] (e.g. a model's per-class softmax);
- ``DIR/<case_id>.nii.gz``: one multi-label map (TotalSegmentator ``--ml``) whose
  class list is ``DIR/<case_id>.json`` or ``DIR/classes.json`` (any form
  :func:`anatoseg.data.totalseg.read_class_list` reads), else the v2 ``total`` ids.

Classes are mapped to the organ label set by
:data:`anatoseg.data.totalseg.TOTALSEG_TO_ORGAN` (an organ's probability is the
largest of its classes'); unmapped classes are ignored. The files may be on any
grid (the CT's, usually): each organ's probability is resampled (trilinear, in
world coordinates) onto the case's stage-1 working grid. There a voxel takes the
most probable organ when that probability reaches 0.5, else background; its
confidence is that probability (background: one minus the best organ's).
Binary masks thus give confidence 1 inside and outside organs and about 0.5 on
their borders, which the class-balanced filtering of :mod:`.filtering` drops first.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from anatoseg.data.labels import ORGAN_IDS
from anatoseg.data.nifti import load_label_nifti, load_nifti
from anatoseg.data.preprocess import PreprocessedCase
from anatoseg.data.resample import resample_to_grid
from anatoseg.data.totalseg import TOTALSEG_TO_ORGAN, TOTALSEG_V2_TOTAL, read_class_list
from anatoseg.errors import DataError

ORGAN_THRESHOLD = 0.5  # a voxel is an organ's when that organ's probability reaches this


def _folder_organs(folder: Path) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """``(organ id, probability (I, J, K) float32, affine)`` per organ with a file in ``folder``."""
    by_organ: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    for name, organ in TOTALSEG_TO_ORGAN.items():
        path = folder / f"{name}.nii.gz"
        if not path.is_file():
            continue
        volume = load_nifti(path)
        data = np.asarray(volume.data, dtype=np.float32)
        if data.size and (float(data.min()) < 0.0 or float(data.max()) > 1.0):
            raise DataError(f"holds values outside [0, 1] (expected a mask or probabilities, found "
                            f"{float(data.min()):.3g}..{float(data.max()):.3g})", path)
        organ_id = ORGAN_IDS[organ]
        if organ_id in by_organ:
            previous, affine = by_organ[organ_id]
            if previous.shape != data.shape or not np.allclose(affine, volume.affine, atol=1e-2):
                raise DataError("is on another grid than the other files of its organ", path)
            np.maximum(previous, data, out=previous)
        else:
            by_organ[organ_id] = (data, volume.affine)
    if not by_organ:
        raise DataError("no structure of the organ label set found here (expected TotalSegmentator files "
                        "such as liver.nii.gz)", folder)
    for organ_id, (data, affine) in sorted(by_organ.items()):
        yield organ_id, data, affine


def _multilabel_organs(path: Path) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """As :func:`_folder_organs` for a multi-label map (class list beside it, module docstring)."""
    classes = TOTALSEG_V2_TOTAL
    for candidate in (path.with_name(path.name[: -len(".nii.gz")] + ".json"), path.parent / "classes.json"):
        if candidate.is_file():
            classes = read_class_list(candidate)
            break
    volume = load_label_nifti(path, {0, *classes}, what="TotalSegmentator label map")
    data = np.asarray(volume.data)
    for organ_name, organ_id in ORGAN_IDS.items():
        ids = [k for k, name in classes.items() if TOTALSEG_TO_ORGAN.get(name) == organ_name]
        if ids:
            mask = np.isin(data, ids)
            if mask.any():
                yield organ_id, mask.astype(np.float32), volume.affine


def _organ_sources(root: Path, case_id: str) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    folder, single = root / case_id, root / f"{case_id}.nii.gz"
    if folder.is_dir():
        return _folder_organs(folder)
    if single.is_file():
        return _multilabel_organs(single)
    raise DataError(f"no teacher labels for case {case_id!r} (expected {folder.name}/ with per-structure "
                    f"files or {single.name})", root)


def external_labels(root: str | os.PathLike, case_id: str, work: PreprocessedCase) -> tuple[np.ndarray, np.ndarray]:
    """The teacher labels of one target case on its working grid (module docstring).

    ``work``: the case on the stage-1 working grid (``work.affine``, shape ``work.image.shape[1:]``).
    Returns ``labels`` ``(Z, Y, X)`` uint8 organ ids and ``confidence`` ``(Z, Y, X)`` float32 in [0, 1].
    DataError when the case has no labels in ``root`` or a file is not a mask/probability map.
    """
    root = Path(root)
    shape = work.image.shape[1:]
    best = np.zeros(shape, dtype=np.float32)
    labels = np.zeros(shape, dtype=np.uint8)
    for organ_id, probability, affine in _organ_sources(root, case_id):
        on_grid = resample_to_grid(probability, affine, shape, work.affine, order=1, fill=0.0)
        better = on_grid > best
        best[better] = on_grid[better]
        labels[better] = organ_id
    organ = best >= ORGAN_THRESHOLD
    labels[~organ] = 0
    confidence = np.where(organ, best, 1.0 - best).astype(np.float32)
    return labels, confidence
