"""Stage-3 training: one small loop over steps.

Everything a run needs is a value of :class:`~anatoseg.config.Config`; the loop
only wires the parts together: network (:mod:`.model`), cached data
(:mod:`.data`), patches (:mod:`.sampling`), loss and optimiser (:mod:`.optim`),
validation (:mod:`.validate`), DDP (:mod:`.distributed`), log (:mod:`.log`).

Outputs in ``out``: ``checkpoint.pt`` (every ``train.ckpt_every`` steps and at
the end, with the optimiser, scheduler and RNG states for ``--resume``),
``model.pt`` (weights and metadata only, when the run completes), ``log.csv``,
``config.yaml``, ``preprocessed/`` (the data cache).

Exact resume: the batch of a step is a function of (seed, step) only, and every
global RNG is restored, so on the CPU a run stopped and resumed ends with
bit-identical weights to a straight run. (CUDA kernels that are not
deterministic make GPU runs merely equivalent.)
"""

from __future__ import annotations

import contextlib
import json
import math
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from anatoseg.checkpoint import load_encoders, make_checkpoint, save_checkpoint
from anatoseg.config import Config
from anatoseg.data.case import CaseFiles
from anatoseg.data.preprocess import Preprocessing
from anatoseg.errors import ConfigError
from anatoseg.training import distributed as D
from anatoseg.training import rng
from anatoseg.training.cache import load_volumes, prepare_cache, split_cases
from anatoseg.training.log import RunLog
from anatoseg.training.network import build_model, net_dict
from anatoseg.training.optim import LRSchedule, make_loss, make_optimizer
from anatoseg.training.sampling import PatchBatches
from anatoseg.stage3.validate import validate

CHECKPOINT_NAME = "checkpoint.pt"
MODEL_NAME = "model.pt"


@dataclass
class TrainResult:
    step: int
    loss: float  # mean over the last logged steps and all processes
    val_dice: float | None
    checkpoint: Path
    model: Path | None  # None when the run stopped early (``stop_at``)
    rank: int = 0


def preprocessing_for(config: Config, fingerprint: dict) -> Preprocessing:
    """Preprocessing parameters: the fingerprint's statistics at ``data.spacing`` (Z, Y, X mm)."""
    spacing = None if config.data.spacing is None else tuple(config.data.spacing[::-1])
    return Preprocessing.from_fingerprint(fingerprint, target_spacing=spacing)


