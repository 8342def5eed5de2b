"""``anato demo``: the whole method end to end on synthetic phantoms.

1. phantom cohorts: a diagnostic-CT organ set, PET-CT training cases, held-out PET-CT test cases;
2. stage 1 (``stage1/``): teacher on the organ set, student on the PET-CT set -> organ pseudo-labels;
3. stage 2 (``stage2/``): cross-modal masked-patch pretraining of the PET/CT encoders;
4. stage 3 (``stage3/``): segmentation training from the stage-2 encoders with the pseudo-label prompts;
5. whole-body prediction of the test cases (prompts from the stage-1 model), NIfTI in ``predictions/``;
6. ``metrics.json`` / ``metrics.csv``, a table on the terminal, lesions found by size (the phantom's
   sub-millilitre lesions span 1-15 voxels at 4 mm and are rarely found), and MIP PNGs in ``png/``.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path

from anatoseg.data.atomic import write_text_atomic
from anatoseg.demo.plan import FULL, QUICK, DemoPlan
from anatoseg.errors import AnatoError

SEEDS = {"organ_ct": 101, "train": 202, "test": 303}


def _step(name: str, timings: dict[str, float], say: Callable[[str], None]):
    class _Timer:
        def __enter__(self):
            say(f"== {name}")
            self.start = time.perf_counter()

        def __exit__(self, *exc):
            timings[name] = round(time.perf_counter() - self.start, 1)
            say(f"   {name}: {timings[name]:.1f} s")

    return _Timer()


def run_demo(out: str | os.PathLike, *, quick: bool = False, progress: bool = True,
             say: Callable[[str], None] = print) -> dict:
    """Run every stage into ``out`` (must be empty or absent); returns the summary (also ``summary.json``)."""
    from anatoseg.data.phantom import generate_cohort
    from anatoseg.inference.predict import Predictor, predict_cases
    from anatoseg.metrics import aggregate, sensitivity_by
    from anatoseg.metrics.files import evaluate_paths
    from anatoseg.metrics.report import format_table, write_csv, write_json
    from anatoseg.stage1 import build_config, report_text, run_pseudolabel
    from anatoseg.stage2.run import run_pretrain
    from anatoseg.stage3.run import run_train
    from anatoseg.training.fingerprint import FINGERPRINT_NAME

    plan: DemoPlan = QUICK if quick else FULL
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise AnatoError("output folder is not empty; choose a new one", out)
    out.mkdir(parents=True, exist_ok=True)
    data, timings = out / "data", {}
    start = time.perf_counter()

    with _step("phantom cohorts", timings, say):
        cohorts = {
            "organ_ct": generate_cohort(data / "organ_ct", cases=plan.organ_cases, seed=SEEDS["organ_ct"],
                                        spacing=plan.spacing, domain="diagnostic", progress=progress),
            "train": generate_cohort(data / "petct_train", cases=plan.train_cases, seed=SEEDS["train"],
                                     spacing=plan.spacing, domain="petct", progress=progress),
            "test": generate_cohort(data / "petct_test", cases=plan.test_cases, seed=SEEDS["test"],
                                    spacing=plan.spacing, domain="petct", progress=progress),
        }
    with _step("stage 1: organ pseudo-labels", timings, say):
        stage1 = run_pseudolabel(cohorts["organ_ct"].parent, cohorts["train"].parent, out / "stage1",
                                 build_config(overrides=plan.stage1_overrides()))
        say(report_text(stage1))
    with _step("stage 2: cross-modal pretraining", timings, say):
        stage2 = run_pretrain(cohorts["train"], out / "stage2", overrides=plan.pretrain_overrides(),
                              progress=progress)
    with _step("stage 3: segmentation training", timings, say):
        stage3 = run_train(cohorts["train"], out / "stage3", overrides=plan.train_overrides(),
                           init=stage2.checkpoint, organs_dir=out / "stage1", organ_model=stage1["model"],
                           fingerprint=out / "stage2" / FINGERPRINT_NAME, progress=progress)
    with _step("whole-body prediction", timings, say):
        predictor = Predictor.from_checkpoint(stage3.model)
        predictions = list(predict_cases(predictor, cohorts["test"], out / "predictions", progress=progress))
    with _step("metrics and pictures", timings, say):
        results = evaluate_paths(out / "predictions", cohorts["test"].parent)
        write_json(out / "metrics.json", results)
        write_csv(out / "metrics.csv", results)
        say(format_table(results, aggregate(results)))
        pngs, lesions = _pictures_and_lesions(cohorts["test"], out / "predictions", out / "png")
        by_size = sensitivity_by(lesions, "size")
        say(lesions_found_text(by_size))
    timings["total"] = round(time.perf_counter() - start, 1)
    summary = {"plan": "quick" if quick else "full", "seconds": timings,
               "stage1_dice": stage1.get("dice"), "stage2_final_loss": stage2.losses[-1] if stage2.losses else None,
               "stage3": {"steps": stage3.step, "loss": stage3.loss, "val_dice": stage3.val_dice},
               "test": aggregate(results), "lesions_by_size": by_size, "lesions": lesions,
               "predictions": [str(p) for p in predictions],
               "pictures": [str(p) for p in pngs]}
    write_text_atomic(out / "summary.json", json.dumps(summary, indent=2, default=str) + "\n")
    say(f"demo finished in {timings['total']:.0f} s: predictions in {out / 'predictions'}, pictures in {out / 'png'}")
    return summary


def lesions_found_text(by_size: dict[str, dict]) -> str:
    """One line: lesions found per size bin, e.g. ``lesions found by size: <1 ml 0/5, 1-5 ml 1/2, ...``
    (``by_size``: :func:`~anatoseg.metrics.sensitivity_by` over the ``"size"`` attribute)."""
    cells = [f"{name} {entry['tp']}/{entry['n']}" for name, entry in by_size.items()]
    return "lesions found by size: " + ", ".join(cells)


def _pictures_and_lesions(manifest: Path, predictions: Path, folder: Path) -> tuple[list[Path], list[dict]]:
    """One MIP PNG per test case with ground truth and prediction overlaid, and one record per GT
    lesion of every case (:func:`~anatoseg.metrics.lesion_records`: volume, size bin, found or not, and
    the phantom's site and contrast from the manifest's lesion list)."""
    import numpy as np

    from anatoseg.data import file_to_zyx, load_case, load_label_nifti
    from anatoseg.data.labels import LESION_LABEL_VALUES
    from anatoseg.data.phantom.cohort import cases_with_lesions
    from anatoseg.metrics import lesion_records
    from anatoseg.metrics.breakdown import tags_by_centre
    from anatoseg.viz import render_case

    folder.mkdir(parents=True, exist_ok=True)
    written, records = [], []
    for files, lesion_list in cases_with_lesions(manifest):
        case = load_case(files)
        volume = load_label_nifti(predictions / f"{files.case_id}.nii.gz", LESION_LABEL_VALUES, what="lesion mask")
        pred, _ = file_to_zyx(volume.data, volume.affine)
        written.append(render_case(case, folder / f"{files.case_id}.png", pred=np.asarray(pred)))
        if case.lesions is not None:
            tags, _ = tags_by_centre(case.lesions, lesion_list, case.affine, keys=("site", "contrast"))
            records += [{"case": files.case_id, **r} for r in lesion_records(pred, case.lesions, case.spacing, tags)]
    return written, records
