"""The results table: the full method, its ablations and four baselines, at one budget.

    python -m anatoseg.experiments.table OUT [--steps 800] [--preset tiny] [--device cuda]

Cohort, all synthetic phantoms with fixed seeds (the demo's generator, other seeds):
  organ_ct    diagnostic-CT cases with organ labels: the stage-1 teacher's source domain
  train       PET-CT cases: stage-1 target, stage-2 pretraining, stage-3 training; the last
              ``--val-cases`` of them are stage 3's validation split
  test        held-out PET-CT cases, predicted whole-body and scored
Stage 1 (teacher/student pseudo-labels) and stage 2 (cross-modal pretraining) run once; then
every variant trains with the same cases, patch, batch, steps, seed and schedule:
  full            anatoseg, stage-2 encoders, stage-1 pseudo-label prompts (at test: the stage-1 model)
  no prompts      anatoseg without the prompt encoder and cross-attention, stage-2 encoders
  no pretraining  anatoseg with pseudo-label prompts, encoders from random initialisation
  GT organs       anatoseg, stage-2 encoders, the phantom's true organ labels in training and at test
  unet, segresnet, swinunetr, unetr   MONAI baselines, random initialisation, no prompts
Columns: Dice, FNV and per-case lesion sensitivity over the test cases with lesions, FPV over
all test cases, each mean ± sd; the pooled lesion-wise sensitivity beside them.

Writes ``OUT/results.json`` and ``OUT/results.md`` (the table, this command, the time taken and
the machine) after every variant, so an interrupted run keeps what it finished; run again
with the same OUT to go on (finished stages and variants are skipped).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import shutil
import statistics
import sys
import time
from pathlib import Path

from anatoseg.demo.plan import TRAIN_LESION_FRACTION, TRAIN_LR

SEEDS = {"organ_ct": 1101, "train": 2202, "test": 3303}
VARIANTS = {  # name: (arch, prompts: None | "pseudo" | "gt", stage-2 init)
    "full method": ("anatoseg", "pseudo", True),
    "no prompts": ("anatoseg", None, True),
    "no pretraining": ("anatoseg", "pseudo", False),
    "GT organs": ("anatoseg", "gt", True),
    "UNet": ("unet", None, False),
    "SegResNet": ("segresnet", None, False),
    "SwinUNETR": ("swinunetr", None, False),
    "UNETR": ("unetr", None, False),
}
COLUMNS = (("dice", "Dice"), ("fpv_ml", "FPV (ml)"), ("fnv_ml", "FNV (ml)"), ("sensitivity", "lesion sens."))


def mean_sd(values) -> tuple[float | None, float | None]:
    """Mean and sample sd of the values that apply (None = does not apply); sd 0 for one value."""
    values = [v for v in values if v is not None]
    if not values:
        return None, None
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def summarize(cases: list[dict]) -> dict:
    """Per-column (mean, sd) over the per-case metric dicts, plus the pooled lesion-wise sensitivity."""
    row = {key: mean_sd(case[key] for case in cases) for key, _ in COLUMNS}
    tp, fn = sum(c["tp"] for c in cases), sum(c["fn"] for c in cases)
    row["pooled_sensitivity"] = tp / (tp + fn) if tp + fn else None
    row["n_cases"], row["n_positive"] = len(cases), sum(c["positive"] for c in cases)
    return row


def _cell(pair) -> str:
    mean, sd = pair
    return "–" if mean is None else f"{mean:.3f} ± {sd:.3f}"


def markdown(results: dict) -> str:
    """The table plus its provenance (command, time, machine) as Markdown."""
    lines = ["| variant | " + " | ".join(title for _, title in COLUMNS) + " | pooled sens. | train s |",
             "|---" * (len(COLUMNS) + 3) + "|"]
    for name, entry in results["variants"].items():
        if "error" in entry:
            lines.append(f"| {name} | failed: {entry['error'][:100]} |" + " |" * (len(COLUMNS) + 1))
            continue
        row = entry["summary"]
        pooled = "–" if row["pooled_sensitivity"] is None else f"{row['pooled_sensitivity']:.3f}"
        lines.append(f"| {name} | " + " | ".join(_cell(row[key]) for key, _ in COLUMNS)
                     + f" | {pooled} | {entry['seconds']['train']:.0f} |")
    meta = results["meta"]
    stage1 = results.get("stage1_dice") or {}
    text = ["\n".join(lines), "",
            f"{meta['test_cases']} test cases ({meta['test_positive']} with lesions); mean ± sd over cases; "
            f"Dice, FNV and sensitivity over cases with lesions, FPV over all.",
            f"Budget per variant: {meta['steps']} steps, batch {meta['batch_size']}, patch {meta['patch']}, "
            f"AdamW lr {meta.get('lr')} (poly decay), lesion-centred patch share {meta['lesion_fraction']:.2f}, "
            f"preset {meta['preset']}, seed {meta['seed']}; {meta['train_cases']} training cases "
            f"({meta['val_cases']} for validation), phantom spacing {meta['spacing']} mm.",
            "Stage 1, mean organ Dice on the training cases: "
            + ", ".join(f"{name} {value:.3f}" for name, value in stage1.items()),
            f"Command: `{meta['command']}`",
            f"Machine: {meta['machine']}; total {meta['seconds_total']:.0f} s "
            f"(cohort {meta['seconds'].get('cohort', 0):.0f} s, stage 1 {meta['seconds'].get('stage1', 0):.0f} s, "
            f"stage 2 {meta['seconds'].get('stage2', 0):.0f} s)."]
    return "\n".join(text) + "\n"


def _machine(device: str) -> str:
    import torch

    if device == "cuda":
        return f"{torch.cuda.get_device_name()}, torch {torch.__version__}"
    return f"{platform.processor() or platform.machine()} CPU, {os.cpu_count()} cores, torch {torch.__version__}"


def _gt_organ_folder(manifest: Path, folder: Path) -> Path:
    """``folder/<case_id>.nii.gz`` links to each case's true organ map (the layout ``--organs`` reads)."""
    from anatoseg.data import find_cases

    folder.mkdir(parents=True, exist_ok=True)
    for files in find_cases(manifest):
        link = folder / f"{files.case_id}.nii.gz"
        if not link.exists():
            link.symlink_to(Path(files.organs).resolve())
    return folder


