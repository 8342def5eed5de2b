"""Stage 1 on the held-out test cases: each stage-1 model's organ maps against the phantom's true organs.

The protocol labels its test cases with the stage-1 student (``stage1_test/``) and, when stage 1 kept its
teacher, with the teacher (``stage1_test_teacher/``): the prompts the variants read at test. Those cases
were never seen by stage 1, so their organ Dice is the held-out figure issue 18 asks for. :func:`score`
writes ``OUT/stage1_test_dice.json`` = ``{"student" | "teacher": {case_id: {organ: Dice | None}}}``
(Dice None where the organ is in neither map) and :func:`section` renders it: per organ the mean over cases of
each model, and the student-minus-teacher difference with a 95 % bootstrap CI over cases.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from anatoseg.data.atomic import read_json, write_text_atomic
from anatoseg.data.labels import ORGANS
from anatoseg.experiments import stats

NAME = "stage1_test_dice.json"
MODELS = {"pseudo": "student", "teacher": "teacher"}
"""Variant ``prompts`` value -> the stage-1 model whose maps it reads."""
MEAN = "mean organ Dice"


def score_maps(folder: Path, manifest: Path) -> dict[str, dict[str, float | None]]:
    """``{case_id: organ_dice}`` of the maps in ``folder`` against each case's true organs (case grid)."""
    from anatoseg.data import find_cases
    from anatoseg.data.case import load_case
    from anatoseg.data.volumes import with_organs_from
    from anatoseg.stage1.report import organ_dice

    scores = {}
    for files in find_cases(manifest):
        truth = load_case(files).organs
        scores[files.case_id] = organ_dice(load_case(with_organs_from(files, folder)).organs, truth)
    return scores


def score(out: Path, test_dirs: dict[str, Path], manifest: Path) -> dict:
    """Score each model's test maps (``test_dirs``: variant ``prompts`` value -> folder) unless
    ``OUT/stage1_test_dice.json`` already holds it; returns the whole file's content."""
    path = out / NAME
    scores = read_json(path) if path.exists() else {}
    missing = {MODELS[kind]: folder for kind, folder in test_dirs.items() if MODELS[kind] not in scores}
    for model, folder in missing.items():
        scores[model] = score_maps(folder, manifest)
    if missing:
        write_text_atomic(path, json.dumps(scores) + "\n")
    return scores


def _per_case(scores: dict[str, dict[str, float | None]], organ: str) -> dict[str, float]:
    """One organ's Dice per case (NaN where undefined); :data:`MEAN`: each case's mean over its organs."""
    if organ != MEAN:
        return {case: math.nan if d[organ] is None else d[organ] for case, d in scores.items()}
    out = {}
    for case, dice in scores.items():
        defined = [v for v in dice.values() if v is not None]
        out[case] = float(np.mean(defined)) if defined else math.nan
    return out


def _cell(values) -> str:
    values = np.asarray(list(values), dtype=np.float64)
    return "–" if np.all(np.isnan(values)) else f"{np.nanmean(values):.3f}"


def section(scores: dict, n_boot: int = 2000) -> list[str]:
    """The report section's lines (module docstring); a line saying so when nothing was scored."""
    if not scores:
        return ["(no stage-1 organ maps of the test cases scored yet)"]
    models = [m for m in ("teacher", "student") if m in scores]
    paired = len(models) == 2
    n_cases = len(scores[models[-1]])
    head = ["organ", *models] + (["student − teacher [95 % CI over cases]", "reading"] if paired else [])
    lines = [f"Organ Dice on the {n_cases} held-out test cases (never seen by stage 1), mean over cases; "
             "the organ maps the prompted variants read at test.", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for organ in [MEAN, *(o.name for o in ORGANS)]:
        per = {m: _per_case(scores[m], organ) for m in models}
        row = [organ, *(_cell(per[m].values()) for m in models)]
        if paired:
            cases = sorted(per["student"])
            d = np.array([per["student"][c] - per["teacher"].get(c, math.nan) for c in cases])
            if np.all(np.isnan(d)):
                row += ["–", "–"]
            else:
                ci = stats.bootstrap_ci(d, n_boot=n_boot)
                row += [f"{ci.estimate:+.3f} [{ci.low:+.3f}, {ci.high:+.3f}]", stats.reading(ci, True)
                        .replace("variant", "student").replace("reference", "teacher")]
        lines.append("| " + " | ".join(row) + " |")
    return lines
