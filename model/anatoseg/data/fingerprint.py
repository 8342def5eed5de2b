"""Dataset fingerprint (nnU-Net style): spacings, shapes and body intensity statistics, as JSON.

Computed by streaming the cases once. Per case, ``samples_per_case`` voxels are
drawn at random inside the body (the body box of
:func:`~anatoseg.data.preprocess.body_bbox`, CT above -500 HU); the intensity
statistics are taken over the pooled samples. The JSON looks like::

    {"format": "anatoseg-fingerprint", "version": 1, "axes": "zyx", "n_cases": 3,
     "case_ids": [...], "settings": {"samples_per_case": 10000, "seed": 0, "body_threshold_hu": -500},
     "spacings": [[4.0, 4.0, 4.0], ...], "shapes": [[...], ...],
     "body_shapes": [[...], ...], "median_spacing": [...], "median_shape": [...],
     "median_body_shape": [...],
     "intensity": {"ct": {"mean", "std", "min", "max", "median", "percentile_00_5",
                          "percentile_99_5", "clipped_mean", "clipped_std"},
                   "pet": {...same keys...}},
     "lesions": {"n_with_mask": 3, "n_positive": 2, "median_lesion_volume_ml": 4.2},
     "organs": {"n_with_labels": 3, "cases_with": {"liver": 3, ...}}}

Spacings and shapes are (Z, Y, X) (``"axes": "zyx"``; a fingerprint without it was
written in (X, Y, Z) order and is refused). CT values are HU, PET values SUV;
``clipped_*`` are taken after clipping to the
0.5/99.5 percentiles. :meth:`anatoseg.data.preprocess.Preprocessing.from_fingerprint`
turns it into preprocessing defaults. :func:`stale_reason` says why a stored
fingerprint does not describe a dataset (other case ids, other settings).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from anatoseg.data.atomic import read_json, write_text_atomic
from anatoseg.data.axes import AXES, check_axes
from anatoseg.data.case import Case
from anatoseg.data.labels import ORGANS
from anatoseg.data.preprocess import BODY_THRESHOLD_HU, body_bbox
from anatoseg.errors import DataError
from anatoseg.metrics.components import component_sizes, components

FINGERPRINT_FORMAT = "anatoseg-fingerprint"


def sample_body_voxels(case: Case, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Up to ``n`` random body voxels of ``case``: (CT HU values, SUV values), each ``(m,)`` float32, m <= n."""
    box = body_bbox(case.ct, case.spacing)
    lo = np.array([s.start for s in box])
    hi = np.array([s.stop for s in box])
    picked_ct, picked_pet, have = [], [], 0
    for _ in range(8):  # rejection sampling inside the box; the body fills most of it
        # Drawn as (x, y, z) columns, then reversed: the same voxels as when cases were (X, Y, Z), so a
        # dataset's fingerprint (and every normalisation derived from it) did not change with the axis order.
        idx = tuple(rng.integers(lo[::-1], hi[::-1], size=(4 * n, 3)).T[::-1])
        ct = np.asarray(case.ct[idx], dtype=np.float32)
        keep = ct > BODY_THRESHOLD_HU
        picked_ct.append(ct[keep])
        picked_pet.append(np.asarray(case.pet[idx], dtype=np.float32)[keep])
        have += int(keep.sum())
        if have >= n:
            break
    return np.concatenate(picked_ct)[:n], np.concatenate(picked_pet)[:n]


def _stats(values: np.ndarray) -> dict:
    if values.size == 0:
        raise DataError("no body voxels found in any case (is the CT in HU?)")
    lo, hi = np.percentile(values, [0.5, 99.5])
    clipped = np.clip(values, lo, hi)
    return {"mean": float(values.mean()), "std": float(values.std()), "min": float(values.min()),
            "max": float(values.max()), "median": float(np.median(values)),
            "percentile_00_5": float(lo), "percentile_99_5": float(hi),
            "clipped_mean": float(clipped.mean()), "clipped_std": float(clipped.std())}


def _lesion_volumes_ml(mask: np.ndarray, voxel_ml: float) -> list[float]:
    labels, n = components(np.asarray(mask) > 0)
    return (component_sizes(labels, n) * voxel_ml).tolist()


