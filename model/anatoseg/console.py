"""The ``anato`` console script: :func:`anatoseg.cli.main` behind a check for the method's dependencies.

``pip install anatokernels`` installs the kernel library only; the method's dependencies (monai, nibabel,
typer, ...) come with the ``seg`` extra. Without them ``anato`` prints one line and exits 1 instead of a
traceback. This module imports nothing beyond the standard library before that check.
"""

from __future__ import annotations

import sys

MISSING_SEG = "error: the anato CLI needs the method's dependencies: pip install 'anatokernels[seg]'"


def main() -> None:
    try:
        from anatoseg.cli import main as cli_main
    except ModuleNotFoundError as exc:
        if (exc.name or "").partition(".")[0] in ("anatoseg", "anatokernels"):
            raise  # one of our own modules is missing: a packaging bug, keep the traceback
        print(MISSING_SEG, file=sys.stderr)
        sys.exit(1)
    cli_main()
