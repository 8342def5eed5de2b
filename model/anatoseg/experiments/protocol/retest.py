"""``python -m anatoseg.experiments.protocol.retest SOURCE OUT --test-seed N [--variants NAME ...] [--seeds N]
[--reference NAME] [--jobs N] [--device cpu|cuda]``.

Scores the trained models of the protocol run folder SOURCE again on a fresh test cohort: the confirmation a
variant chosen on SOURCE's test cases needs before it becomes a default (a variant picked as the best of
several on one cohort carries that cohort's luck in its gain). Nothing trains. OUT gets the new test cohort
(``data/test``: SOURCE's scale, phantom seed N, which must be none of SOURCE's cohort seeds), SOURCE's
stage-1 models' organ maps of it (``stage1_test*``, scored as the protocol scores them) and one unit per
(variant, seed) of SOURCE asked for, predicted with SOURCE's model of it and the unit's recorded test-time
settings, saved in the protocol's unit format (sanity rows are scored again on the new cases); then
``OUT/results.md`` (:func:`.run.folder_report`, so :mod:`.regenerate` reads OUT as any run folder).

A rerun continues: finished units are skipped. OUT is refused when it holds a run of another source, scale
or test seed, and a unit whose model SOURCE does not hold is refused before any work. Errors are one line
on stderr and exit status 1.
"""

from __future__ import annotations

import argparse
import dataclasses
import shlex
import sys
from pathlib import Path

from anatoseg.data.atomic import read_json
from anatoseg.errors import AnatoError, ConfigError
from anatoseg.experiments.protocol import organ_scores, units, workers
from anatoseg.experiments.protocol.config import Scale
from anatoseg.experiments.protocol.run import META_NAME, RESULTS_NAME, collect, invocation
from anatoseg.experiments.protocol.stages import Shared, cohorts, organ_inputs, pseudo_organs
from anatoseg.experiments.protocol.timing import Times
from anatoseg.experiments.protocol.variants import REFERENCE, VARIANTS

RETEST_KEY = "retest_of"
"""The ``protocol.json`` field of a retest folder: ``{"folder": SOURCE, "test_seed": N}``."""


def source_scale(meta: dict) -> Scale:
    """The :class:`.config.Scale` a run folder's ``protocol.json`` (``meta``) records."""
    stored = dict(meta["scale"])
    stored["patch"], stored["pretrain_crop"] = tuple(stored["patch"]), tuple(stored["pretrain_crop"])
    return Scale(**stored)


def select(source: Path, variants: list[str] | None, seeds: int | None, reference: str) -> list[dict]:
    """SOURCE's finished units to score again: the network units of ``variants`` (all when None) and of
    ``reference`` with seed below ``seeds`` (all when None), then every sanity unit. ValueError for a variant
    SOURCE has no unit of, or a network unit whose model SOURCE does not hold."""
    from anatoseg.stage3.loop import MODEL_NAME

    found = units.load_units(source)
    networks = {u["variant"] for u in found if u["kind"] == "network"}
    wanted = set(networks if variants is None else [*variants, reference])
    missing = sorted(wanted - networks)
    if missing:
        raise ValueError(f"{source}: no finished unit of {', '.join(map(repr, missing))} "
                         f"(it has {', '.join(sorted(networks)) or 'none'})")
    chosen = [u for u in found if u["kind"] == "sanity"
              or (u["variant"] in wanted and (seeds is None or u["seed"] < seeds))]
    for unit in chosen:
        if unit["kind"] == "network":
            model = units.model_folder(source, unit["spec"].get("trained_as") or unit["variant"], unit["seed"])
            if not (model / MODEL_NAME).is_file():
                raise ValueError(f"{source}: {unit['variant']} seed {unit['seed']} has no trained model "
                                 f"({model / MODEL_NAME})")
    return chosen


def _meta(source: Path, out: Path, source_meta: dict, test_seed: int, reference: str, command: str,
          device: str) -> dict:
    """OUT's ``protocol.json`` content: the stored one continued, or a new one; ConfigError when OUT holds
    a run of another source, design or test seed."""
    retest = {"folder": str(source.resolve()), "test_seed": test_seed}
    seeds = {**source_meta["cohort_seeds"], "test": test_seed}
    path = out / META_NAME
    stored = read_json(path) if path.exists() else None
    if stored is not None and (stored.get(RETEST_KEY) != retest or stored["scale"] != source_meta["scale"]
                               or stored["cohort_seeds"] != seeds):
        raise ConfigError(f"holds another run (not the retest of {source} on test seed {test_seed}); "
                          "choose another OUT", out)
    this = invocation(command, device)
    return {"scale": source_meta["scale"], "cohort_seeds": seeds, RETEST_KEY: retest, **this,
            "reference": reference, "times": stored["times"] if stored else {},
            "runs": [*(stored or {}).get("runs", []), this]}


