"""Organ label maps from TotalSegmentator v2 outputs.

TotalSegmentator's ``total`` task (v2, 117 classes) gives most organs of our
label set; the breasts come from its separate ``breasts`` task (one class,
``breast``) and the parotid and submandibular glands (``salivary_glands``) from
its ``head_glands_cavities`` task (put those masks in the same folder; that
task's multi-label map, read with ``classes=TOTALSEG_V2_HEAD_GLANDS``, gives
the glands alone). Ureters,
brown fat and uterus/ovaries have no TotalSegmentator class
(:data:`~anatoseg.data.labels.PHANTOM_ONLY`). Both output forms are read:

- a folder of per-structure binary masks, ``<folder>/<class_name>.nii.gz``
  (TotalSegmentator's default output);
- one multi-label map (``--ml``) plus its class list: a JSON ``{"1": "spleen",
  ...}`` or ``["spleen", ...]`` (ids from 1), or a text file of ``<id> <name>``
  lines. Without a class list the v2 ``total`` ids are assumed.

Classes not in :data:`TOTALSEG_TO_ORGAN` (vessels other than the aorta,
gallbladder, adrenal glands, ...) are ignored. TotalSegmentator runs on the CT, so its masks are on
the CT grid; pass ``reference`` (the PET volume) to get the map on the PET grid
(nearest-neighbour resampling in world coordinates).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from anatoseg.data.labels import ORGAN_IDS
from anatoseg.data.nifti import Volume, load_label_nifti, same_grid
from anatoseg.data.resample import resample_to_grid
from anatoseg.errors import DataError

_VERTEBRAE = ["S1", "L5", "L4", "L3", "L2", "L1"] + [f"T{i}" for i in range(12, 0, -1)] + \
    [f"C{i}" for i in range(7, 0, -1)]

TOTALSEG_V2_TOTAL: dict[int, str] = {
    1: "spleen", 2: "kidney_right", 3: "kidney_left", 4: "gallbladder", 5: "liver", 6: "stomach",
    7: "pancreas", 8: "adrenal_gland_right", 9: "adrenal_gland_left", 10: "lung_upper_lobe_left",
    11: "lung_lower_lobe_left", 12: "lung_upper_lobe_right", 13: "lung_middle_lobe_right",
    14: "lung_lower_lobe_right", 15: "esophagus", 16: "trachea", 17: "thyroid_gland", 18: "small_bowel",
    19: "duodenum", 20: "colon", 21: "urinary_bladder", 22: "prostate", 23: "kidney_cyst_left",
    24: "kidney_cyst_right", 25: "sacrum",
    **{26 + i: f"vertebrae_{name}" for i, name in enumerate(_VERTEBRAE)},
    51: "heart", 52: "aorta", 53: "pulmonary_vein", 54: "brachiocephalic_trunk",
    55: "subclavian_artery_right", 56: "subclavian_artery_left", 57: "common_carotid_artery_right",
    58: "common_carotid_artery_left", 59: "brachiocephalic_vein_left", 60: "brachiocephalic_vein_right",
    61: "atrial_appendage_left", 62: "superior_vena_cava", 63: "inferior_vena_cava",
    64: "portal_vein_and_splenic_vein", 65: "iliac_artery_left", 66: "iliac_artery_right",
    67: "iliac_vena_left", 68: "iliac_vena_right", 69: "humerus_left", 70: "humerus_right",
    71: "scapula_left", 72: "scapula_right", 73: "clavicula_left", 74: "clavicula_right",
    75: "femur_left", 76: "femur_right", 77: "hip_left", 78: "hip_right", 79: "spinal_cord",
    80: "gluteus_maximus_left", 81: "gluteus_maximus_right", 82: "gluteus_medius_left",
    83: "gluteus_medius_right", 84: "gluteus_minimus_left", 85: "gluteus_minimus_right",
    86: "autochthon_left", 87: "autochthon_right", 88: "iliopsoas_left", 89: "iliopsoas_right",
    90: "brain", 91: "skull",
    **{92 + i: f"rib_left_{i + 1}" for i in range(12)},
    **{104 + i: f"rib_right_{i + 1}" for i in range(12)},
    116: "sternum", 117: "costal_cartilages",
}
"""TotalSegmentator v2 ``total`` task: class id -> class name (117 classes)."""

TOTALSEG_V2_HEAD_GLANDS: dict[int, str] = {
    1: "eye_left", 2: "eye_right", 3: "eye_lens_left", 4: "eye_lens_right", 5: "optic_nerve_left",
    6: "optic_nerve_right", 7: "parotid_gland_left", 8: "parotid_gland_right", 9: "submandibular_gland_right",
    10: "submandibular_gland_left", 11: "nasopharynx", 12: "oropharynx", 13: "hypopharynx",
    14: "nasal_cavity_right", 15: "nasal_cavity_left", 16: "auditory_canal_right", 17: "auditory_canal_left",
    18: "soft_palate", 19: "hard_palate",
}
"""TotalSegmentator v2 ``head_glands_cavities`` task: class id -> class name (19 classes; the glands, 7-10,
are mapped)."""

_SALIVARY = ("parotid_gland_left", "parotid_gland_right", "submandibular_gland_right", "submandibular_gland_left")

_MUSCLES = ([f"gluteus_{part}_{side}" for part in ("maximus", "medius", "minimus") for side in ("left", "right")]
            + [f"{muscle}_{side}" for muscle in ("autochthon", "iliopsoas") for side in ("left", "right")])

_SKELETON = (["sacrum", "skull", "sternum", "costal_cartilages"] + [f"vertebrae_{v}" for v in _VERTEBRAE]
             + [f"rib_{side}_{i}" for side in ("left", "right") for i in range(1, 13)]
             + [f"{bone}_{side}" for bone in ("clavicula", "scapula", "humerus", "hip", "femur")
                for side in ("left", "right")])

TOTALSEG_TO_ORGAN: dict[str, str] = {
    "brain": "brain",
    "heart": "heart",
    **{f"lung_{lobe}": "lungs" for lobe in ("upper_lobe_left", "lower_lobe_left", "upper_lobe_right",
                                             "middle_lobe_right", "lower_lobe_right")},
    "liver": "liver",
    "spleen": "spleen",
    "kidney_left": "kidney_left", "kidney_cyst_left": "kidney_left",
    "kidney_right": "kidney_right", "kidney_cyst_right": "kidney_right",
    "urinary_bladder": "urinary_bladder",
    "stomach": "stomach",
    "breast": "breasts",
    **{name: "skeleton" for name in _SKELETON},
    "aorta": "aorta",
    "pancreas": "pancreas",
    "esophagus": "esophagus",
    "small_bowel": "bowel", "duodenum": "bowel", "colon": "bowel",
    "thyroid_gland": "thyroid",
    **{name: "salivary_glands" for name in _SALIVARY},
    **{name: "muscle" for name in _MUSCLES},
}
"""TotalSegmentator class name (``total``, ``breasts`` and ``head_glands_cavities`` tasks) -> organ name."""


def read_class_list(path: str | os.PathLike) -> dict[int, str]:
    """Read a multi-label class list: JSON dict ``{id: name}``, JSON list (ids from 1), or ``<id> <name>`` lines."""
    path = Path(path)
    if not path.is_file():
        raise DataError("file not found", path)
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix == ".json":
            data = json.loads(text)
            if isinstance(data, list):
                return {i + 1: str(name) for i, name in enumerate(data)}
            return {int(k): str(v) for k, v in data.items()}
        classes = {}
        for line in text.splitlines():
            if line.strip() and not line.lstrip().startswith("#"):
                key, name = line.replace(":", " ").split(maxsplit=1)
                classes[int(key)] = name.strip()
        return classes
    except (ValueError, AttributeError) as exc:
        raise DataError(f"not a class list ({exc})", path) from None


def map_classes(label_map: np.ndarray, classes: dict[int, str]) -> np.ndarray:
    """Multi-label map ``(I, J, K)`` with TotalSegmentator ids -> uint8 organ ids (unmapped classes -> 0)."""
    lut = np.zeros(max(classes, default=0) + 1, dtype=np.uint8)
    for class_id, name in classes.items():
        organ = TOTALSEG_TO_ORGAN.get(name)
        if organ is not None:
            lut[class_id] = ORGAN_IDS[organ]
    return lut[np.asarray(label_map)]


def _breasts(breasts: str | os.PathLike) -> Volume:
    path = Path(breasts)
    if path.is_dir():
        path = path / "breast.nii.gz"
    return load_label_nifti(path, {0, 1}, what="breast mask")


def _to_reference(organs: np.ndarray, affine: np.ndarray, reference: Volume | None) -> Volume:
    if reference is None or same_grid(organs.shape, affine, reference.shape, reference.affine):
        target_affine = affine if reference is None else reference.affine
        return Volume(data=organs, affine=target_affine)
    out = resample_to_grid(organs, affine, reference.shape, reference.affine, order=0, fill=0, dtype=np.uint8)
    return Volume(data=out, affine=reference.affine)


def _add_breasts(organs: np.ndarray, affine: np.ndarray, breasts) -> None:
    volume = _breasts(breasts)
    mask = volume.data
    if not same_grid(volume.shape, volume.affine, organs.shape, affine):
        mask = resample_to_grid(mask, volume.affine, organs.shape, affine, order=0, dtype=np.uint8)
    organs[(np.asarray(mask) > 0) & (organs == 0)] = ORGAN_IDS["breasts"]


def organs_from_totalseg_folder(folder: str | os.PathLike, *, breasts: str | os.PathLike | None = None,
                                reference: Volume | None = None) -> Volume:
    """Organ label map from a folder of per-structure TotalSegmentator masks.

    ``breasts``: the ``breasts`` task's output folder (``breast.nii.gz``) or mask file.
    ``reference``: put the result on this grid (the PET). Returns a uint8 Volume.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError("file not found (expected a TotalSegmentator output folder)", folder)
    organs = affine = None
    first = None
    for name, organ in TOTALSEG_TO_ORGAN.items():
        path = folder / f"{name}.nii.gz"
        if not path.is_file():
            continue
        mask = load_label_nifti(path, {0, 1}, what="structure mask")
        if organs is None:
            organs, affine, first = np.zeros(mask.shape, dtype=np.uint8), mask.affine, path
        elif not same_grid(mask.shape, mask.affine, organs.shape, affine):
            raise DataError(f"is on a different grid than {first}", path)
        organs[np.asarray(mask.data) > 0] = ORGAN_IDS[organ]
    if organs is None:
        raise DataError("no TotalSegmentator structure of the organ label set found here", folder)
    if breasts is not None:
        _add_breasts(organs, affine, breasts)
    return _to_reference(organs, affine, reference)


def organs_from_totalseg_multilabel(path: str | os.PathLike, classes: dict[int, str] | str | os.PathLike |
                                    None = None, *, breasts: str | os.PathLike | None = None,
                                    reference: Volume | None = None) -> Volume:
    """Organ label map from a TotalSegmentator multi-label map and its class list.

    ``classes``: ``{id: name}``, a class-list file (see :func:`read_class_list`), or
    None for the v2 ``total`` ids. Values in the map that the class list does not
    name raise DataError. Returns a uint8 Volume (on ``reference``'s grid if given).
    """
    if classes is None:
        classes = TOTALSEG_V2_TOTAL
    elif not isinstance(classes, dict):
        classes = read_class_list(classes)
    volume = load_label_nifti(path, {0, *classes}, what="TotalSegmentator label map")
    organs = map_classes(volume.data, classes)
    if breasts is not None:
        _add_breasts(organs, volume.affine, breasts)
    return _to_reference(organs, volume.affine, reference)
