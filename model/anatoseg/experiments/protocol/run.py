"""The protocol's driver: shared stages, then every pending unit, then ``results.md``.

``OUT/protocol.json`` records the run's design (scale, cohort seeds), its wall and CPU time by part and
every invocation that worked on it (``runs``: command, commit, machine, start time); a rerun with the
same OUT continues it (finished cohorts, stages and units are skipped, the times add up) and is refused
when asked for another design (any scale field but ``seeds``).
``OUT/results.md`` is rewritten after every unit.
"""

from __future__ import annotations

import itertools
import os
import platform
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from tqdm.auto import tqdm

from anatoseg.data.atomic import read_json, write_text_atomic
from anatoseg.errors import ConfigError
from anatoseg.experiments.protocol import organ_scores, report, units, workers
from anatoseg.experiments.protocol.config import COHORT_SEEDS, Scale
from anatoseg.experiments.protocol.stages import prepare
from anatoseg.experiments.protocol.timing import Clock, Times
from anatoseg.experiments.protocol.variants import REFERENCE, SANITY, VARIANTS, resolve

META_NAME = "protocol.json"
RESULTS_NAME = "results.md"


@dataclass
class Plan:
    """What one invocation runs: the scale, the network variants (registry names), whether to add
    the sanity rows, the command line that is recorded, and the variant the report compares the others with."""

    scale: Scale
    variants: list[str]
    sanity: bool = True
    command: str = ""
    registry: dict = field(default_factory=lambda: VARIANTS)
    reference: str = REFERENCE


def machine(device: str) -> str:
    import torch

    if device == "cuda":
        return f"{torch.cuda.get_device_name()}, torch {torch.__version__}"
    return f"{platform.processor() or platform.machine()} CPU, {os.cpu_count()} cores, torch {torch.__version__}"


def _meta(out: Path, plan: Plan, device: str) -> dict:
    """The run's ``protocol.json`` content: the stored one continued, or a new one; ConfigError when the
    stored scale differs from ``plan.scale``."""
    scale = plan.scale.to_dict()
    scale["patch"], scale["pretrain_crop"] = list(scale["patch"]), list(scale["pretrain_crop"])
    path = out / META_NAME
    stored = read_json(path) if path.exists() else None
    differ = sorted(k for k in scale if k != "seeds" and stored is not None and stored["scale"].get(k) != scale[k])
    if differ:
        raise ConfigError(f"holds a protocol run of another design (differs in {', '.join(differ)}); "
                          "choose another OUT", out)
    this = invocation(plan.command, device)
    return {"scale": scale, "cohort_seeds": COHORT_SEEDS, **this, "reference": plan.reference,
            "times": stored["times"] if stored else {}, "runs": [*(stored or {}).get("runs", []), this]}


def invocation(command: str, device: str) -> dict:
    """One entry of ``protocol.json``'s ``runs``: the command, the commit it runs, the machine, the start time."""
    return {"command": command, "commit": units.git_commit(), "machine": machine(device),
            "started": datetime.now(timezone.utc).isoformat(timespec="seconds")}


def save_folder(out: Path, meta: dict, times: Times) -> None:
    import json

    meta["times"] = times.data
    write_text_atomic(out / META_NAME, json.dumps(meta, indent=1) + "\n")
    write_text_atomic(out / RESULTS_NAME, folder_report(out, meta))


def folder_report(out: Path, meta: dict, reference: str | None = None) -> str:
    """The report of the run folder ``out`` from its finished units and stage-1 scores (:func:`.report.render`;
    ``reference``: compare with this variant instead of the run's own)."""
    scored = out / organ_scores.NAME
    return report.render(units.load_units(out), meta, stage1=read_json(scored) if scored.exists() else None,
                         reference=reference)


def pending(out: Path, plan: Plan) -> list[tuple[str, int | None]]:
    """``(variant, seed)`` of every unit without a JSON yet, seed by seed (every variant's seed 0 first, so a
    run stopped early still holds a paired comparison of every variant); sanity rows have seed None."""
    todo = [(name, seed) for seed in range(plan.scale.seeds) for name in plan.variants
            if not units.unit_path(out, name, seed).exists()]
    if plan.sanity:
        todo += [(name, None) for name in SANITY if not units.unit_path(out, name, 0).exists()]
    return todo