def train(config: Config, cases: Sequence[CaseFiles], out: str | Path, *, fingerprint: dict,
          ctx: D.DistContext, resume: dict[str, Any] | None = None, init: str | Path | None = None,
          organs_dir: str | Path | None = None, organ_model: str | None = None, stop_at: int | None = None,
          progress: bool = True) -> TrainResult:
    """Train for ``config.train.steps`` steps (or until ``stop_at``); see the module docstring.

    ``resume``: a loaded ``checkpoint.pt`` to continue from. ``init``: a stage-2
    encoder checkpoint for the PET/CT encoders (ignored when resuming). ``organs_dir``: organ label maps
    ``<case_id>.nii.gz`` from stage 1; ``organ_model``: the stage-1 model that made
    them, recorded so that ``anato predict`` can make prompts itself.
    """
    out = Path(out)
    run = config.train
    if run.batch_size % ctx.world_size:
        raise ConfigError(f"train.batch_size {run.batch_size} is not divisible by the {ctx.world_size} "
                          f"processes")
    patch = tuple(config.data.patch_size)
    torch.manual_seed(run.seed)
    net, net_cfg = build_model(config.model, patch)
    use_organs = bool(net.uses_prompts)
    if init is not None and resume is None:
        load_encoders(net, init)
    torch.manual_seed(run.seed + 1 + ctx.rank)
    np.random.seed(run.seed + ctx.rank)
    random.seed(run.seed + ctx.rank)
    net.to(ctx.device)
    model = DistributedDataParallel(net, device_ids=[ctx.device.index] if ctx.device.type == "cuda" else None) \
        if ctx.distributed else net

    params = preprocessing_for(config, fingerprint)
    by_id = {case.case_id: case for case in cases}
    train_ids, val_ids = split_cases(sorted(by_id), config.data, run.seed)
    cache = out / "preprocessed"
    if ctx.is_main:
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.yaml").write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))
        prepare_cache([by_id[i] for i in train_ids + val_ids], params, cache, organs_dir=organs_dir,
                      need_organs=use_organs, progress=progress)
    D.barrier(ctx)
    train_volumes = load_volumes(train_ids, cache, use_organs=use_organs)
    val_volumes = load_volumes(val_ids, cache, use_organs=use_organs)

    optimizer, scheduler = make_optimizer(net.parameters(), config.optim, run.steps)
    loss_fn = make_loss(config.loss)
    start, losses = 0, []  # losses: of the steps since the last log row
    if resume is not None:
        state = resume["train_state"]
        net.load_state_dict(resume["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scheduler.lr_lambdas = [LRSchedule(config.optim.schedule, run.steps, config.optim.warmup_steps)]
        rank_state = state["ranks"][ctx.rank % len(state["ranks"])]
        rng.restore(rank_state["rng"])
        losses = list(rank_state["losses"])
        start = int(state["step"])
    end = run.steps if stop_at is None else max(start, min(stop_at, run.steps))

    batches = PatchBatches(train_volumes, patch, batch_size=run.batch_size,
                           lesion_fraction=config.data.lesion_fraction, augment=config.augment, seed=run.seed,
                           use_organs=use_organs, rank=ctx.rank, world_size=ctx.world_size, steps=run.steps)
    loader = torch.utils.data.DataLoader(batches, batch_size=None, sampler=range(start, end),
                                         num_workers=config.data.num_workers,
                                         generator=torch.Generator().manual_seed(run.seed))
    amp = run.amp and ctx.device.type == "cuda"
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if amp else contextlib.nullcontext()
    meta = {"arch": config.model.arch, "net": net_dict(net_cfg), "patch_size": list(patch),
            "config": config.to_dict(), "preprocessing": _jsonable(params.to_dict()),
            "organ_model": organ_model, "case_ids": {"train": train_ids, "val": val_ids}}
    log = RunLog(out, resume_step=start if resume is not None else None) if ctx.is_main else None
    bar = tqdm(total=end, initial=start, desc="train", unit="step", disable=not (progress and ctx.is_main))
    t0, last_loss, val_dice = time.perf_counter(), None, None
    if resume is not None:
        val_dice = resume["meta"].get("val_dice")
    checkpoint_path = out / CHECKPOINT_NAME

    net.train()
    for step, batch in zip(range(start, end), loader, strict=True):
        image = batch["image"].to(ctx.device, non_blocking=True)
        label = batch["label"].to(ctx.device, non_blocking=True)
        organs = batch["organs"].to(ctx.device, non_blocking=True) if use_organs else None
        with autocast:
            logits = model(image, organs)
        loss = loss_fn(logits, label)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if config.optim.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(net.parameters(), config.optim.grad_clip)
        optimizer.step()
        scheduler.step()
        losses.append(float(loss.detach()))
        done = step + 1

        logged = done % run.log_every == 0 or done == end
        validated = bool(val_ids) and (done % run.val_every == 0 or done == end)
        if logged:
            total, count = D.all_sum(ctx, [sum(losses), len(losses)])
            last_loss, losses = total / count, []
        if validated:
            val_dice = validate(net, val_volumes, patch, config.infer, ctx, amp=amp, use_organs=use_organs)
        if ctx.is_main and (logged or validated):
            log.write(done, time.perf_counter() - t0, loss=last_loss if logged else None,
                      lr=scheduler.get_last_lr()[0], val_dice=val_dice if validated else None)
        bar.set_postfix(loss="-" if last_loss is None else f"{last_loss:.4f}",
                        val_dice="-" if val_dice is None else f"{val_dice:.3f}")
        bar.update(1)
        if done % run.ckpt_every == 0 or done == end:
            ranks = D.gather_objects(ctx, {"rng": rng.capture(), "losses": list(losses)})
            if ctx.is_main:
                train_state = {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                               "ranks": ranks, "step": done}
                save_checkpoint(checkpoint_path, make_checkpoint(
                    "stage3", {**meta, "step": done, "val_dice": val_dice}, model=net.state_dict(),
                    train_state=train_state))
            D.barrier(ctx)
    bar.close()
    if ctx.is_main:
        log.close()
        if end == run.steps:
            save_checkpoint(out / MODEL_NAME, make_checkpoint(
                "stage3", {**meta, "step": end, "val_dice": val_dice}, model=net.state_dict()))
    D.barrier(ctx)
    return TrainResult(step=end, loss=math.nan if last_loss is None else last_loss, val_dice=val_dice,
                       checkpoint=checkpoint_path, model=out / MODEL_NAME if end == run.steps else None, rank=ctx.rank)


def _jsonable(values: dict) -> dict:
    return json.loads(json.dumps(values))
