"""``anato pretrain`` as a function: find the cases, fingerprint them, resolve the config, pretrain.

Config precedence (lowest first): :class:`~anatoseg.stage2.config.PretrainConfig`
defaults, the config file, then the ``section.key=value`` overrides.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from tqdm.auto import tqdm

from anatoseg.config import apply_overrides, load_file, merge
from anatoseg.data.case import load_case
from anatoseg.data.fingerprint import compute_fingerprint, load_fingerprint, save_fingerprint
from anatoseg.data.layouts import find_cases
from anatoseg.errors import AnatoError
from anatoseg.stage2.config import PretrainConfig
from anatoseg.stage2.pretrain import PretrainResult, pretrain

FINGERPRINT_NAME = "fingerprint.json"


def resolve_config(config_file: str | os.PathLike | None = None, overrides: Sequence[str] = ()) -> PretrainConfig:
    """Defaults, then the config file (YAML/JSON), then ``section.key=value`` overrides; validated."""
    file_values = load_file(config_file) if config_file is not None else {}
    return apply_overrides(merge(PretrainConfig(), file_values), overrides).validate()


def dataset_fingerprint(cases, out: Path, path: str | os.PathLike | None, progress: bool) -> dict:
    """The fingerprint at ``path``, else ``out/fingerprint.json`` (computed from ``cases`` if missing).

    Give ``anato train`` the same file (``--fingerprint``) so both stages normalise alike.
    """
    if path is not None:
        return load_fingerprint(path)
    target = out / FINGERPRINT_NAME
    if not target.is_file():
        stream = (load_case(files) for files in tqdm(cases, desc="fingerprint", unit="case",
                                                     disable=not progress, leave=False))
        save_fingerprint(compute_fingerprint(stream), target)
    return load_fingerprint(target)


def run_pretrain(data: str | os.PathLike, out: str | os.PathLike, *, config_file: str | os.PathLike | None = None,
                 overrides: Sequence[str] = (), fingerprint: str | os.PathLike | None = None,
                 layout: str | None = None, device: str | None = None, progress: bool = True) -> PretrainResult:
    """Pretrain the PET/CT encoders on the dataset ``data`` into ``out`` (see :mod:`.pretrain`).

    ``device``: ``cpu`` or ``cuda``; by default CUDA when available.
    """
    import torch

    out = Path(out)
    config = resolve_config(config_file, overrides)
    cases = find_cases(data, layout=layout)
    if not cases:
        raise AnatoError("no cases found", data)
    out.mkdir(parents=True, exist_ok=True)
    fp = dataset_fingerprint(cases, out, fingerprint, progress)
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    elif device.startswith("cuda") and not torch.cuda.is_available():
        raise AnatoError(f"--device {device}: no CUDA device is available")
    return pretrain(config, cases, out, fingerprint=fp, device=device, progress=progress)
