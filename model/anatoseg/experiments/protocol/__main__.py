"""``python -m anatoseg.experiments.protocol OUT [--scale cpu|gpu] [--variants ...] [--seeds N] [--jobs N]
[--reference NAME]``.

Runs (or continues) the experiment protocol in OUT and writes ``OUT/results.md``
(:mod:`anatoseg.experiments.protocol`). Errors are one line on stderr and exit status 1.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shlex
import sys
from pathlib import Path

import yaml

from anatoseg.errors import AnatoError, ConfigError
from anatoseg.experiments.protocol.config import SCALES, Scale
from anatoseg.experiments.protocol.run import make_plan, run
from anatoseg.experiments.protocol.variants import GROUPS, REFERENCE, VARIANTS
from anatoseg.experiments.protocol.workers import default_jobs


def scale_overrides(scale: Scale, items: list[str]) -> Scale:
    """``scale`` with ``field=value`` items applied (values read as YAML; lists become tuples)."""
    fields = {f.name for f in dataclasses.fields(Scale)} - {"name"}
    changes = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or key not in fields:
            raise ConfigError(f"--set {item!r}: expected field=value with field one of {', '.join(sorted(fields))}")
        value = yaml.safe_load(raw)
        changes[key] = tuple(value) if isinstance(value, list) else value
    return dataclasses.replace(scale, **changes)


def execute(out: str | os.PathLike, scale: str, variants: list[str] | None, seeds: int | None,
            settings: list[str], *, sanity: bool, device: str | None, progress: bool, command: str,
            jobs: int | None = None, reference: str = REFERENCE) -> Path:
    """Run (or continue) the protocol in ``out`` and return its ``results.md``: what
    ``python -m anatoseg.experiments.protocol`` and ``anato experiment`` both call. ``scale``: a name of
    :data:`SCALES`, changed by the ``field=value`` ``settings``; ConfigError for a bad one. ``reference``: the
    variant the report compares every other with."""
    if scale not in SCALES:
        raise ConfigError(f"unknown scale {scale!r}; choose one of {', '.join(SCALES)}")
    plan = make_plan(scale_overrides(SCALES[scale], settings), variants, seeds, sanity=sanity, command=command,
                     reference=reference)
    if jobs is None:
        from anatoseg.training.device import choose_device

        jobs = default_jobs(choose_device(device).type)
    return run(out, plan, device=device, progress=progress, jobs=jobs)  # run() checks jobs before any work


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m anatoseg.experiments.protocol", description=__doc__.split("\n")[0])
    parser.add_argument("out", help="run folder (created; an existing one is continued)")
    parser.add_argument("--scale", choices=tuple(SCALES), default="cpu", help="budget (experiments/protocol/config.py)")
    parser.add_argument("--variants", nargs="+", metavar="NAME",
                        help="variants or groups (default: the scale's group: " +
                             ", ".join(f"{name} {scale.group!r}" for name, scale in SCALES.items()) + "); " +
                             f"variants: {', '.join(VARIANTS)}; groups: {', '.join(GROUPS)}")
    parser.add_argument("--seeds", type=int, help="training seeds per variant (default: the scale's)")
    parser.add_argument("--set", dest="settings", nargs="+", default=[], metavar="FIELD=VALUE",
                        help="change a field of the scale, e.g. steps=500 (a run folder keeps its design)")
    parser.add_argument("--no-sanity", action="store_true", help="leave out the no-learning rows")
    parser.add_argument("--device", choices=("cpu", "cuda"), default=None, help="default: cuda when available")
    parser.add_argument("--jobs", type=int, default=None,
                        help="units at once, each in its own process (default: one per core up to 4 on CPU, "
                             "1 on CUDA)")
    parser.add_argument("--reference", default=REFERENCE, metavar="NAME",
                        help=f"the variant every other is compared with (default: {REFERENCE!r}; always run)")
    parser.add_argument("--no-progress", action="store_true")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse(argv)
    command = " ".join(["python -m anatoseg.experiments.protocol", *(shlex.quote(a) for a in argv)])
    try:
        results = execute(args.out, args.scale, args.variants, args.seeds, args.settings, sanity=not args.no_sanity,
                          device=args.device, progress=not args.no_progress, command=command, jobs=args.jobs,
                          reference=args.reference)
    except (AnatoError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(results.read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
