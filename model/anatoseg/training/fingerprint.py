"""The dataset fingerprint a run normalises with, shared by stages 2 and 3 (and the demo).

``anato pretrain`` writes ``<out>/fingerprint.json`` (:data:`FINGERPRINT_NAME`) on first use;
``anato train --fingerprint`` reads the same file, so both stages normalise alike.
A stored ``<out>/fingerprint.json`` computed from other cases or settings is computed
again (with a note on stderr); one given explicitly is used as it is.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path

from tqdm.auto import tqdm

from anatoseg.data.case import CaseFiles, load_case
from anatoseg.data.fingerprint import compute_fingerprint, load_fingerprint, save_fingerprint, stale_reason
from anatoseg.data.preprocess import Preprocessing
from anatoseg.training.distributed import DistContext, barrier

FINGERPRINT_NAME = "fingerprint.json"


def dataset_fingerprint(cases: Sequence[CaseFiles], out: Path, path: str | os.PathLike | None, *,
                        progress: bool, ctx: DistContext | None = None, check_cases: bool = True) -> dict:
    """The fingerprint at ``path``, else ``out/fingerprint.json``, computed from ``cases`` when missing or,
    with ``check_cases``, stale (:func:`~anatoseg.data.fingerprint.stale_reason`).

    Under DDP (``ctx``) the main process computes it and the others wait for it.
    """
    if path is not None:
        return load_fingerprint(path)
    ctx = ctx or DistContext()
    target = Path(out) / FINGERPRINT_NAME
    if ctx.is_main and _to_compute(target, cases, check_cases):
        stream = (load_case(files) for files in tqdm(cases, desc="fingerprint", unit="case",
                                                     disable=not progress, leave=False))
        save_fingerprint(compute_fingerprint(stream), target)
    barrier(ctx)
    return load_fingerprint(target)


def _to_compute(target: Path, cases: Sequence[CaseFiles], check_cases: bool) -> bool:
    if not target.is_file():
        return True
    reason = stale_reason(load_fingerprint(target), [case.case_id for case in cases]) if check_cases else None
    if reason is not None:
        print(f"note: {target}: {reason}; computing it again", file=sys.stderr)
    return reason is not None


def preprocessing_for(fingerprint: dict, spacing: Sequence[float] | None) -> Preprocessing:
    """Preprocessing parameters: the fingerprint's statistics at ``spacing`` (Z, Y, X mm; None: its own)."""
    return Preprocessing.from_fingerprint(fingerprint, target_spacing=spacing)
