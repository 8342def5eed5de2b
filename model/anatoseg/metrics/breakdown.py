"""Where the errors are: false positives by the organ they fall in, sensitivity by lesion attribute.

Components are 18-connected as everywhere in :mod:`anatoseg.metrics` (:mod:`.components`). A
component's *organ* is the label of an organ map ``(Z, Y, X)`` holding most of its voxels, with
background (0) and every id missing from ``names`` pooled as ``"other"`` (so a component lying
mostly outside every named organ is ``"other"``); ties go to the lowest id. Volumes in ml from the
spacing ``(Z, Y, X)`` in mm.

FP tables pool organs into the groups of :data:`FP_ORGAN_GROUPS` (:func:`grouped_organs`), and a
generator's lesion list is matched to the GT components by each lesion's centre
(:func:`tags_by_centre`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from anatoseg.data.labels import ORGAN_IDS, ORGAN_NAMES
from anatoseg.metrics.components import component_sizes, components, touched

OTHER = "other"
"""The organ name of a component lying mostly outside every named organ."""

SIZE_BINS_ML = ((0.0, 1.0, "<1 ml"), (1.0, 5.0, "1-5 ml"), (5.0, 20.0, "5-20 ml"), (20.0, float("inf"), ">20 ml"))
"""GT lesion size bins ``(low, high, name)``: ``low <= volume < high`` in ml."""


FP_ORGAN_GROUPS = {"brain": ("brain",), "bladder": ("urinary_bladder",), "kidney": ("kidney_left", "kidney_right"),
                   "ureter": ("ureters",), "heart": ("heart",), "bowel": ("bowel",), "brown fat": ("brown_fat",),
                   "thyroid": ("thyroid",)}
"""Where false positives are counted: organ group -> organ names (:mod:`anatoseg.data.labels`); every other
organ and the background are ``"other"``. Left and right organs are one group."""

LESION_TAGS = ("site", "hard", "relation", "diameter_mm", "contrast")
"""Lesion-list attributes copied into the lesion records by :func:`tags_by_centre`."""


def _names(names: Mapping[int, str] | None) -> dict[int, str]:
    names = dict(ORGAN_NAMES if names is None else names)
    names.pop(0, None)
    return names


def component_organs(labels: np.ndarray, ids: Sequence[int], organs: np.ndarray,
                     names: Mapping[int, str] | None = None) -> list[str]:
    """Organ name of each component ``ids`` of ``labels`` ``(Z, Y, X)`` in the organ map ``organs``
    ``(Z, Y, X)`` (module docstring); ``names``: organ id -> name, default the project's organ set."""
    names = _names(names)
    organs = np.asarray(organs)
    if organs.shape != labels.shape:
        raise ValueError(f"component_organs: organ map shape {organs.shape} != labels shape {labels.shape}")
    keys = np.where(np.isin(organs, list(names)), organs, 0).astype(np.int64)
    width = int(max(names, default=0)) + 1
    inside = labels > 0
    votes = np.bincount(labels[inside].astype(np.int64) * width + keys[inside],
                        minlength=(int(labels.max(initial=0)) + 1) * width).reshape(-1, width)
    return [names.get(int(np.argmax(votes[k])), OTHER) for k in ids]


def false_positives_by_organ(pred: np.ndarray, gt: np.ndarray, organs: np.ndarray, spacing,
                             names: Mapping[int, str] | None = None) -> dict[str, dict[str, float]]:
    """False-positive components of ``pred`` (touching no voxel of ``gt``) by organ.

    ``pred``, ``gt``, ``organs``: ``(Z, Y, X)`` on one grid (masks nonzero = lesion; organ ids);
    ``spacing``: mm ``(Z, Y, X)``. Returns ``{organ name: {"count": n, "volume_ml": v}}`` for every
    name of ``names`` and ``"other"`` (zeros included, so tables have fixed columns).
    """
    pred, gt = np.asarray(pred) > 0, np.asarray(gt) > 0
    if pred.shape != gt.shape:
        raise ValueError(f"false_positives_by_organ: pred shape {pred.shape} != gt shape {gt.shape}")
    voxel_ml = float(np.prod(spacing)) / 1000.0
    labels, n = components(pred)
    fp_ids = [k + 1 for k, hit in enumerate(touched(labels, n, gt)) if not hit]
    sizes = component_sizes(labels, n)
    out = {name: {"count": 0, "volume_ml": 0.0} for name in [*_names(names).values(), OTHER]}
    for k, organ in zip(fp_ids, component_organs(labels, fp_ids, organs, names)):
        out[organ]["count"] += 1
        out[organ]["volume_ml"] += float(sizes[k - 1]) * voxel_ml
    return out


def size_bin(volume_ml: float, bins=SIZE_BINS_ML) -> str:
    """Name of the size bin holding ``volume_ml`` (:data:`SIZE_BINS_ML`)."""
    for low, high, name in bins:
        if low <= volume_ml < high:
            return name
    raise ValueError(f"size_bin: volume {volume_ml} ml outside every bin")