def compute_fingerprint(cases: Iterable[Case], *, samples_per_case: int = 10_000, seed: int = 0) -> dict:
    """Fingerprint of a dataset, streaming ``cases`` once (see the module docstring for the keys)."""
    ids, spacings, shapes, body_shapes = [], [], [], []
    ct_values, pet_values, lesion_volumes = [], [], []
    n_masks = n_positive = n_organ_maps = 0
    organ_counts = {organ.name: 0 for organ in ORGANS}
    for index, case in enumerate(cases):
        rng = np.random.default_rng([seed, index])
        ids.append(case.case_id)
        spacings.append(list(case.spacing))
        shapes.append(list(case.shape))
        body_shapes.append([int(s.stop - s.start) for s in body_bbox(case.ct, case.spacing)])
        ct, pet = sample_body_voxels(case, samples_per_case, rng)
        ct_values.append(ct)
        pet_values.append(pet)
        if case.lesions is not None:
            n_masks += 1
            volumes = _lesion_volumes_ml(case.lesions, case.voxel_volume_ml)
            n_positive += bool(volumes)
            lesion_volumes += volumes
        if case.organs is not None:
            n_organ_maps += 1
            present = np.bincount(np.asarray(case.organs).ravel(), minlength=len(ORGANS) + 1)
            for organ in ORGANS:
                organ_counts[organ.name] += bool(present[organ.id])
    if not ids:
        raise DataError("the dataset has no cases")
    return {
        "format": FINGERPRINT_FORMAT, "version": 1, "axes": AXES, "n_cases": len(ids), "case_ids": ids,
        "settings": _settings(samples_per_case, seed),
        "spacings": spacings, "shapes": shapes, "body_shapes": body_shapes,
        "median_spacing": np.median(spacings, axis=0).tolist(),
        "median_shape": np.median(shapes, axis=0).tolist(),
        "median_body_shape": np.median(body_shapes, axis=0).tolist(),
        "intensity": {"ct": _stats(np.concatenate(ct_values)), "pet": _stats(np.concatenate(pet_values))},
        "lesions": {"n_with_mask": n_masks, "n_positive": n_positive,
                    "median_lesion_volume_ml": float(np.median(lesion_volumes)) if lesion_volumes else None},
        "organs": {"n_with_labels": n_organ_maps, "cases_with": organ_counts},
    }


def _settings(samples_per_case: int, seed: int) -> dict:
    return {"samples_per_case": samples_per_case, "seed": seed, "body_threshold_hu": BODY_THRESHOLD_HU}


def stale_reason(fingerprint: dict, case_ids: Iterable[str], *, samples_per_case: int = 10_000,
                 seed: int = 0) -> str | None:
    """Why ``fingerprint`` was not computed from the cases ``case_ids`` with these settings; None if it was.

    A fingerprint without ``"settings"`` (written before they were recorded) is judged by its case ids.
    """
    stored, found = set(fingerprint.get("case_ids") or ()), set(case_ids)
    if stored != found:
        missing, new = sorted(stored - found), sorted(found - stored)
        example = (new or missing)[0]
        return (f"computed from other cases ({len(new)} of the dataset's {len(found)} cases are not in it, "
                f"{len(missing)} of its cases are not in the dataset, e.g. {example!r})")
    settings = fingerprint.get("settings")
    wanted = _settings(samples_per_case, seed)
    if settings is not None and settings != wanted:
        return f"computed with other settings ({settings} vs {wanted})"
    return None


def save_fingerprint(fingerprint: dict, path: str | os.PathLike) -> Path:
    """Write the fingerprint as indented JSON (atomically)."""
    path = Path(path)
    write_text_atomic(path, json.dumps(fingerprint, indent=2) + "\n")
    return path


def load_fingerprint(path: str | os.PathLike) -> dict:
    """Read a fingerprint JSON; DataError naming the file if it is missing or not a fingerprint,
    ConfigError if it is not in (Z, Y, X) order."""
    path = Path(path)
    fingerprint = read_json(path)
    if not isinstance(fingerprint, dict) or fingerprint.get("format") != FINGERPRINT_FORMAT:
        raise DataError(f'not an anatoseg fingerprint (no "format": "{FINGERPRINT_FORMAT}")', path)
    check_axes(fingerprint.get("axes"), "fingerprint", path)
    return fingerprint