class _Results:
    """``OUT/results.json`` (and ``results.md``), continued when it exists; the clock goes on from it."""

    def __init__(self, out: Path, meta: dict):
        self.out, self.path = out, out / "results.json"
        self.data = json.loads(self.path.read_text()) if self.path.exists() else {"variants": {}}
        previous = self.data.get("meta", {})
        self.seconds = previous.get("seconds", {})
        self.start = time.perf_counter() - previous.get("seconds_total", 0.0)
        self.data["meta"] = {**meta, "seconds": self.seconds}

    def save(self) -> None:
        self.data["meta"]["seconds_total"] = time.perf_counter() - self.start
        self.path.write_text(json.dumps(self.data, indent=1) + "\n")
        if self.data["variants"]:
            (self.out / "results.md").write_text(markdown(self.data))


def _meta(args: argparse.Namespace, device: str) -> dict:
    z, y, x = args.patch
    return {"command": " ".join(["python -m anatoseg.experiments.table", *(shlex.quote(a) for a in sys.argv[1:])]),
            "machine": _machine(device), "steps": args.steps, "batch_size": args.batch_size,
            "patch": f"{z}×{y}×{x}", "lr": args.lr, "lesion_fraction": args.lesion_fraction, "preset": args.preset,
            "seed": args.seed, "spacing": args.spacing,
            "train_cases": args.train_cases, "val_cases": args.val_cases, "test_cases": args.test_cases}


