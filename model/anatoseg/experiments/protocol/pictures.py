"""``python -m anatoseg.experiments.protocol.pictures FOLDER DEST [--seed K] [--variant NAME] [--without NAME]``.

One picture per outcome type of a protocol run (issue 19), for the seed ``K`` models of ``--variant`` (default
the full method) and ``--without`` (default the no-prompt network):

- ``fp-removed``: the test case where ``--variant`` has the most fewer false-positive components in uptake
  organs than ``--without`` (drawn twice: both networks' predictions);
- ``abutting-found``: a lesion abutting an organ that ``--variant`` found (one ``--without`` missed first, then
  one in another case than ``fp-removed``'s, then the largest);
- ``miss``: the largest lesion ``--variant`` missed.

Cases are chosen from the units' case records alone (:func:`choose`); only the chosen ones are predicted again
with the run's trained models (``units/<variant>__seed<k>/train/model.pt``, the organ maps the unit read) and
drawn with :func:`anatoseg.viz.render_png` (PET MIPs, ground truth filled green, prediction in magenta, the true
organ outlines). Writes ``DEST/<outcome>.png`` (``fp-removed`` also ``DEST/fp-removed-without.png``) and
``DEST/pictures.json`` (what was chosen and why; an outcome no case shows is recorded as such, without a
picture). Errors are one line on stderr and exit status 1.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from anatoseg.data.atomic import read_json, write_text_atomic
from anatoseg.errors import AnatoError
from anatoseg.experiments.protocol import units
from anatoseg.experiments.protocol.report import case_value
from anatoseg.experiments.protocol.variants import REFERENCE, test_time

OUTCOMES = ("fp-removed", "abutting-found", "miss")
MANIFEST = Path("data") / "test" / "manifest.json"


def _lesions(case: dict) -> list[dict]:
    return case.get("lesions") or []


def choose(with_cases: list[dict], without_cases: list[dict]) -> dict[str, dict | None]:
    """``{outcome: choice or None}`` (module docstring) from two units' case records of the same test cases.

    A choice holds ``case`` and ``why`` (one line), and ``lesion`` (its record) for the lesion outcomes."""
    without = {case["case"]: case for case in without_cases}
    chosen: dict[str, dict | None] = dict.fromkeys(OUTCOMES)
    removed = [(case_value(without[c["case"]], "fp_uptake") - case_value(c, "fp_uptake"),
                case_value(without[c["case"]], "fpv_uptake_ml") - case_value(c, "fpv_uptake_ml"), c["case"])
               for c in with_cases if c["case"] in without]
    if removed and max(removed)[0] > 0:
        count, volume, case = max(removed)
        chosen["fp-removed"] = {"case": case, "why": f"{count} fewer false-positive components in uptake organs "
                                                     f"({volume:.1f} ml less)"}
    found, shown = [], chosen["fp-removed"] and chosen["fp-removed"]["case"]
    for case in with_cases:
        missed = {lesion["lesion"] for lesion in _lesions(without.get(case["case"], {})) if not lesion["detected"]}
        found += [(lesion["lesion"] in missed, case["case"] != shown, lesion["volume_ml"], case["case"], lesion)
                  for lesion in _lesions(case)
                  if lesion["detected"] and str(lesion.get("relation", "")).startswith("abutting")]
    if found:
        first_missed, _, _, case, lesion = max(found, key=lambda f: f[:3])
        chosen["abutting-found"] = {"case": case, "lesion": lesion,
                                    "why": f"lesion {lesion['lesion']} ({lesion['site']}, {lesion['relation']}, "
                                           f"{lesion['volume_ml']:.2f} ml) found"
                                           + (", missed without" if first_missed else "")}
    misses = [(lesion["volume_ml"], case["case"], lesion) for case in with_cases for lesion in _lesions(case)
              if not lesion["detected"]]
    if misses:
        volume, case, lesion = max(misses, key=lambda m: m[0])
        chosen["miss"] = {"case": case, "lesion": lesion,
                          "why": f"largest lesion missed: lesion {lesion['lesion']} ({lesion['site']}, "
                                 f"{lesion['relation']}, {volume:.2f} ml)"}
    return chosen


def _unit(folder: Path, variant: str, seed: int) -> dict:
    path = units.unit_path(folder, variant, seed)
    if not path.is_file():
        raise ValueError(f"{folder}: no unit of {variant!r} at seed {seed} ({path.name})")
    return read_json(path)


def _predict(folder: Path, unit: dict, case_ids: set[str]) -> dict[str, tuple]:
    """``{case_id: (Case with its truth, predicted mask)}`` of ``case_ids`` with the unit's trained model."""
    from anatoseg.data.case import load_case
    from anatoseg.experiments.protocol.stages import organ_inputs
    from anatoseg.stage1.run import REPORT_NAME

    spec = unit["spec"]
    model = units.model_folder(folder, spec.get("trained_as") or unit["variant"], unit["seed"]) / "model.pt"
    if not model.is_file():
        raise ValueError(f"{folder}: {unit['variant']!r} seed {unit['seed']} has no trained model ({model})")
    organs = None
    if spec["prompts"] is not None:
        inputs = organ_inputs(read_json(folder / "stage1" / REPORT_NAME), folder, {spec["prompts"]})
        organs = inputs.get(spec["prompts"])
    _, cases = units.probabilities(model, folder / MANIFEST, organs and organs.test_dir, "cpu", test_time(spec),
                                   case_ids)
    return {files.case_id: (load_case(files), prob >= 0.5) for files, _, prob in cases}


