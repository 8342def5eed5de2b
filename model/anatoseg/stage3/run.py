"""``anato train`` as a function: find the cases, fingerprint them, resolve the config, train.

Config precedence (lowest first): dataclass defaults, dataset-fingerprint defaults
(or, with ``resume``, the config stored in ``checkpoint.pt``), the config file,
then the ``section.key=value`` overrides.

The run folder is held for the whole run (:func:`anatoseg.training.run_folder.hold`).
``--resume`` refuses a dataset whose case ids differ from the checkpoint's unless
``allow_other_data``, and then keeps the run's stored fingerprint (its normalisation).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence
from pathlib import Path

from anatoseg.checkpoint import check_same_network, load_checkpoint
from anatoseg.configbase import apply_overrides, merge
from anatoseg.data.case import CaseFiles
from anatoseg.data.layouts import find_cases
from anatoseg.errors import AnatoError, ConfigError
from anatoseg.stage3.config import Config, defaults_from_fingerprint
from anatoseg.stage3.loop import CHECKPOINT_NAME, TrainInputs, TrainResult, train
from anatoseg.training import distributed as D
from anatoseg.training.fingerprint import dataset_fingerprint
from anatoseg.training.network import divisor, net_config, net_dict
from anatoseg.training.run_folder import hold


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
              layout: str | None = None, device: str | None = None, progress: bool = True,
              allow_other_data: bool = False) -> TrainResult:
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
        with hold(out) if ctx.is_main else contextlib.nullcontext():
            checkpoint = _checkpoint_to_resume(out, resume)
            if checkpoint is not None:
                check_same_cases(checkpoint, cases, out / CHECKPOINT_NAME, allow_other_data)
            fp = dataset_fingerprint(cases, out, fingerprint, progress=progress, ctx=ctx,
                                     check_cases=checkpoint is None)
            config = resolve_config(fp, config_file, overrides, checkpoint)
            inputs = TrainInputs(cases, fp, init=init, organs_dir=organs_dir,
                                 organ_model=_organ_model(organ_model, checkpoint))
            return train(config, inputs, out, ctx, resume=checkpoint, stop_at=stop_at, progress=progress)
    finally:
        D.teardown(ctx)


def _checkpoint_to_resume(out: Path, resume: bool) -> dict | None:
    """With ``resume`` the run's ``checkpoint.pt`` (it must hold a training state); without, None, refusing
    a folder that already holds a run."""
    if not resume:
        if (out / CHECKPOINT_NAME).exists():
            raise AnatoError(f"already holds a run ({CHECKPOINT_NAME}): continue it with --resume, or train into "
                             "another folder", out)
        return None
    checkpoint = load_checkpoint(out / CHECKPOINT_NAME, kind="stage3")
    if "train_state" not in checkpoint:
        raise ConfigError("checkpoint has no training state to resume from", out / CHECKPOINT_NAME)
    return checkpoint


def check_same_cases(checkpoint: dict, cases: Sequence[CaseFiles], path: object, allow: bool = False) -> None:
    """ConfigError unless ``cases`` are the cases ``checkpoint`` was trained on (or ``allow``)."""
    ids = checkpoint["meta"].get("case_ids") or {}
    stored = set(ids.get("train", ())) | set(ids.get("val", ()))
    found = {case.case_id for case in cases}
    if allow or not stored or stored == found:
        return
    missing, new = sorted(stored - found), sorted(found - stored)
    raise ConfigError(f"--resume: DATA holds other cases than the run was trained on ({len(missing)} of its "
                      f"cases missing, {len(new)} new, e.g. {(new or missing)[0]!r}); resume with the same "
                      "data, or pass --allow-other-data to continue on these", path)


def _organ_model(organ_model: str | os.PathLike | None, checkpoint: dict | None) -> str | None:
    """The stage-1 model to record: the one given (it must exist), else the resumed run's."""
    if organ_model is not None:
        organ_model = str(Path(organ_model).resolve())
        if not Path(organ_model).is_file():
            raise AnatoError("stage-1 organ model not found", organ_model)
        return organ_model
    return checkpoint["meta"].get("organ_model") if checkpoint is not None else None
