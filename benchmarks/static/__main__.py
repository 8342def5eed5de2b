"""CLI: ``python -m benchmarks.static [--arch 80 86 89 90] [--figures-only PATH]``."""

from __future__ import annotations

import os

os.environ["TRITON_INTERPRET"] = "0"  # before anything defines a Triton kernel

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402


def main(argv=None) -> int:
    from benchmarks.static import collect, contracts

    parser = argparse.ArgumentParser(prog="python -m benchmarks.static", description=__doc__)
    parser.add_argument("--arch", nargs="+", type=int, default=list(contracts.ARCHS))
    parser.add_argument("--figures-only", type=Path, help="write the raw records to PATH, nothing else")
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--no-cache", action="store_true", help="recompute every figure (compilers still cache)")
    args = parser.parse_args(argv)
    records = collect.collect(tuple(args.arch), args.workers, cache=not args.no_cache)
    if args.figures_only:
        args.figures_only.write_text(json.dumps(records, indent=1))
        return 0
    from benchmarks.static import report

    paths = report.write(records)
    print(report.summary(records))
    print("wrote", *paths)
    return 0


if __name__ == "__main__":
    sys.exit(main())
