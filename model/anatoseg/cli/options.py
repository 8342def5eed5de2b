"""Command-line options that several ``anato`` commands share, as typer annotations, and the
``--set`` list they build."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Annotated, Any

import typer

ConfigFile = Annotated[Path | None, typer.Option("--config", help="YAML or JSON config file.")]
Layout = Annotated[str | None, typer.Option("--layout", help="autopet, nnunet or manifest (default: detect).")]
Device = Annotated[str | None, typer.Option("--device", help="cpu or cuda (default: cuda when available).")]
NoProgress = Annotated[bool, typer.Option("--no-progress", help="No progress bars.")]


def config_overrides(overrides: Iterable[str] | None, typed: Iterable[tuple[str, Any]]) -> list[str]:
    """``--set`` values, then ``key=value`` for each typed option that was given (not None)."""
    return list(overrides or []) + [f"{key}={value}" for key, value in typed if value is not None]
