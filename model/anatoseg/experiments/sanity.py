"""The no-learning sanity baseline: what an SUV threshold alone finds.

Steps, on the PET grid, arrays ``(Z, Y, X)`` and spacing ``(Z, Y, X)`` in mm
(:mod:`anatoseg.data.axes`):

1. threshold the SUV: ``suv >= 2.5`` (``method="fixed"``) or ``suv >= 0.4 * SUVmax``
   (``method="relative"``), SUVmax being the case's maximum over the whole volume
   (``suvmax_region="case"``, as the protocol states) or over the voxels left after step 2
   (``"outside_organs"``, which keeps the bladder's excreted tracer from setting the level);
2. remove the organs of physiological uptake (by name, default :data:`PHYSIOLOGICAL_ORGANS`)
   when an organ label map is given;
3. remove the 18-connected components (:mod:`anatoseg.metrics.components`) under 0.1 ml.

A learned model that does not beat this has learned nothing the SUV does not already say.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from anatoseg.data.labels import ORGAN_IDS
from anatoseg.metrics.components import component_sizes, components

PHYSIOLOGICAL_ORGANS = ("brain", "heart", "kidney_left", "kidney_right", "urinary_bladder")
"""Organs of high physiological FDG uptake removed by default (names of :mod:`anatoseg.data.labels`)."""

METHODS = ("fixed", "relative")
"""Threshold methods: fixed SUV, or a fraction of the case's SUVmax."""


def organ_mask(organs: np.ndarray, exclude: Sequence[str], ids: Mapping[str, int] | None = None) -> np.ndarray:
    """Boolean ``(Z, Y, X)``: voxels of ``organs`` (id map) whose organ name is in ``exclude``.

    ``ids``: name -> id, default the project's organ set (:data:`anatoseg.data.labels.ORGAN_IDS`).
    """
    ids = ORGAN_IDS if ids is None else ids
    unknown = [name for name in exclude if name not in ids]
    if unknown:
        raise ValueError(f"organ_mask: unknown organ names {unknown}; known: {sorted(ids)}")
    return np.isin(np.asarray(organs), [ids[name] for name in exclude])


def remove_small(mask: np.ndarray, spacing, min_volume_ml: float) -> np.ndarray:
    """``mask`` ``(Z, Y, X)`` without its 18-connected components under ``min_volume_ml`` (ml)."""
    labels, n = components(mask)
    voxel_ml = float(np.prod(spacing)) / 1000.0
    keep = np.concatenate([[False], component_sizes(labels, n) * voxel_ml >= min_volume_ml - 1e-12])
    return keep[labels]


def sanity_baseline(suv: np.ndarray, spacing, organs: np.ndarray | None = None, method: str = "fixed",
                    suv_threshold: float = 2.5, fraction: float = 0.4,
                    exclude: Sequence[str] = PHYSIOLOGICAL_ORGANS, ids: Mapping[str, int] | None = None,
                    min_volume_ml: float = 0.1, suvmax_region: str = "case") -> np.ndarray:
    """Lesion mask of the no-learning baseline (module docstring): boolean ``(Z, Y, X)`` on ``suv``'s grid.

    ``suv``: PET in SUV ``(Z, Y, X)``; ``spacing``: mm ``(Z, Y, X)``; ``organs``: organ id map
    ``(Z, Y, X)`` or None (no organ removal); ``method``: ``"fixed"`` (``suv >= suv_threshold``) or
    ``"relative"`` (``suv >= fraction * SUVmax``); ``exclude``: organ names removed, ``ids`` their ids.
    """
    suv = np.asarray(suv, dtype=np.float64)
    if len(tuple(spacing)) != 3 or suv.ndim != 3:
        raise ValueError(f"sanity_baseline: need suv (Z, Y, X) and spacing (Z, Y, X); got shape {suv.shape}, "
                         f"spacing {tuple(spacing)}")
    if method not in METHODS or suvmax_region not in ("case", "outside_organs"):
        raise ValueError(f"sanity_baseline: method {method!r} (one of {METHODS}), suvmax_region {suvmax_region!r} "
                         "(one of ('case', 'outside_organs'))")
    removed = np.zeros(suv.shape, dtype=bool)
    if organs is not None:
        if np.shape(organs) != suv.shape:
            raise ValueError(f"sanity_baseline: organ map shape {np.shape(organs)} != suv shape {suv.shape}")
        removed = organ_mask(organs, exclude, ids)
    if method == "fixed":
        level = suv_threshold
    else:
        region = suv[~removed] if suvmax_region == "outside_organs" else suv
        level = fraction * float(region.max()) if region.size else np.inf
    return remove_small((suv >= level) & ~removed, spacing, min_volume_ml)
