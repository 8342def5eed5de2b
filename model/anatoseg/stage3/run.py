"""``anato train`` as a function: find the cases, fingerprint them, resolve the config, train.

Config precedence (lowest first): dataclass defaults, dataset-fingerprint defaults
(or, with ``resume``, the config stored in ``checkpoint.pt``), the config file,
then the ``section.key=value`` overrides.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from anatoseg.checkpoint import check_same_network, load_checkpoint
from anatoseg.config import Config, apply_overrides, defaults_from_fingerprint, merge
from anatoseg.data.layouts import find_cases
from anatoseg.errors import AnatoError, ConfigError
from anatoseg.stage3.loop import CHECKPOINT_NAME, TrainInputs, TrainResult, train
from anatoseg.training import distributed as D
from anatoseg.training.fingerprint import dataset_fingerprint
from anatoseg.training.network import divisor, net_config, net_dict


def resolve_config(fingerprint: dict, config_file: str | os.PathLike | None = None,
                   overrides: Sequence[str] = (), resume: dict | None = None) -> Config:
    """The run's config (module docstring). With ``resume``, the network and optimiser must stay
    those of the checkpoint (ConfigError naming the differences otherwise)."""
    if resume is not None:
        base = Config.from_dict(resume["meta"]["config"])
    else:
        # The patch-size default depends on the network (divisor, budget), which the file or
        # the overrides may choose: resolve the model section first.
        file_values = Config.read_file(config_file) if config_file is not None else {}
        model = apply_overrides(merge(Config(), file_values), overrides).model
        base = merge(Config(), defaults_from_fingerprint(fingerprint, model.preset, divisor(model)))
    config = Config.build(config_file, overrides, base=base)
    if resume is not None:
        check_same_network(resume["meta"], config.model.arch, net_dict(net_config(config.model)), "--resume")
        stored = base.optim.name
        if config.optim.name != stored:
            raise ConfigError(f"--resume: the checkpoint was trained with optimiser {stored!r}, "
                              f"not {config.optim.name!r}")
    return config


def run_train(data: str | os.PathLike, out: str | os.PathLike, *, config_file: str | os.PathLike | None = None,
              overrides: Sequence[str] = (), init: str | os.PathLike | None = None,
              organs_dir: str | os.PathLike | None = None, organ_model: str | os.PathLike | None = None,
              resume: bool = False, stop_at: int | None = None, fingerprint: str | os.PathLike | None = None,
              layout: str | None = None, device: str | None = None, progress: bool = True) -> TrainResult:
    """Train a stage-3 model on the dataset ``data`` into the run folder ``out`` (see :mod:`.loop`).

    ``fingerprint``: a fingerprint JSON to use; by default ``out/fingerprint.json``,
    computed from the cases on first use. Under ``torchrun`` this runs DDP.
    """
    out = Path(out)
    ctx = D.setup(device)
    try:
        cases = find_cases(data, layout=layout)
        if not cases:
            raise AnatoError("no cases found", data)
        checkpoint = None
        if not resume and (out / CHECKPOINT_NAME).exists():
            raise AnatoError(f"already holds a run ({CHECKPOINT_NAME}): continue it with --resume, or train into "
                             "another folder", out)
        if resume:
            checkpoint = load_checkpoint(out / CHECKPOINT_NAME, kind="stage3")
            if "train_state" not in checkpoint:
                raise ConfigError("checkpoint has no training state to resume from", out / CHECKPOINT_NAME)
        if ctx.is_main:
            out.mkdir(parents=True, exist_ok=True)
        fp = dataset_fingerprint(cases, out, fingerprint, progress=progress, ctx=ctx)
        config = resolve_config(fp, config_file, overrides, checkpoint)
        if organ_model is not None:
            organ_model = str(Path(organ_model).resolve())
            if not Path(organ_model).is_file():
                raise AnatoError("stage-1 organ model not found", organ_model)
        elif checkpoint is not None:
            organ_model = checkpoint["meta"].get("organ_model")
        inputs = TrainInputs(cases, fp, init=init, organs_dir=organs_dir, organ_model=organ_model)
        return train(config, inputs, out, ctx, resume=checkpoint, stop_at=stop_at, progress=progress)
    finally:
        D.teardown(ctx)
