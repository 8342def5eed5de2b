"""``anato experiment OUT``: the experiment protocol (:mod:`anatoseg.experiments.protocol`), run or continued."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Annotated

import typer

from anatoseg.cli import options as opt
from anatoseg.cli.app import app
from anatoseg.errors import AnatoError


@app.command("experiment")
def experiment(
    out: Annotated[Path, typer.Argument(help="Run folder: cohorts, stages, units/*.json, protocol.json, results.md "
                                        "(created; an existing one is continued).")],
    scale: Annotated[str, typer.Option("--scale", help="Budget: cpu (2 cores, ~2 h at --jobs 2) or gpu "
                                       "(anatoseg/experiments/protocol/config.py).")] = "cpu",
    variants: Annotated[list[str] | None, typer.Option(
        "--variants", help="A variant or group (repeatable; default: the scale's group, 'table-cpu' at --scale "
        "cpu, 'table' at --scale gpu), e.g. UNet, ablations, anatomy, baselines "
        "(anatoseg/experiments/protocol/variants.py).")] = None,
    seeds: Annotated[int | None, typer.Option("--seeds", help="Training seeds per variant (default: the "
                                              "scale's).")] = None,
    settings: Annotated[list[str] | None, typer.Option(
        "--set", help="Change a field of the scale: field=value (repeatable), e.g. steps=500; a run folder keeps "
        "its design.")] = None,
    no_sanity: Annotated[bool, typer.Option("--no-sanity", help="Leave out the no-learning rows.")] = False,
    reference: Annotated[str, typer.Option("--reference", help=(
        "The variant every other is compared with (always run), e.g. 'no prompts' for the prompting group."))
    ] = "full method",
    jobs: Annotated[int | None, typer.Option("--jobs", help="Units at once, each in its own process (default: one "
                                             "per core up to 4 on CPU, 1 on CUDA).")] = None,
    device: opt.Device = None,
    no_progress: opt.NoProgress = False,
) -> None:
    """Train every variant with several seeds on fixed phantom cohorts, score the test cases, compare each
    variant with the full method (or --reference), and write OUT/results.md (an interrupted run continues with
    the same command)."""
    from anatoseg.experiments.protocol.__main__ import execute

    command = " ".join(["anato", *(shlex.quote(a) for a in sys.argv[1:])])
    try:
        results = execute(out, scale, variants, seeds, list(settings or []), sanity=not no_sanity, device=device,
                          progress=not no_progress, command=command, jobs=jobs, reference=reference)
    except ValueError as exc:  # a bad value deep in a stage: one line, as the protocol's own entry point
        raise AnatoError(str(exc)) from exc
    typer.echo(results.read_text())
