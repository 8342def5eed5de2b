"""``python -m anatoseg.experiments.protocol.regenerate FOLDER [--reference NAME] [--output FILE]``.

Renders a protocol run folder's report again from what the folder keeps (``units/*.json``,
``protocol.json`` and, when present, ``stage1_test_dice.json``), without training or predicting anything:
the way a committed table under ``benchmarks/results/`` is checked and re-read against another reference.
Writes ``FOLDER/results.md`` unless ``--output`` names another file. Errors are one line on stderr and exit
status 1.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from anatoseg.data.atomic import read_json, write_text_atomic
from anatoseg.errors import AnatoError
from anatoseg.experiments.protocol import units
from anatoseg.experiments.protocol.run import META_NAME, RESULTS_NAME, folder_report


def render_folder(folder: str | Path, reference: str | None = None) -> str:
    """The report of the run folder ``folder`` (module docstring); ``reference``: the variant every other is
    compared with (default: the run's own). ValueError when the folder holds no protocol run or the
    reference has no unit there."""
    folder = Path(folder)
    if not (folder / META_NAME).is_file():
        raise ValueError(f"{folder}: no {META_NAME} here, not a protocol run folder")
    finished = {unit["variant"] for unit in units.load_units(folder)}
    if not finished:
        raise ValueError(f"{folder}: no finished unit in {units.UNITS}/")
    if reference is not None and reference not in finished:
        raise ValueError(f"{folder}: no unit of the reference variant {reference!r}")
    return folder_report(folder, read_json(folder / META_NAME), reference)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m anatoseg.experiments.protocol.regenerate",
                                     description=__doc__.split("\n")[2])
    parser.add_argument("folder", type=Path, help="a protocol run folder (or a committed copy of its files)")
    parser.add_argument("--reference", metavar="NAME", help="compare with this variant (default: the run's own)")
    parser.add_argument("--output", type=Path, help=f"file to write (default: FOLDER/{RESULTS_NAME})")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    try:
        text = render_folder(args.folder, args.reference)
        output = args.output or args.folder / RESULTS_NAME
        write_text_atomic(output, text)
    except (AnatoError, ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
