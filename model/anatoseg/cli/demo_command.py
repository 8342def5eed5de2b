"""``anato demo``: every stage of the method end to end on synthetic phantoms."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from anatoseg.cli.app import app
from anatoseg.cli.options import NoProgress


@app.command("demo")
def demo(
    out: Annotated[Path, typer.Argument(help="Output folder (new or empty).")] = Path("demo_out"),
    quick: Annotated[bool, typer.Option("--quick", help="Tiny budgets: finishes in about 2 minutes.")] = False,
    no_progress: NoProgress = False,
) -> None:
    """Generate phantom cohorts, run stages 1-3, predict held-out cases, write NIfTI, PNGs and metrics."""
    from anatoseg.demo import run_demo

    run_demo(out, quick=quick, progress=not no_progress, say=typer.echo)
