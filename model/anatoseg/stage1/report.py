"""Organ Dice of the stage-1 models against ground-truth organs, and the report table.

Per case and organ, ``Dice = 2 |P ∩ T| / (|P| + |T|)`` on the PET grid; an organ
absent from both the prediction and the truth has no Dice (``None``) and is left
out of the means. A model's per-organ Dice is the mean over cases; its mean Dice
is the mean over organs of those (every organ weighs the same, whatever its size).
"""

from __future__ import annotations

import numpy as np

from anatoseg.data.labels import ORGANS


def organ_dice(prediction: np.ndarray, truth: np.ndarray) -> dict[str, float | None]:
    """Dice per organ of the label set; ``prediction``, ``truth``: ``(Z, Y, X)`` integer organ ids."""
    size = len(ORGANS) + 1
    pred, true = prediction.ravel().astype(np.int64), truth.ravel().astype(np.int64)
    pair = np.bincount(pred * size + true, minlength=size * size).reshape(size, size)
    out: dict[str, float | None] = {}
    for organ in ORGANS:
        total = pair[organ.id].sum() + pair[:, organ.id].sum()
        out[organ.name] = None if total == 0 else float(2 * pair[organ.id, organ.id] / total)
    return out


def summarise(per_case: dict[str, dict[str, float | None]]) -> dict:
    """``{"per_organ": {name: mean Dice | None}, "mean_dice": float | None, "n_cases": int}`` from
    ``{case_id: organ_dice(...)}``."""
    per_organ = {}
    for organ in ORGANS:
        values = [d[organ.name] for d in per_case.values() if d[organ.name] is not None]
        per_organ[organ.name] = float(np.mean(values)) if values else None
    defined = [v for v in per_organ.values() if v is not None]
    return {"per_organ": per_organ, "mean_dice": float(np.mean(defined)) if defined else None,
            "n_cases": len(per_case)}


def format_table(models: dict[str, dict]) -> str:
    """Organs as rows, models as columns (``{model: summarise(...)}``), and a ``mean`` row."""
    names = list(models)
    header = ["organ", *names]
    rows = [[organ.name, *(_cell(models[m]["per_organ"][organ.name]) for m in names)] for organ in ORGANS]
    rows.append(["mean", *(_cell(models[m]["mean_dice"]) for m in names)])
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths)))
             for row in [header, *rows]]
    rule = "-" * len(lines[0])
    return "\n".join([lines[0], rule, *lines[1:-1], rule, lines[-1]])


def _cell(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"