def lesion_records(pred: np.ndarray, gt: np.ndarray, spacing, tags: Mapping[int, Mapping[str, object]] | None = None,
                   organs: np.ndarray | None = None, names: Mapping[int, str] | None = None) -> list[dict]:
    """One record per GT lesion: ``{"lesion", "volume_ml", "size", "detected"[, "organ"], **tags}``.

    ``pred``, ``gt`` (and ``organs``): ``(Z, Y, X)``; ``spacing`` mm ``(Z, Y, X)``. ``"lesion"`` is
    the lesion's label 1..n in ``components(gt)`` (18-connectivity, scipy's raster order), which is
    also the key of ``tags`` (caller attributes, e.g. ``{3: {"site": "bone"}}``). ``detected``: the
    lesion shares a voxel with ``pred`` (autoPET's TP). ``organ`` only when ``organs`` is given.
    """
    pred, gt = np.asarray(pred) > 0, np.asarray(gt) > 0
    if pred.shape != gt.shape:
        raise ValueError(f"lesion_records: pred shape {pred.shape} != gt shape {gt.shape}")
    voxel_ml = float(np.prod(spacing)) / 1000.0
    labels, n = components(gt)
    volumes = component_sizes(labels, n) * voxel_ml
    hits = touched(labels, n, pred)
    ids = list(range(1, n + 1))
    hosts = component_organs(labels, ids, organs, names) if organs is not None else None
    records = []
    for k in ids:
        record = {"lesion": k, "volume_ml": float(volumes[k - 1]), "size": size_bin(float(volumes[k - 1])),
                  "detected": bool(hits[k - 1])}
        if hosts is not None:
            record["organ"] = hosts[k - 1]
        records.append({**record, **(tags or {}).get(k, {})})
    return records


def sensitivity_by(records: Sequence[Mapping], attribute: str = "size") -> dict[object, dict[str, float]]:
    """Lesion sensitivity per value of ``attribute`` over :func:`lesion_records` rows (of one or many
    cases): ``{value: {"tp", "n", "sensitivity"}}``; for ``"size"`` every bin appears, in bin order."""
    keys = [name for _, _, name in SIZE_BINS_ML] if attribute == "size" else []
    out = {key: {"tp": 0, "n": 0} for key in keys}
    for record in records:
        if attribute not in record:
            continue
        entry = out.setdefault(record[attribute], {"tp": 0, "n": 0})
        entry["n"] += 1
        entry["tp"] += int(bool(record["detected"]))
    for entry in out.values():
        entry["sensitivity"] = entry["tp"] / entry["n"] if entry["n"] else None
    return out


def grouped_organs(organs: np.ndarray, groups: Mapping[str, Sequence[str]] = FP_ORGAN_GROUPS,
                   ids: Mapping[str, int] | None = None) -> tuple[np.ndarray, dict[int, str]]:
    """``(group map, names)``: ``organs`` ``(Z, Y, X)`` (organ ids) relabelled uint8 with group ids 1..G
    (0 = in no group), and ``{group id: group name}`` for :func:`false_positives_by_organ`.

    ``groups``: group name -> organ names; names missing from ``ids`` (default the project's label
    set) are skipped, so a label set without, say, ureters still gives every column."""
    ids = ORGAN_IDS if ids is None else ids
    organs = np.asarray(organs)
    lut = np.zeros(max(int(organs.max(initial=0)), max(ids.values(), default=0)) + 1, dtype=np.uint8)
    for group_id, members in enumerate(groups.values(), start=1):
        for name in members:
            if name in ids:
                lut[ids[name]] = group_id
    return lut[organs], dict(enumerate(groups, start=1))


def _tag_value(key: str, value):
    if key == "hard":  # None/False/True or a reason string: one JSON-safe key per kind
        return "no" if not value else ("yes" if value is True else str(value))
    return value


def tags_by_centre(gt: np.ndarray, lesions: Sequence[Mapping], affine: np.ndarray | None = None,
                   keys: Sequence[str] = LESION_TAGS) -> tuple[dict[int, dict], int]:
    """Match a generator's lesion list to the GT components: ``({component: tags}, unmatched)``.

    ``gt``: ``(Z, Y, X)`` mask; ``lesions``: dicts with ``centre_zyx`` (voxel index on ``gt``'s grid)
    or ``centre_mm`` (world mm, mapped through the inverse of ``affine`` ``(4, 4)`` of the ``(Z, Y, X)``
    grid). A lesion belongs to the component (``components(gt)``, as :func:`lesion_records` numbers
    them) at its centre voxel, or else to the most common one in the 3×3×3 block around it; none
    there counts as unmatched. Two lesions in one component keep the first one's tags and add
    ``"merged"`` (the count of the others). ``keys``: the attributes copied.
    """
    labels, _ = components(np.asarray(gt) > 0)
    inverse = np.linalg.inv(np.asarray(affine, dtype=np.float64)) if affine is not None else None
    tags: dict[int, dict] = {}
    unmatched = 0
    for lesion in lesions:
        if "centre_zyx" in lesion:
            centre = np.asarray(lesion["centre_zyx"], dtype=np.float64)
        elif "centre_mm" in lesion and inverse is not None:
            centre = (inverse @ np.append(np.asarray(lesion["centre_mm"], dtype=np.float64), 1.0))[:3]
        else:
            raise ValueError("tags_by_centre: a lesion needs centre_zyx, or centre_mm and the grid's affine")
        index = np.clip(np.rint(centre).astype(int), 0, np.array(labels.shape) - 1)
        block = labels[tuple(slice(max(0, i - 1), i + 2) for i in index)]
        found = int(labels[tuple(index)]) or (int(np.bincount(block[block > 0]).argmax()) if block.any() else 0)
        if not found:
            unmatched += 1
        elif found in tags:
            tags[found]["merged"] = tags[found].get("merged", 0) + 1
        else:
            tags[found] = {key: _tag_value(key, lesion[key]) for key in keys if key in lesion}
    return tags, unmatched
