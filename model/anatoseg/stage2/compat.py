"""Whether a stage-2 checkpoint was pretrained on inputs preprocessed like the stage-3 run that loads it.

Encoders pretrained at another spacing or intensity normalisation see other
inputs in stage 3 than the ones they learned on; stage 3 calls
:func:`check_pretrained_preprocessing` with the meta that
:func:`anatoseg.checkpoint.load_encoders` returns and its own preprocessing.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

#: The :class:`~anatoseg.data.preprocess.Preprocessing` fields compared, and what they mean.
COMPARED = {"target_spacing": "target spacing (Z, Y, X mm)", "ct_clip": "CT clip (HU)", "ct_mean": "CT mean (HU)",
            "ct_std": "CT std (HU)", "suv_clip": "SUV clip", "suv_mean": "SUV mean", "suv_std": "SUV std",
            "crop_margin_mm": "body-crop margin (mm)"}
RELATIVE_TOLERANCE = 1e-3


def check_pretrained_preprocessing(stage2_meta: Mapping, stage3_preprocessing: Mapping) -> list[str]:
    """The differences between the stage-2 checkpoint's preprocessing and stage 3's; empty = compatible.

    stage2_meta: the ``meta`` of a ``kind="encoders"`` checkpoint (its ``preprocessing``
    entry, a :meth:`~anatoseg.data.preprocess.Preprocessing.to_dict` dict as JSON types).
    stage3_preprocessing: stage 3's ``Preprocessing.to_dict()`` (tuples or lists).
    Numbers agree within a relative :data:`RELATIVE_TOLERANCE`. One line per differing
    field, e.g. ``"target spacing (Z, Y, X mm): [3.0, 2.0, 2.0] in stage 2, [2.0, 2.0, 2.0] here"``.
    """
    if not isinstance(stage3_preprocessing, Mapping):
        raise TypeError(f"stage3_preprocessing must be a dict, got {type(stage3_preprocessing).__name__}")
    recorded = stage2_meta.get("preprocessing") if isinstance(stage2_meta, Mapping) else None
    if not isinstance(recorded, Mapping):
        return ["the stage-2 checkpoint records no preprocessing (pretrained on volumes given directly); "
                "its inputs cannot be checked against stage 3's"]
    problems = []
    for key, what in COMPARED.items():
        ours, theirs = _values(recorded.get(key)), _values(stage3_preprocessing.get(key))
        if not _close(ours, theirs):
            problems.append(f"{what}: {_show(ours)} in stage 2, {_show(theirs)} here")
    return problems


def _values(value) -> list[float] | None:
    """A number or a sequence of numbers as a list of floats; None when missing or not numeric."""
    items = value if isinstance(value, (list, tuple)) else [value]
    try:
        return [float(v) for v in items]
    except (TypeError, ValueError):
        return None


def _close(a: list[float] | None, b: list[float] | None) -> bool:
    if a is None or b is None:
        return a is b
    return len(a) == len(b) and all(math.isclose(x, y, rel_tol=RELATIVE_TOLERANCE, abs_tol=1e-9)
                                    for x, y in zip(a, b))


def _show(values: list[float] | None) -> str:
    if values is None:
        return "not recorded"
    return f"{values[0]:g}" if len(values) == 1 else "[" + ", ".join(f"{v:g}" for v in values) + "]"