def draw(folder: str | Path, dest: str | Path, seed: int = 0, variant: str = REFERENCE,
         without: str = "no prompts") -> dict:
    """Choose, predict and draw (module docstring); returns what ``DEST/pictures.json`` holds."""
    from anatoseg.viz import render_png

    folder, dest = Path(folder), Path(dest)
    with_unit, without_unit = _unit(folder, variant, seed), _unit(folder, without, seed)
    chosen = choose(with_unit["cases"], without_unit["cases"])
    wanted = {choice["case"] for choice in chosen.values() if choice}
    ours = _predict(folder, with_unit, wanted)
    theirs = _predict(folder, without_unit, {chosen["fp-removed"]["case"]} if chosen["fp-removed"] else set())
    dest.mkdir(parents=True, exist_ok=True)
    record = {"folder": str(folder), "seed": seed, "variant": variant, "without": without, "outcomes": {}}
    for outcome, choice in chosen.items():
        if choice is None:
            record["outcomes"][outcome] = {"picture": None, "why": "no test case shows it"}
            continue
        pages = [(f"{outcome}.png", f"{variant} (seed {seed}): {choice['why']}", ours)]
        if outcome == "fp-removed":
            pages.append((f"{outcome}-without.png", f"{without} (seed {seed}), the network {variant} is compared with",
                          theirs))
        for name, caption, predictions in pages:
            case, pred = predictions[choice["case"]]
            render_png(dest / name, case.pet, case.affine, ct=case.ct, lesions=case.lesions, pred=pred,
                       organs=case.organs, title=f"{outcome}: {case.case_id}, {caption}")
        record["outcomes"][outcome] = {**choice, "picture": [name for name, _, _ in pages]}
    write_text_atomic(dest / "pictures.json", json.dumps(record, indent=1) + "\n")
    return record


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m anatoseg.experiments.protocol.pictures",
                                     description="One picture per outcome type of a protocol run.")
    parser.add_argument("folder", type=Path, help="a protocol run folder with its trained models")
    parser.add_argument("dest", type=Path, help="folder for the PNGs and pictures.json")
    parser.add_argument("--seed", type=int, default=0, help="the models' training seed (default 0)")
    parser.add_argument("--variant", default=REFERENCE, help=f"the network shown (default {REFERENCE!r})")
    parser.add_argument("--without", default="no prompts", help="the network it is compared with "
                                                                "(default 'no prompts')")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    try:
        record = draw(args.folder, args.dest, args.seed, args.variant, args.without)
    except (AnatoError, ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for outcome, entry in record["outcomes"].items():
        print(f"{outcome}: {entry.get('case', '-')}: {entry['why']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