def _cohorts(args: argparse.Namespace, data: Path, seconds: dict) -> dict[str, Path]:
    """The three phantom cohorts' manifests, generated unless they exist."""
    from anatoseg.data.phantom import generate_cohort

    manifests = {name: data / name / "manifest.json" for name in SEEDS}
    if not all(m.exists() for m in manifests.values()):
        clock = time.perf_counter()
        counts = {"organ_ct": args.organ_cases, "train": args.train_cases, "test": args.test_cases}
        for name, seed in SEEDS.items():
            if not manifests[name].exists():
                manifests[name] = generate_cohort(data / name, cases=counts[name], seed=seed, spacing=args.spacing,
                                                  domain="diagnostic" if name == "organ_ct" else "petct")
        seconds["cohort"] = time.perf_counter() - clock
    return manifests


def _stages_1_and_2(args: argparse.Namespace, out: Path, manifests: dict[str, Path], device: str,
                    seconds: dict) -> tuple[dict, Path]:
    """Stage 1 and stage 2, each unless its output exists: ``(stage-1 report, encoders checkpoint)``."""
    from anatoseg.stage1 import build_config, run_pseudolabel
    from anatoseg.stage1.run import REPORT_NAME
    from anatoseg.stage2.loop import ENCODERS_NAME
    from anatoseg.stage2.run import run_pretrain

    data = out / "data"
    if not (out / "stage1" / REPORT_NAME).exists():
        clock = time.perf_counter()
        overrides = [f"teacher.steps={args.teacher_steps}", f"student.steps={args.student_steps}"]
        run_pseudolabel(data / "organ_ct", data / "train", out / "stage1", build_config(overrides=overrides),
                        overwrite=True, device=device)
        seconds["stage1"] = time.perf_counter() - clock
    encoders = out / "stage2" / ENCODERS_NAME
    if not encoders.exists():
        clock = time.perf_counter()
        z, y, x = args.patch
        pretrained = run_pretrain(manifests["train"], out / "stage2", device=device, overrides=[
            f"train.steps={args.pretrain_steps}", f"model.preset={args.preset}", f"crop.size=[{z},{y},{x}]",
            "mask.patch_size=[8,8,8]"])
        encoders = Path(pretrained.checkpoint)
        seconds["stage2"] = time.perf_counter() - clock
    return json.loads((out / "stage1" / REPORT_NAME).read_text()), encoders


def _variant(name: str, args: argparse.Namespace, out: Path, device: str, inputs: dict) -> dict:
    """Train one variant, predict the test cases and score them: its ``results["variants"]`` entry."""
    from anatoseg.inference.predict import Predictor, predict_cases
    from anatoseg.metrics.files import evaluate_paths
    from anatoseg.stage3.run import run_train
    from anatoseg.training.fingerprint import FINGERPRINT_NAME

    arch, prompts, use_init = VARIANTS[name]
    folder = out / "variants" / name.replace(" ", "_")
    shutil.rmtree(folder, ignore_errors=True)  # a failed or interrupted attempt starts over
    z, y, x = args.patch
    settings = [f"model.arch={arch}", f"model.preset={args.preset}", f"train.steps={args.steps}",
                f"train.batch_size={args.batch_size}", f"data.patch_size=[{z},{y},{x}]",
                f"seed={args.seed}", f"train.val_every={max(1, args.steps // 2)}", f"optim.lr={args.lr}",
                f"data.val_cases={args.val_cases}", f"data.lesion_fraction={args.lesion_fraction}"]
    if arch == "anatoseg" and prompts is None:
        settings.append("model.net.use_prompts=false")
    clock = time.perf_counter()
    trained = run_train(inputs["train"], folder / "train", overrides=settings,
                        init=inputs["encoders"] if use_init else None,
                        organs_dir=out / "stage1" if prompts == "pseudo" else None,
                        organ_model=inputs["stage1"]["model"] if prompts == "pseudo" else None,
                        fingerprint=out / "stage2" / FINGERPRINT_NAME, device=device)
    train_s = time.perf_counter() - clock
    clock = time.perf_counter()
    predictor = Predictor.from_checkpoint(trained.model, device=device)
    list(predict_cases(predictor, inputs["test"], folder / "predictions",  # the variant's own folder: a rerun
                       organs_dir=inputs["gt_organs"] if prompts == "gt" else None, overwrite=True))
    cases = [r.to_dict() for r in evaluate_paths(folder / "predictions", inputs["test"].parent)]
    return {"arch": arch, "prompts": prompts, "pretrained": use_init, "cases": cases,
            "summary": summarize(cases), "val_dice": trained.val_dice,
            "seconds": {"train": train_s, "predict": time.perf_counter() - clock}}


