"""``anato pretrain`` as a function: find the cases, fingerprint them, resolve the config, pretrain.

Config precedence (lowest first): :class:`~anatoseg.stage2.config.PretrainConfig`
defaults, the config file, then the ``section.key=value`` overrides.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from anatoseg.data.layouts import find_cases
from anatoseg.errors import AnatoError
from anatoseg.stage2.config import PretrainConfig
from anatoseg.stage2.loop import PretrainResult, pretrain
from anatoseg.training.device import choose_device
from anatoseg.training.fingerprint import dataset_fingerprint
from anatoseg.training.run_folder import hold


def resolve_config(config_file: str | os.PathLike | None = None, overrides: Sequence[str] = ()) -> PretrainConfig:
    """Defaults, then the config file (YAML/JSON), then ``section.key=value`` overrides; validated."""
    return PretrainConfig.build(config_file, overrides)


def run_pretrain(data: str | os.PathLike, out: str | os.PathLike, *, config_file: str | os.PathLike | None = None,
                 overrides: Sequence[str] = (), fingerprint: str | os.PathLike | None = None,
                 layout: str | None = None, device: str | None = None, progress: bool = True) -> PretrainResult:
    """Pretrain the PET/CT encoders on the dataset ``data`` into ``out`` (see :mod:`.pretrain`).

    ``device``: as :func:`anatoseg.training.device.choose_device` (default: CUDA when available).
    ``out`` is held for the whole run (:func:`anatoseg.training.run_folder.hold`).
    """
    out = Path(out)
    config = resolve_config(config_file, overrides)
    cases = find_cases(data, layout=layout)
    if not cases:
        raise AnatoError("no cases found", data)
    with hold(out):
        fp = dataset_fingerprint(cases, out, fingerprint, progress=progress)
        return pretrain(config, cases, out, fingerprint=fp, device=choose_device(device), progress=progress)