def _shared(source: Path, out: Path, scale: Scale, test_seed: int, prompts: set, device: str, times: Times,
            progress: bool) -> Shared:
    """What OUT's units read: the fresh test cohort, SOURCE's stage-1 report and models, and the stage-1
    models' organ maps of the new cases under OUT (each made unless it exists, then scored)."""
    from anatoseg.stage1.run import REPORT_NAME
    from anatoseg.stage2.loop import ENCODERS_NAME
    from anatoseg.training.fingerprint import FINGERPRINT_NAME

    manifests = cohorts(scale, out / "data", times, progress, seeds={"test": test_seed})
    report = read_json(source / "stage1" / REPORT_NAME)
    organs = {kind: dataclasses.replace(inputs, test_dir=out / inputs.test_dir.relative_to(source))
              for kind, inputs in organ_inputs(report, source, prompts).items()}
    for inputs in organs.values():
        pseudo_organs(inputs.model, manifests["test"], inputs.test_dir, device, times)
    with times.measure("stage1 test organs"):
        organ_scores.score(out, {kind: inputs.test_dir for kind, inputs in organs.items()}, manifests["test"])
    return Shared(manifests=manifests, stage1=report, encoders=source / "stage2" / ENCODERS_NAME,
                  fingerprint=source / "stage2" / FINGERPRINT_NAME, organs=organs)


def retest(source: str | Path, out: str | Path, test_seed: int, variants: list[str] | None = None,
           seeds: int | None = None, reference: str | None = None, device: str | None = None, jobs: int = 1,
           progress: bool = True, command: str = "") -> Path:
    """Score SOURCE's models on the fresh test cohort ``test_seed`` in ``out`` (module docstring); returns
    ``out/results.md``. ``reference``: default SOURCE's own; ``jobs``: units at once (:mod:`.workers`)."""
    from anatoseg.training.device import choose_device
    from anatoseg.training.run_folder import hold

    source, out = Path(source), Path(out)
    if not (source / META_NAME).is_file():
        raise ValueError(f"{source}: no {META_NAME} here, not a protocol run folder")
    source_meta = read_json(source / META_NAME)
    if RETEST_KEY in source_meta:
        raise ValueError(f"{source} is itself a retest; name the folder whose models it scored")
    if isinstance(test_seed, bool) or not isinstance(test_seed, int) or test_seed < 0:
        raise ValueError(f"--test-seed must be a whole number of at least 0, got {test_seed!r}")
    if test_seed in source_meta["cohort_seeds"].values():
        raise ValueError(f"test seed {test_seed} is one of {source}'s cohort seeds "
                         f"{source_meta['cohort_seeds']}: a retest needs a fresh cohort")
    if out.resolve() == source.resolve():
        raise ValueError("OUT must be another folder than SOURCE")
    if seeds is not None and (isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1):
        raise ValueError(f"--seeds must be a whole number of at least 1, got {seeds!r}")
    workers.check_jobs(jobs)
    reference = reference or source_meta.get("reference", REFERENCE)
    chosen = select(source, variants, seeds, reference)
    device = choose_device(device).type
    scale = source_scale(source_meta)
    specs = {u["variant"]: u["spec"] for u in chosen if u["kind"] == "network"}
    with hold(out):
        meta = _meta(source, out, source_meta, test_seed, reference, command, device)
        times = Times(meta["times"])
        with times.measure("total"):
            shared = _shared(source, out, scale, test_seed, {spec["prompts"] for spec in specs.values()}, device,
                             times, progress)
        todo = [unit for unit in chosen if not units.unit_path(out, unit["variant"], unit["seed"]).exists()]
        jobs_list = [_job(unit, specs, scale, shared, source, out, device) for unit in todo]
        collect(workers.run_jobs(jobs_list, jobs), len(jobs_list), out, meta, times, progress)
    return out / RESULTS_NAME


def _job(unit: dict, specs: dict, scale: Scale, shared: Shared, source: Path, out: Path,
         device: str) -> workers.Job:
    """The worker job scoring SOURCE's ``unit`` again on OUT's cohort (a sanity row: its options again)."""
    if unit["kind"] == "sanity":
        return workers.Job(unit["variant"], None, None, scale, shared, out, device, False)
    spec = unit["spec"]
    trained_as = spec.get("trained_as")
    record = {"val_dice": unit["val_dice"], "trained": {"commit": unit.get("commit"), "folder": str(source)}}
    source_spec = (specs.get(trained_as) or VARIANTS.get(trained_as, spec)) if trained_as else None
    return workers.Job(unit["variant"], unit["seed"], spec, scale, shared, out, device, False, source=source_spec,
                       models=source, record=record)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(prog="python -m anatoseg.experiments.protocol.retest",
                                     description=__doc__.split("\n\n")[1].replace("\n", " "))
    parser.add_argument("source", type=Path, help="the protocol run folder whose trained models are scored")
    parser.add_argument("out", type=Path, help="the retest folder (created; an existing one is continued)")
    parser.add_argument("--test-seed", type=int, required=True, help="phantom seed of the fresh test cohort")
    parser.add_argument("--variants", nargs="+", metavar="NAME", help="variants of SOURCE (default: all)")
    parser.add_argument("--seeds", type=int, help="training seeds 0 .. N-1 (default: every seed SOURCE has)")
    parser.add_argument("--reference", metavar="NAME", help="the variant compared with (default: SOURCE's own)")
    parser.add_argument("--jobs", type=int, default=1, help="units at once, each in its own process")
    parser.add_argument("--device", choices=("cpu", "cuda"), default=None, help="default: cuda when available")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    command = " ".join(["python -m anatoseg.experiments.protocol.retest", *(shlex.quote(a) for a in argv)])
    try:
        results = retest(args.source, args.out, args.test_seed, args.variants, args.seeds, args.reference,
                         args.device, args.jobs, not args.no_progress, command)
    except (AnatoError, ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
