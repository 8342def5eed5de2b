"""Command-line options that several ``anato`` commands share, declared once as typer annotations,
and the override list they become.

Every config-driven command (``train``, ``pretrain``, ``pseudolabel``) reads
``--config FILE``, then ``--set section.key=value`` overrides, then the typed
options, which are overrides too (:func:`option_overrides`): one precedence for
every stage (:mod:`anatoseg.configbase`). ``--device`` has one default everywhere:
CUDA when available, else the CPU (:func:`anatoseg.training.device.choose_device`).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Annotated, Any

import typer

ConfigFile = Annotated[Path | None, typer.Option(
    "--config", help="YAML or JSON config file (sizes and spacings (Z, Y, X)).")]
Overrides = Annotated[list[str] | None, typer.Option(
    "--set", help="Override one config value: section.key=value (repeatable; sizes and spacings (Z, Y, X)), "
    "e.g. seed=1, "
    "data.patch_size=32,64,64 or model.net.widths=[8,16,32,64].")]
Steps = Annotated[int | None, typer.Option("--steps", help="Optimisation steps (each training phase).")]
Seed = Annotated[int | None, typer.Option("--seed", help="Seed of everything random (seed).")]
BatchSize = Annotated[int | None, typer.Option("--batch-size", help="Patches per optimisation step.")]
LearningRate = Annotated[float | None, typer.Option("--lr", help="Learning rate (each optimiser).")]
Layout = Annotated[str | None, typer.Option("--layout", help="autopet, nnunet or manifest (default: detect).")]
Device = Annotated[str | None, typer.Option("--device", help="cpu, cuda or cuda:N (default: cuda when "
                                                             "available, else cpu).")]
NoProgress = Annotated[bool, typer.Option("--no-progress", help="No progress bars.")]
SkipBad = Annotated[bool, typer.Option(
    "--skip-bad", help="Leave out cases that cannot be read (each named in a warning, counted in the summary) "
    "instead of stopping with an error.")]
Overwrite = Annotated[bool, typer.Option("--overwrite", help="Replace outputs that exist already.")]


def warn_skipped(skipped: list[str]) -> None:
    """One ``warning: skipped case ...`` line per case left out by ``--skip-bad`` (stderr)."""
    for line in skipped:
        typer.echo(f"warning: skipped case {line}", err=True)


def skipped_note(skipped: list[str]) -> str:
    """``" (N cases skipped)"`` for a summary line, or ``""``."""
    return f" ({len(skipped)} case(s) skipped as unreadable)" if skipped else ""


def option_overrides(config_type: Any, overrides: Iterable[str] | None, typed: Iterable[tuple[str, Any]] = (),
                     *, steps: int | None = None, batch_size: int | None = None, lr: float | None = None,
                     seed: int | None = None) -> list[str]:
    """``--set`` values, then ``key=value`` for each command-specific option in ``typed`` that was
    given, then the shared options, set where ``config_type.OPTION_KEYS`` says (not None only)."""
    shared = {"steps": steps, "batch_size": batch_size, "lr": lr, "seed": seed}
    settings = list(overrides or []) + [f"{key}={value}" for key, value in typed if value is not None]
    for option, value in shared.items():
        if value is not None:
            settings += [f"{key}={value}" for key in config_type.OPTION_KEYS[option]]
    return settings
