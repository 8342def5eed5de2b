"""Running the protocol's pending units one after another or in parallel worker processes.

On CPU one torch thread per unit is as fast as two (``benchmarks/results/protocol-budget.md``: conv3d
gains nothing from the second intra-op thread and collapses when the machine is shared), so the
protocol fills the cores with units instead of threads: ``jobs`` worker processes, each with
``cpu_count // jobs`` torch threads, take the units in order (every variant's seed 0 first). Each
unit writes its own folder and JSON, so workers never touch the same file; the driver, which holds
the run folder's lock, rewrites ``protocol.json`` and ``results.md`` as units come back.

Workers are spawned (not forked: a fork after OpenMP has started can hang), so each imports torch
once (a few seconds) before its first unit.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

from anatoseg.errors import ConfigError
from anatoseg.experiments.protocol import units
from anatoseg.experiments.protocol.config import Scale
from anatoseg.experiments.protocol.stages import Shared
from anatoseg.experiments.protocol.timing import Clock
from anatoseg.experiments.protocol.variants import SANITY


@dataclass(frozen=True)
class Job:
    """One pending unit and everything a worker needs to run it (picklable)."""

    name: str
    seed: int | None  # None: a sanity row
    spec: dict | None
    scale: Scale
    shared: Shared
    out: Path
    device: str
    progress: bool
    source: dict | None = None  # the spec of the variant whose model this one uses (variants.py, trained_as)
    models: Path | None = None  # the run folder holding the models (default: out)
    record: dict | None = None  # fields that replace the saved unit's (units.run_network_unit)


@dataclass(frozen=True)
class Done:
    """A unit's outcome: ``error`` is one line when it failed; ``cpu`` its CPU seconds (user + system)."""

    job: Job
    error: str | None
    cpu: float


def default_jobs(device: str) -> int:
    """Units run at once when not asked: one per core on CPU, up to 4 (memory), one on CUDA (one GPU)."""
    return 1 if device == "cuda" else max(1, min(os.cpu_count() or 1, 4))


def check_jobs(jobs: int) -> int:
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise ConfigError(f"--jobs must be a whole number of at least 1, got {jobs!r}")
    return jobs


def run_job(job: Job) -> Done:
    """Run one unit; an exception (a patch its network cannot take) is returned as one line, so one
    unit failing does not end the run."""
    clock = Clock()
    try:
        if job.seed is None:
            units.run_sanity_unit(job.name, SANITY[job.name], job.scale, job.shared, job.out)
        else:
            units.run_network_unit(job.name, job.spec, job.seed, job.scale, job.shared, job.out, job.device,
                                   job.progress, job.source, job.models, job.record)
        error = None
    except Exception as exc:  # noqa: BLE001 - reported per unit by the driver
        error = f"{type(exc).__name__}: {exc}"
    return Done(job, error, clock.lap()[1])


def _start_worker(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)
    units.git_commit()  # the commit the units of this worker record: the code it started with


def run_jobs(todo: list[Job], jobs: int) -> Iterator[Done]:
    """Each job's :class:`Done` as it finishes: in this process when ``jobs`` is 1 (or one job is left),
    else in ``min(jobs, len(todo))`` spawned workers that start the jobs in order."""
    workers = min(check_jobs(jobs), len(todo))
    if workers <= 1:
        yield from map(run_job, todo)
        return
    import multiprocessing

    threads = max(1, (os.cpu_count() or 1) // workers)
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                             initializer=_start_worker, initargs=(threads,)) as pool:
        futures = [pool.submit(run_job, job) for job in todo]
        try:
            for future in as_completed(futures):
                yield future.result()
        except BaseException:  # Ctrl-C or a worker lost: start nothing more, finished units are saved
            for future in futures:
                future.cancel()
            raise


def report_failure(done: Done) -> None:
    print(f"{done.job.name} seed {done.job.seed}: failed: {done.error}", file=sys.stderr, flush=True)