def run(args: argparse.Namespace) -> dict:
    from anatoseg.training.device import choose_device

    device = choose_device(args.device).type
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = _Results(out, _meta(args, device))
    manifests = _cohorts(args, out / "data", results.seconds)
    stage1, encoders = _stages_1_and_2(args, out, manifests, device, results.seconds)
    results.data["stage1_dice"] = {name: entry["mean_dice"] for name, entry in (stage1["dice"] or {}).items()}
    inputs = {"train": manifests["train"], "test": manifests["test"], "stage1": stage1, "encoders": encoders,
              "gt_organs": _gt_organ_folder(manifests["test"], out / "gt_organs_test")}
    results.save()
    for name in VARIANTS:
        done = name in results.data["variants"] and "error" not in results.data["variants"][name]
        if (args.only and name not in args.only) or done:
            continue
        try:
            results.data["variants"][name] = _variant(name, args, out, device, inputs)
        except Exception as exc:  # one variant failing (e.g. a patch its network cannot take) does not end the table
            results.data["variants"][name] = {"arch": VARIANTS[name][0], "error": f"{type(exc).__name__}: {exc}"}
            results.save()
            print(f"{name}: failed: {exc}", file=sys.stderr, flush=True)
            continue
        results.data["meta"]["test_positive"] = results.data["variants"][name]["summary"]["n_positive"]
        results.save()
        print(markdown(results.data), flush=True)
    results.save()
    return results.data


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("out", help="run folder (created; an existing one is continued)")
    parser.add_argument("--steps", type=int, default=800, help="stage-3 steps of every variant")
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--lr", type=float, default=TRAIN_LR, help="AdamW learning rate of every variant")
    parser.add_argument("--lesion-fraction", type=float, default=TRAIN_LESION_FRACTION,
                        help="share of training patches centred on a lesion voxel (the demo's; nnU-Net: 1/3)")
    parser.add_argument("--patch", type=int, nargs=3, default=(32, 64, 64), metavar=("Z", "Y", "X"),
                        help="stage-3 patch; divisible by 32 for SwinUNETR")
    parser.add_argument("--preset", default="tiny", choices=("tiny", "base"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--spacing", type=float, default=4.0, help="phantom voxel size (mm)")
    parser.add_argument("--organ-cases", type=int, default=4)
    parser.add_argument("--train-cases", type=int, default=12)
    parser.add_argument("--val-cases", type=int, default=2)
    parser.add_argument("--test-cases", type=int, default=8)
    parser.add_argument("--teacher-steps", type=int, default=1500)
    parser.add_argument("--student-steps", type=int, default=300)
    parser.add_argument("--pretrain-steps", type=int, default=300)
    parser.add_argument("--device", choices=("cpu", "cuda"), default=None, help="default: cuda when available")
    parser.add_argument("--only", nargs="+", choices=tuple(VARIANTS), help="run only these variants")
    return parser.parse_args(argv)


if __name__ == "__main__":
    run(parse(sys.argv[1:]))
