"""A small learning-rate validation sweep per architecture, the source of the defaults in
:data:`anatoseg.training.optim.ARCH_OPTIM`.

    python -m anatoseg.experiments.lr_sweep OUT [--steps 15] [--lrs 1e-4 5e-4 2e-3] [--archs ...]

One phantom cohort (``--cases`` PET-CT cases at ``--spacing`` mm, seed 4404; the last case is held out);
every (architecture, learning rate) trains ``--steps`` AdamW steps with the stage-3 recipe (``anato train``'s
defaults: hard negatives, augmentation, deep supervision, the architecture's warm-up) on a small patch, from
one seed, so every run of an architecture sees the same patches. Figures per run: the mean training loss over
the last ``--tail`` steps (read from the run's ``log.csv``), or that the loss went non-finite. The best rate is
the one with the lowest tail loss; a run this short only ranks the rates by how fast they start (and shows
which diverge), not where they end; a held-out Dice would be near 0 for all of them after so few steps.

Writes ``OUT/sweep.json`` after every run (a rerun with the same OUT continues) and ``OUT/lr-sweep.md`` (the
table, this command, the machine and the time taken).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import shlex
import sys
import time
from pathlib import Path

from anatoseg.experiments.protocol.run import machine

SEED = 4404
ARCHS = ("anatoseg", "unet", "segresnet", "swinunetr", "unetr")


def _tail_loss(log: Path, steps: int, tail: int) -> float:
    """Mean logged loss over the steps after ``steps - tail`` in a run's ``log.csv`` (NaN without rows)."""
    with open(log) as handle:
        rows = [r for r in csv.DictReader(handle) if r.get("loss") and int(r["step"]) > steps - tail]
    return sum(float(r["loss"]) for r in rows) / len(rows) if rows else math.nan


def _run(arch: str, lr: float, args: argparse.Namespace, data: Path, out: Path) -> dict:
    """Train one (arch, lr) and return its figures."""
    from anatoseg.errors import DivergedError
    from anatoseg.stage3.run import run_train

    z, y, x = args.patch
    folder = out / "runs" / f"{arch}-lr{lr:g}"
    settings = [f"model.arch={arch}", "model.preset=tiny", f"train.steps={args.steps}", "train.batch_size=2",
                f"data.patch_size=[{z},{y},{x}]", f"seed={args.seed}", f"train.val_every={args.steps}",
                f"train.ckpt_every={args.steps}", "train.log_every=1", f"optim.lr={lr}", "data.val_cases=0"]
    clock = time.perf_counter()
    try:
        result = run_train(data, folder, overrides=settings, fingerprint=out / "fingerprint.json",
                           device=args.device, progress=False)
    except DivergedError as exc:
        return {"arch": arch, "lr": lr, "diverged": str(exc), "seconds": time.perf_counter() - clock}
    return {"arch": arch, "lr": lr, "tail_loss": _tail_loss(folder / "log.csv", result.step, args.tail),
            "seconds": time.perf_counter() - clock}


def _fmt(value) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.4f}"


def markdown(results: dict) -> str:
    """The sweep as a markdown table, best rate per architecture marked, with command, machine and time."""
    meta = results["meta"]
    lines = [f"# Learning-rate sweep ({meta['steps']} steps, patch {meta['patch']}, batch 2, tiny preset, "
             f"{meta['cases']} phantom cases at {meta['spacing']} mm)", "",
             "| arch | lr | tail loss | s |", "|---|---|---|---|"]
    for arch in meta["archs"]:
        runs = [r for r in results["runs"].values() if r["arch"] == arch]
        finite = [r for r in runs if math.isfinite(r.get("tail_loss", math.nan))]
        best = min(finite, key=lambda r: r["tail_loss"], default=None)
        for r in sorted(runs, key=lambda r: r["lr"]):
            mark = " **best**" if r is best else ""
            loss = "diverged" if "diverged" in r else _fmt(r["tail_loss"])
            lines.append(f"| {arch} | {r['lr']:g}{mark} | {loss} | {r['seconds']:.0f} |")
    lines += ["", f"Tail loss: mean Dice + CE loss over the last {meta['tail']} steps (same patches for every rate "
              "of an architecture).", "", f"Command: `{meta['command']}`", "",
              f"Machine: {meta['machine']}; total {results.get('seconds_total', 0):.0f} s."]
    return "\n".join(lines) + "\n"


def run(args: argparse.Namespace) -> dict:
    import torch

    from anatoseg.data.layouts import find_cases
    from anatoseg.data.phantom import generate_cohort
    from anatoseg.training.device import choose_device
    from anatoseg.training.fingerprint import dataset_fingerprint

    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "sweep.json"
    results = json.loads(path.read_text()) if path.exists() else {"runs": {}}
    start = time.perf_counter() - results.get("seconds_total", 0.0)
    z, y, x = args.patch
    results["meta"] = {"command": " ".join(["python -m anatoseg.experiments.lr_sweep",
                                            *(shlex.quote(a) for a in sys.argv[1:])]),
                       "machine": machine(choose_device(args.device).type), "steps": args.steps,
                       "patch": f"{z}×{y}×{x}", "cases": args.cases, "spacing": args.spacing, "tail": args.tail,
                       "archs": list(args.archs)}
    manifest = out / "data" / "manifest.json"
    if not manifest.exists():
        manifest = generate_cohort(out / "data", cases=args.cases, seed=SEED, spacing=args.spacing)
    dataset_fingerprint(find_cases(manifest), out, None, progress=False)  # one normalisation for every run
    for arch in args.archs:
        for lr in args.lrs:
            key = f"{arch}@{lr:g}"
            if key not in results["runs"]:
                results["runs"][key] = _run(arch, lr, args, manifest, out)
                _save(results, out, start)
                print(json.dumps(results["runs"][key]), flush=True)
    _save(results, out, start)
    return results


def _save(results: dict, out: Path, start: float) -> None:
    """``OUT/sweep.json`` and ``OUT/lr-sweep.md`` as they stand (an interrupted sweep keeps what it ran)."""
    results["seconds_total"] = time.perf_counter() - start
    (out / "sweep.json").write_text(json.dumps(results, indent=1) + "\n")
    (out / "lr-sweep.md").write_text(markdown(results))


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("out", help="sweep folder (created; an existing one is continued)")
    parser.add_argument("--archs", nargs="+", default=ARCHS)
    parser.add_argument("--lrs", nargs="+", type=float, default=(1e-4, 5e-4, 2e-3))
    parser.add_argument("--steps", type=int, default=15)
    parser.add_argument("--tail", type=int, default=5, help="steps at the end whose mean loss ranks the rates")
    parser.add_argument("--patch", type=int, nargs=3, default=(64, 32, 32), metavar=("Z", "Y", "X"),
                        help="divisible by 32 for SwinUNETR, and more than 32 along one axis (its bottleneck "
                        "normalises over more than one voxel)")
    parser.add_argument("--cases", type=int, default=4)
    parser.add_argument("--spacing", type=float, default=8.0, help="phantom voxel size (mm)")
    parser.add_argument("--seed", type=int, default=0, help="training seed of every run")
    parser.add_argument("--device", choices=("cpu", "cuda"), default=None, help="default: cuda when available")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (1: fastest on a shared machine)")
    return parser.parse_args(argv)


if __name__ == "__main__":
    run(parse(sys.argv[1:]))
