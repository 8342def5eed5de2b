"""Stage-2 pretraining loop: masked-patch reconstruction and cross-modal alignment of the PET/CT encoders.

Outputs in ``out``:

- ``encoders.pt``: the stage-2 checkpoint, rewritten atomically every
  ``train.ckpt_every`` steps and at the end. It is a ``kind="encoders"``
  checkpoint (:func:`anatoseg.checkpoint.encoder_checkpoint`, readable with
  ``torch.load(weights_only=True)``): the two encoders' weights, and ``meta``
  with ``arch``, ``encoder`` (the encoder-defining NetConfig fields), ``net`` (the
  full NetConfig as a dict), ``crop_size``, ``mask_patch``, ``config`` (this run's
  :class:`PretrainConfig`), ``preprocessing``, ``case_ids``, ``step`` and
  ``losses`` (the last logged row). ``anato train --init`` loads it with
  :func:`anatoseg.checkpoint.load_encoders`, which refuses another encoder
  architecture and names the differing fields;
- ``log.csv``: step, loss, each term (empty when switched off), lr, seconds;
- ``config.yaml``, and ``preprocessed/`` (the data cache, as in stage 3).

Crops are drawn like stage 3's patches (:class:`anatoseg.training.sampling.PatchBatches`,
a pure function of (seed, step), no lesion oversampling); masks come from one
generator seeded with ``train.seed``. Intensities are normalised exactly as in
stage 3, from the same dataset fingerprint.
"""

from __future__ import annotations

import contextlib
import csv
import json
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml
from tqdm.auto import tqdm

from anatoseg.checkpoint import encoder_checkpoint, save_checkpoint
from anatoseg.data.case import CaseFiles
from anatoseg.data.preprocess import Preprocessing
from anatoseg.errors import ConfigError
from anatoseg.stage2.config import PretrainConfig
from anatoseg.stage2.masking import draw_shared_mask
from anatoseg.stage2.model import RECONSTRUCTIONS, PretrainModel
from anatoseg.training.cache import load_volumes, prepare_cache
from anatoseg.training.network import net_config, net_dict
from anatoseg.training.optim import make_optimizer
from anatoseg.training.sampling import PatchBatches, TrainVolume

CHECKPOINT_NAME = "encoders.pt"
LOG_NAME = "log.csv"
TERMS = (*(name for name, *_ in RECONSTRUCTIONS), "align")
LOG_FIELDS = ("step", "loss", *TERMS, "lr", "seconds")


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
    spacing = None if config.crop.spacing is None else tuple(config.crop.spacing[::-1])  # (Z, Y, X) -> (x, y, z)
    params = Preprocessing.from_fingerprint(fingerprint, target_spacing=spacing)
    cache = out / "preprocessed"
    prepare_cache(cases, params, cache, organs_dir=None, need_organs=False, progress=progress)
    volumes = load_volumes(sorted(case.case_id for case in cases), cache, use_organs=False)
    return pretrain_volumes(config, volumes, out, preprocessing=json.loads(json.dumps(params.to_dict())),
                            device=device, progress=progress)


def pretrain_volumes(config: PretrainConfig, volumes: Sequence[TrainVolume], out: str | Path, *,
                     preprocessing: dict | None = None, device: str | torch.device = "cpu",
                     progress: bool = True) -> PretrainResult:
    """Pretrain on preprocessed volumes (``image`` (2, Z, Y, X) [PET, CT], normalised) and write ``out``."""
    out = Path(out)
    config.validate()
    if not volumes:
        raise ConfigError("no cases to pretrain on")
    run, crop = config.train, tuple(config.crop.size)
    device = torch.device(device)
    torch.manual_seed(run.seed)
    net = net_config(config.model)
    model = PretrainModel(net, config.mask.patch_size, config.loss).to(device).train()
    optimizer, scheduler = make_optimizer(model.parameters(), config.optim, run.steps)
    batches = PatchBatches(volumes, crop, batch_size=run.batch_size, lesion_fraction=0.0, augment=config.augment,
                           seed=run.seed, use_organs=False, steps=run.steps)
    masks = torch.Generator().manual_seed(run.seed)
    autocast = (torch.autocast("cuda", dtype=torch.bfloat16) if run.amp and device.type == "cuda"
                else contextlib.nullcontext())

    out.mkdir(parents=True, exist_ok=True)
    (out / "config.yaml").write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))
    meta = {"crop_size": list(crop), "mask_patch": list(config.mask.patch_size), "config": config.to_dict(),
            "preprocessing": preprocessing, "case_ids": [v.name for v in volumes]}
    log_path, checkpoint = out / LOG_NAME, out / CHECKPOINT_NAME
    with log_path.open("w", newline="") as handle:
        csv.DictWriter(handle, LOG_FIELDS).writeheader()

    rows: list[dict[str, float]] = []
    window: dict[str, list[float]] = {}
    t0 = time.perf_counter()
    bar = tqdm(range(run.steps), desc="pretrain", unit="step", disable=not progress)
    for step in bar:
        image = batches[step]["image"].to(device, non_blocking=True)
        visible, masked = draw_shared_mask(image.shape[0], crop, config.mask.patch_size, config.mask.ratio,
                                           generator=masks, device=device)
        with autocast:
            terms = model(image[:, :1], image[:, 1:], visible, masked)
        optimizer.zero_grad(set_to_none=True)
        terms["loss"].backward()
        if config.optim.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.optim.grad_clip)
        optimizer.step()
        scheduler.step()
        for name, value in terms.items():
            window.setdefault(name, []).append(float(value.detach()))
        done = step + 1
        bar.set_postfix(_postfix(terms))
        if done % run.log_every == 0 or done == run.steps:
            row = {"step": done, **{name: sum(v) / len(v) for name, v in window.items()}}
            rows.append(row)
            window = {}
            _append_row(log_path, row, lr=scheduler.get_last_lr()[0], seconds=time.perf_counter() - t0)
        if done % run.ckpt_every == 0 or done == run.steps:
            losses = {k: v for k, v in rows[-1].items() if k != "step"} if rows else {}
            saved = encoder_checkpoint(model, config.model.arch, net, **meta, step=done, losses=losses)
            saved["meta"]["net"] = net_dict(net)  # the full NetConfig (its parameter ``net`` takes the object)
            save_checkpoint(checkpoint, saved)
    bar.close()
    return PretrainResult(checkpoint=checkpoint, log=log_path, steps=run.steps,
                          seconds=time.perf_counter() - t0, losses=rows, model=model)


def _postfix(terms: dict[str, torch.Tensor]) -> dict[str, str]:
    """Progress-bar fields: the total and, per enabled family, the mean of its terms."""
    shown = {"loss": float(terms["loss"].detach())}
    for family in ("intra", "cross"):
        values = [float(terms[name].detach()) for name, _, _, switch in RECONSTRUCTIONS
                  if switch == family and name in terms]
        if values:
            shown[family] = sum(values) / len(values)
    if "align" in terms:
        shown["align"] = float(terms["align"].detach())
    return {name: f"{value:.4f}" for name, value in shown.items()}


def _append_row(path: Path, row: dict[str, float], *, lr: float, seconds: float) -> None:
    values = {name: "" if name not in row or not math.isfinite(row[name]) else f"{row[name]:.6g}"
              for name in ("loss", *TERMS)}
    with path.open("a", newline="") as handle:
        csv.DictWriter(handle, LOG_FIELDS).writerow({"step": int(row["step"]), **values, "lr": f"{lr:.6g}",
                                                     "seconds": f"{seconds:.1f}"})
