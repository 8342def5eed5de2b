"""``anato pretrain`` as a function: find the cases, fingerprint them, resolve the config, pretrain.

Config precedence (lowest first): :class:`~anatoseg.stage2.config.PretrainConfig`
defaults (with ``resume``: the config stored in ``encoders.pt``), the config file, then
the ``section.key=value`` overrides. A resumed run keeps its network (ConfigError otherwise).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from anatoseg.checkpoint import check_same_network, load_checkpoint
from anatoseg.data.layouts import find_cases
from anatoseg.errors import AnatoError
from anatoseg.stage2.config import PretrainConfig
from anatoseg.stage2.loop import ENCODERS_NAME, PretrainResult, pretrain
from anatoseg.training.device import choose_device
from anatoseg.training.fingerprint import dataset_fingerprint
from anatoseg.training.network import net_config, net_dict
from anatoseg.training.run_folder import hold


def resolve_config(config_file: str | os.PathLike | None = None, overrides: Sequence[str] = (),
                   resume: dict | None = None) -> PretrainConfig:
    """Defaults (or ``resume``'s config), then the config file (YAML/JSON), then ``section.key=value``
    overrides; validated."""
    base = None if resume is None else PretrainConfig.from_dict(resume["meta"]["config"])
    config = PretrainConfig.build(config_file, overrides, base=base)
    if resume is not None:
        check_same_network(resume["meta"], config.model.arch, net_dict(net_config(config.model)), "--resume")
    return config


def run_pretrain(data: str | os.PathLike, out: str | os.PathLike, *, config_file: str | os.PathLike | None = None,
                 overrides: Sequence[str] = (), fingerprint: str | os.PathLike | None = None,
                 layout: str | None = None, device: str | None = None, progress: bool = True,
                 resume: bool = False) -> PretrainResult:
    """Pretrain the PET/CT encoders on the dataset ``data`` into ``out`` (see :mod:`.loop`).

    ``device``: as :func:`anatoseg.training.device.choose_device` (default: CUDA when available).
    ``resume``: continue exactly from ``out/encoders.pt`` (same cases).
    ``out`` is held for the whole run (:func:`anatoseg.training.run_folder.hold`).
    """
    out = Path(out)
    checkpoint = load_checkpoint(out / ENCODERS_NAME, kind="encoders") if resume else None
    config = resolve_config(config_file, overrides, checkpoint)
    cases = find_cases(data, layout=layout)
    if not cases:
        raise AnatoError("no cases found", data)
    with hold(out):
        fp = dataset_fingerprint(cases, out, fingerprint, progress=progress)
        return pretrain(config, cases, out, fingerprint=fp, device=choose_device(device), progress=progress,
                        resume=checkpoint)