def phases(todo: list[tuple[str, int | None]], registry: dict) -> tuple[list, list]:
    """``todo`` split in two lists run one after the other: the units that train their model (or reuse a
    finished one), then those using a model another unit of the first list trains (``trained_as``), so that
    no two workers train one model; order is kept within each."""
    first, after = [], []
    training = {(name, seed) for name, seed in todo if seed is not None and not registry[name].get("trained_as")}
    for name, seed in todo:
        source = registry[name].get("trained_as") if seed is not None else None
        if source is not None and (source, seed) in training:
            after.append((name, seed))
            continue
        first.append((name, seed))
        if source is not None:
            training.add((source, seed))
    return first, after


def run(out: str | os.PathLike, plan: Plan, device: str | None = None, progress: bool = True,
        jobs: int = 1) -> Path:
    """Run (or continue) the protocol in ``out`` with ``jobs`` units at once (:mod:`.workers`); returns
    ``out/results.md``. With several jobs the units' wall time is that of the parallel phase and their CPU
    time the sum the workers report."""
    from anatoseg.training.device import choose_device
    from anatoseg.training.run_folder import hold

    device = choose_device(device).type
    workers.check_jobs(jobs)
    units.git_commit()  # the code this run started with (read once per process)
    out = Path(out)
    with hold(out):
        meta = _meta(out, plan, device)
        times = Times(meta["times"])
        sources = [plan.registry[name]["trained_as"] for name in plan.variants
                   if plan.registry[name].get("trained_as")]
        with times.measure("total"):
            used = [plan.registry[name] for name in [*plan.variants, *sources]]
            shared = prepare(plan.scale, out, device, times, progress, prompts={spec["prompts"] for spec in used},
                             stage2_sets=[spec.get("stage2_set") for spec in used])

        def job(name: str, seed: int | None) -> workers.Job:
            spec = None if seed is None else plan.registry[name]
            source = spec and spec.get("trained_as")
            return workers.Job(name, seed, spec, plan.scale, shared, out, device, progress and jobs == 1,
                               source=plan.registry[source] if source else None)

        first, after = phases(pending(out, plan), plan.registry)
        done_units = itertools.chain(workers.run_jobs([job(*unit) for unit in first], jobs),
                                     workers.run_jobs([job(*unit) for unit in after], jobs))
        collect(done_units, len(first) + len(after), out, meta, times, progress)
    return out / RESULTS_NAME


def collect(done_units: Iterable[workers.Done], total: int, out: Path, meta: dict, times: Times,
            progress: bool) -> None:
    """Save the folder (``protocol.json``, ``results.md``) now and again as each of the ``total`` units comes
    back, adding its wall and CPU time to ``units`` and ``total``; a failed unit is reported in one line."""
    save_folder(out, meta, times)
    clock = Clock()
    for done in tqdm(done_units, total=total, desc="units", unit="unit", disable=not progress):
        if done.error:
            workers.report_failure(done)
        wall = clock.lap()[0]
        clock = Clock()
        for part in ("units", "total"):
            times.add(part, wall, done.cpu)
        save_folder(out, meta, times)


def make_plan(scale: Scale, variants: Sequence[str] | None = None, seeds: int | None = None, sanity: bool = True,
              command: str = "", reference: str = REFERENCE) -> Plan:
    """A checked :class:`Plan` (``seeds``: override the scale's seed count; ``reference``: the variant the
    others are compared with, always run)."""
    import dataclasses

    if seeds is not None:
        if seeds < 1:
            raise ConfigError(f"--seeds must be at least 1, got {seeds}")
        scale = dataclasses.replace(scale, seeds=seeds)
    return Plan(scale=scale.check(), variants=resolve(variants, default=scale.group, reference=reference),
                sanity=sanity, command=command, reference=reference)
