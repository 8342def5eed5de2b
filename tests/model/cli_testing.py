"""Helpers for tests that drive the ``anato`` CLI in-process through its real entry point."""

from __future__ import annotations

import sys

import pytest

from anatoseg.cli import main


def run_anato(monkeypatch, capsys, *args) -> tuple[int, str, str]:
    """Run ``anato ARGS`` in-process through the real entry point: (exit code, stdout, stderr)."""
    monkeypatch.setattr(sys, "argv", ["anato", *map(str, args)])
    with pytest.raises(SystemExit) as exit_info:
        main()
    out, err = capsys.readouterr()
    return exit_info.value.code or 0, out, err


def leftovers(folder) -> list:
    """Temporary files (``*.tmp*``) anywhere below ``folder``: a finished command leaves none."""
    return [p for p in folder.rglob("*") if ".tmp" in p.name]
