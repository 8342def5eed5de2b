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
  ``step`` and ``losses`` (the last logged row). ``anato train --init`` loads it
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
from dataclasses import dataclass
from pathlib import Path

import torch

from anatoseg.checkpoint import encoder_checkpoint, save_checkpoint
from anatoseg.data.case import CaseFiles
from anatoseg.errors import ConfigError
from anatoseg.nets import NetConfig
from anatoseg.stage2.config import PretrainConfig
from anatoseg.stage2.masking import draw_masks
from anatoseg.stage2.model import RECONSTRUCTIONS, PretrainModel
from anatoseg.training.cache import load_volumes, prepare_cache
from anatoseg.training.device import autocast, choose_device
from anatoseg.training.fingerprint import preprocessing_for
from anatoseg.training.log import LOG_NAME, RunLog
from anatoseg.training.network import net_config, net_dict
from anatoseg.training.optim import make_optimizer, optimizer_step
from anatoseg.training.rng import seed_everything
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
             device: str | torch.device = "cpu", progress: bool = True) -> PretrainResult:
    """Preprocess ``cases`` (cached in ``out/preprocessed``) with the fingerprint's stage-3
    normalisation, then run :func:`pretrain_volumes`."""
    out = Path(out)
    config.validate()
    params = preprocessing_for(fingerprint, config.crop.spacing)
    prepare_cache(cases, params, out / CACHE_NAME, organs_dir=None, need_organs=False, progress=progress)
    volumes = load_volumes(sorted(case.case_id for case in cases), out / CACHE_NAME, use_organs=False)
    return pretrain_volumes(config, volumes, out, preprocessing=jsonable(params.to_dict()), device=device,
                            progress=progress)


def pretrain_volumes(config: PretrainConfig, volumes: Sequence[TrainVolume], out: str | Path, *,
                     preprocessing: dict | None = None, device: str | torch.device = "cpu",
                     progress: bool = True) -> PretrainResult:
    """Pretrain on preprocessed volumes (``image`` (2, Z, Y, X) [PET, CT], normalised) and write ``out``."""
    out = Path(out)
    config.validate()
    if not volumes:
        raise ConfigError("no cases to pretrain on")
    run, crop, device = config.train, tuple(config.crop.size), choose_device(device)
    seed_everything(config.seed)
    net = net_config(config.model)
    model = PretrainModel(net, config.mask.patch_size, config.loss, suv_norm=_suv_norm(config, preprocessing))
    model = model.to(device).train()
    _note_dead_alignment(config, model.stride)
    optimizer, scheduler = make_optimizer(model.parameters(), config.optim, run.steps)
    batches = PatchBatches(volumes, crop, batch_size=run.batch_size, lesion_fraction=0.0, augment=config.augment,
                           seed=config.seed, use_organs=False, steps=run.steps)
    masks = torch.Generator().manual_seed(config.seed)
    out.mkdir(parents=True, exist_ok=True)
    write_config(out, config.to_dict())
    meta = {"crop_size": list(crop), "mask_patch": list(config.mask.patch_size), "config": config.to_dict(),
            "preprocessing": preprocessing, "case_ids": [v.name for v in volumes]}
    log = RunLog(out / LOG_NAME, LOG_FIELDS, desc="pretrain", total=run.steps, progress=progress)
    rows: list[dict[str, float]] = []
    window: dict[str, list[float]] = {}
    for step in range(run.steps):
        image = batches[step]["image"].to(device, non_blocking=True)
        drawn = draw_masks(image.shape[0], crop, config.mask.patch_size, config.mask.ratio, config.mask.mode,
                           generator=masks, device=device)
        with autocast(device, run.amp):
            terms = model(image[:, :1], image[:, 1:], drawn)
        optimizer_step(terms["loss"], optimizer, scheduler, model.parameters(), config.optim.grad_clip,
                       what="pretraining")
        terms = {name: float(value.detach()) for name, value in terms.items()}
        for name, value in terms.items():
            window.setdefault(name, []).append(value)
        done = step + 1
        log.advance(**_postfix(terms))
        if done % run.log_every == 0 or done == run.steps:
            rows.append({"step": done, **{name: sum(v) / len(v) for name, v in window.items()}})
            window = {}
            _write_row(log, rows[-1], lr=scheduler.get_last_lr()[0])
        if done % run.ckpt_every == 0 or done == run.steps:
            _save(out / ENCODERS_NAME, model, config, net, {**meta, "step": done}, rows)
    log.close()
    return PretrainResult(checkpoint=out / ENCODERS_NAME, log=out / LOG_NAME, steps=run.steps,
                          seconds=log.seconds, losses=rows, model=model)


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


def _save(path: Path, model: PretrainModel, config: PretrainConfig, net: NetConfig, meta: dict,
          rows: list[dict[str, float]]) -> None:
    """The encoders checkpoint, with the last logged row's losses."""
    losses = {k: v for k, v in rows[-1].items() if k != "step"} if rows else {}
    saved = encoder_checkpoint(model, config.model.arch, net, **meta, losses=losses)
    saved["meta"]["net"] = net_dict(net)  # the full NetConfig (its parameter ``net`` takes the object)
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
