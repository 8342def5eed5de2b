"""Stage-2 pretraining loop: masked-patch intra- and cross-modal reconstruction (and optional alignment)
of the PET/CT encoders.

Outputs in ``out``:

- ``encoders.pt``: the stage-2 checkpoint, rewritten atomically every
  ``train.ckpt_every`` steps and at the end. It is a ``kind="encoders"``
  checkpoint (:func:`anatoseg.checkpoint.encoder_checkpoint`, readable with
  ``torch.load(weights_only=True)``): the two encoders' weights, and ``meta``
  with ``arch``, ``encoder`` (the encoder-defining NetConfig fields), ``net`` (the
  full NetConfig as a dict), ``crop_size``, ``mask_patch``, ``config`` (this run's
  :class:`PretrainConfig`), ``preprocessing`` (the
  :class:`~anatoseg.data.preprocess.Preprocessing` dict: target spacing, intensity
  normalisation; None from :func:`pretrain_volumes` without it), ``case_ids``,
  ``step`` and ``losses`` (the last logged row); and ``train_state`` (the
  pretraining model with its heads, optimiser, schedule, mask generator, RNG states
  and pending losses) for ``anato pretrain --resume``. ``anato train --init`` loads it
  with :func:`anatoseg.checkpoint.load_encoders`, which refuses another encoder
  architecture and names the differing fields; stage 3 compares ``preprocessing``
  with its own through :func:`anatoseg.stage2.compat.check_pretrained_preprocessing`;
- ``log.csv``: step, loss, each term (empty when switched off), lr, seconds;
- ``config.yaml``, and ``preprocessed/`` (the data cache, as in stage 3).

Crops are drawn like stage 3's patches (:class:`anatoseg.training.sampling.PatchBatches`,
a pure function of (seed, step), no lesion oversampling); the masks (one per
modality, ``mask.mode``) come from one generator seeded with ``seed``.
Intensities are normalised exactly as in stage 3, from the same dataset fingerprint.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from anatoseg.checkpoint import encoder_checkpoint, load_state_strict, save_checkpoint
from anatoseg.data.case import CaseFiles
from anatoseg.errors import ConfigError
from anatoseg.nets import NetConfig
from anatoseg.stage2.config import PretrainConfig
from anatoseg.stage2.masking import draw_masks
from anatoseg.stage2.model import RECONSTRUCTIONS, PretrainModel
from anatoseg.training import rng
from anatoseg.training.cache import load_volumes, prepare_cache
from anatoseg.training.device import autocast, choose_device
from anatoseg.training.fingerprint import preprocessing_for
from anatoseg.training.log import LOG_NAME, RunLog
from anatoseg.training.network import net_config, net_dict
from anatoseg.training.optim import make_optimizer, optimizer_step
from anatoseg.training.run_folder import CACHE_NAME, jsonable, write_config
from anatoseg.training.sampling import PatchBatches, TrainVolume

ENCODERS_NAME = "encoders.pt"
TERMS = (*(name for name, *_ in RECONSTRUCTIONS), "align")
LOG_FIELDS = ("loss", *TERMS, "lr")


@dataclass
class PretrainResult:
    checkpoint: Path
    log: Path
    steps: int
    seconds: float
    losses: list[dict[str, float]]  # the logged rows: "step", "loss" and the enabled terms
    model: PretrainModel


def pretrain(config: PretrainConfig, cases: Sequence[CaseFiles], out: str | Path, *, fingerprint: dict,
             device: str | torch.device = "cpu", progress: bool = True,
             resume: dict[str, Any] | None = None) -> PretrainResult:
    """Preprocess ``cases`` (cached in ``out/preprocessed``) with the fingerprint's stage-3
    normalisation, then run :func:`pretrain_volumes`."""
    out = Path(out)
    config.validate()
    params = preprocessing_for(fingerprint, config.crop.spacing)
    prepare_cache(cases, params, out / CACHE_NAME, organs_dir=None, need_organs=False, progress=progress)
    volumes = load_volumes(sorted(case.case_id for case in cases), out / CACHE_NAME, use_organs=False)
    return pretrain_volumes(config, volumes, out, preprocessing=jsonable(params.to_dict()), device=device,
                            progress=progress, resume=resume)


@dataclass
class _Run:
    """What a pretraining run changes as it goes, and what ``encoders.pt`` stores to resume it."""

    model: PretrainModel
    optimizer: torch.optim.Optimizer
    scheduler: Any
    masks: torch.Generator  # draws every mask, seeded with ``seed``
    start: int = 0
    rows: list[dict[str, float]] = field(default_factory=list)  # the logged rows
    window: dict[str, list[float]] = field(default_factory=dict)  # the steps since the last row

    def state(self) -> dict[str, Any]:
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(), "masks": self.masks.get_state(), "rng": rng.capture(),
                "window": {name: list(values) for name, values in self.window.items()}}


def pretrain_volumes(config: PretrainConfig, volumes: Sequence[TrainVolume], out: str | Path, *,
                     preprocessing: dict | None = None, device: str | torch.device = "cpu",
                     progress: bool = True, resume: dict[str, Any] | None = None) -> PretrainResult:
    """Pretrain on preprocessed volumes (``image`` (2, Z, Y, X) [PET, CT], normalised) and write ``out``.

    ``resume``: a loaded ``encoders.pt`` of this run to continue exactly from (same cases and config).
    """
    out = Path(out)
    config.validate()
    if not volumes:
        raise ConfigError("no cases to pretrain on")
    train, crop, device = config.train, tuple(config.crop.size), choose_device(device)
    rng.seed_everything(config.seed)
    net = net_config(config.model)
    run = _set_up(config, net, preprocessing, device)
    if resume is not None:
        _resume(run, resume, [v.name for v in volumes])
    batches = PatchBatches(volumes, crop, batch_size=train.batch_size, lesion_fraction=0.0, augment=config.augment,
                           seed=config.seed, use_organs=False, steps=train.steps)
    out.mkdir(parents=True, exist_ok=True)
    write_config(out, config.to_dict())
    meta = {"crop_size": list(crop), "mask_patch": list(config.mask.patch_size), "config": config.to_dict(),
            "preprocessing": preprocessing, "case_ids": [v.name for v in volumes]}
    log = RunLog(out / LOG_NAME, LOG_FIELDS, desc="pretrain", total=train.steps, initial=run.start,
                 progress=progress, resume_step=None if resume is None else run.start)
    for step in range(run.start, train.steps):
        terms = _step(run, config, batches[step]["image"].to(device, non_blocking=True))
        for name, value in terms.items():
            run.window.setdefault(name, []).append(value)
        done = step + 1
        log.advance(**_postfix(terms))
        if done % train.log_every == 0 or done == train.steps:
            run.rows.append({"step": done, **{name: sum(v) / len(v) for name, v in run.window.items()}})
            run.window = {}
            _write_row(log, run.rows[-1], lr=run.scheduler.get_last_lr()[0])
        if done % train.ckpt_every == 0 or done == train.steps:
            _save(out / ENCODERS_NAME, run, config, net, {**meta, "step": done})
    log.close()
    return PretrainResult(checkpoint=out / ENCODERS_NAME, log=out / LOG_NAME, steps=train.steps,
                          seconds=log.seconds, losses=run.rows, model=run.model)


def _set_up(config: PretrainConfig, net: NetConfig, preprocessing: dict | None, device: torch.device) -> _Run:
    """A fresh run: the model on ``device``, its optimiser and schedule, the mask generator."""
    model = PretrainModel(net, config.mask.patch_size, config.loss, suv_norm=_suv_norm(config, preprocessing))
    model = model.to(device).train()
    _note_dead_alignment(config, model.stride)
    optimizer, scheduler = make_optimizer(model.parameters(), config.optim, config.train.steps)
    return _Run(model, optimizer, scheduler, torch.Generator().manual_seed(config.seed))


def _resume(run: _Run, checkpoint: dict[str, Any], case_ids: list[str]) -> None:
    """Weights, optimiser, schedule, mask generator, RNG states, pending losses and step of ``checkpoint``."""
    state, meta = checkpoint.get("train_state"), checkpoint["meta"]
    if state is None:
        raise ConfigError("--resume: the stage-2 checkpoint holds no training state to continue from")
    if meta.get("case_ids") != case_ids:
        raise ConfigError("--resume: the cases differ from the ones this run pretrained on")
    load_state_strict(run.model, state["model"], "--resume", what="pretraining model")
    run.optimizer.load_state_dict(state["optimizer"])
    run.scheduler.load_state_dict(state["scheduler"])
    run.masks.set_state(state["masks"])
    rng.restore(state["rng"])
    run.window = {name: list(values) for name, values in state["window"].items()}
    run.start = int(meta["step"])
    run.rows = [{"step": run.start, **meta["losses"]}] if meta.get("losses") else []


def _step(run: _Run, config: PretrainConfig, image: torch.Tensor) -> dict[str, float]:
    """One optimiser step on ``image`` (B, 2, Z, Y, X) with fresh masks; the loss terms as floats."""
    masks = draw_masks(image.shape[0], image.shape[2:], config.mask.patch_size, config.mask.ratio,
                       config.mask.mode, generator=run.masks, device=image.device)
    with autocast(image.device, config.train.amp):
        terms = run.model(image[:, :1], image[:, 1:], masks)
    optimizer_step(terms["loss"], run.optimizer, run.scheduler, run.model.parameters(), config.optim.grad_clip,
                   what="pretraining")
    return {name: float(value.detach()) for name, value in terms.items()}


def _note_dead_alignment(config: PretrainConfig, stride: int) -> None:
    """A note on stderr when mask patches finer than the deepest stride leave the alignment term (almost) no
    position that is visible in both views: every such position would need all the patches it covers shown."""
    patch = tuple(config.mask.patch_size)
    if config.loss.align and min(patch) < stride:
        print(f"note: mask patches {patch} are finer than the network's deepest stride {stride}, so almost no "
              f"position is visible in both views and loss.align stays near 0; use mask.patch_size >= {stride} "
              f"or loss.align=false", file=sys.stderr)


def _suv_norm(config: PretrainConfig, preprocessing: dict | None) -> tuple[float, float] | None:
    """``(suv_mean, suv_std)`` of the preprocessing; ConfigError when ``log_suv`` needs it and it is missing."""
    if preprocessing is None:
        if config.loss.pet_target == "log_suv":
            raise ConfigError("loss.pet_target=log_suv recovers SUV with the run's preprocessing (suv_mean, "
                              "suv_std), and none was given; pass preprocessing or choose another target")
        return None
    return float(preprocessing["suv_mean"]), float(preprocessing["suv_std"])


def _save(path: Path, run: _Run, config: PretrainConfig, net: NetConfig, meta: dict) -> None:
    """The encoders checkpoint, with the last logged row's losses and the state to resume from."""
    losses = {k: v for k, v in run.rows[-1].items() if k != "step"} if run.rows else {}
    saved = encoder_checkpoint(run.model, config.model.arch, net, **meta, losses=losses)
    saved["meta"]["net"] = net_dict(net)  # the full NetConfig (its parameter ``net`` takes the object)
    saved["train_state"] = run.state()
    save_checkpoint(path, saved)


def _postfix(terms: dict[str, float]) -> dict[str, str]:
    """Progress-bar fields: the total and, per enabled family, the mean of its terms."""
    shown = {"loss": terms["loss"]}
    for family in ("intra", "cross"):
        values = [terms[name] for name, _, _, switch in RECONSTRUCTIONS if switch == family and name in terms]
        if values:
            shown[family] = sum(values) / len(values)
    if "align" in terms:
        shown["align"] = terms["align"]
    return {name: f"{value:.4f}" for name, value in shown.items()}


def _write_row(log: RunLog, row: dict[str, float], *, lr: float) -> None:
    """A log row: switched-off terms and non-finite values are empty cells."""
    values = {name: row[name] if name in row and math.isfinite(row[name]) else None for name in ("loss", *TERMS)}
    log.write(int(row["step"]), **values, lr=lr)
