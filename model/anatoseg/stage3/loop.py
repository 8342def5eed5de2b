"""Stage-3 training: one small loop over steps.

Everything a run needs is a value of :class:`~anatoseg.stage3.config.Config`; the loop
only wires the parts of :mod:`anatoseg.training` together: network, cached
data, patches, loss and optimiser, DDP, run log; validation is :mod:`.validate`.
:func:`train` is set-up (:func:`_set_up`), resume (:func:`_resume`), then per
step :func:`_step` and the bookkeeping (:func:`_log_and_validate`, :func:`_save`).

Outputs in ``out``: ``checkpoint.pt`` (every ``train.ckpt_every`` steps and at
the end, with the optimiser, scheduler and RNG states for ``--resume``),
``model.pt`` (weights and metadata only, when the run completes), ``log.csv``,
``config.yaml``, ``preprocessed/`` (the data cache).

Exact resume: the batch of a step is a function of (seed, step) only, every
global RNG is restored, and the scheduler's state is its step count (the
schedule itself comes from the config), so on the CPU a run stopped and resumed
ends with bit-identical weights to a straight run. (CUDA kernels that are not
deterministic make GPU runs merely equivalent.)
"""

from __future__ import annotations

import math
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.parallel import DistributedDataParallel

from anatoseg.checkpoint import load_encoders, make_checkpoint, save_checkpoint
from anatoseg.config import organ_names
from anatoseg.data.case import CaseFiles
from anatoseg.data.labels import ORGAN_IDS
from anatoseg.errors import ConfigError
from anatoseg.nets import ENCODER_NAMES
from anatoseg.stage2.compat import check_pretrained_preprocessing
from anatoseg.stage3.config import Config
from anatoseg.stage3.validate import validate
from anatoseg.training import distributed as D
from anatoseg.training import rng
from anatoseg.training.cache import load_volumes, prepare_cache, split_cases
from anatoseg.training.device import amp_active, autocast
from anatoseg.training.fingerprint import preprocessing_for
from anatoseg.training.log import LOG_NAME, RunLog
from anatoseg.training.network import build_model, net_dict
from anatoseg.training.optim import make_loss, make_optimizer, optimizer_step, param_groups, resolve_optim
from anatoseg.training.run_folder import CACHE_NAME, jsonable, write_config
from anatoseg.training.sampling import HardNegativeShares, PatchBatches, TrainVolume, auto_num_workers

CHECKPOINT_NAME = "checkpoint.pt"
MODEL_NAME = "model.pt"
LOG_FIELDS = ("loss", "lr", "val_dice")


@dataclass
class TrainResult:
    step: int
    loss: float  # mean over the last logged steps and all processes
    val_dice: float | None
    checkpoint: Path
    model: Path | None  # None when the run stopped early (``stop_at``)
    rank: int = 0


@dataclass(frozen=True)
class TrainInputs:
    """What a run trains on besides its config.

    ``fingerprint``: the dataset fingerprint (normalisation). ``init``: a stage-2 encoder
    checkpoint for the PET/CT encoders (ignored when resuming). ``organs_dir``: organ label
    maps ``<case_id>.nii.gz`` from stage 1; ``organ_model``: the stage-1 model that made
    them, recorded so that ``anato predict`` can make prompts itself.
    """

    cases: Sequence[CaseFiles]
    fingerprint: dict
    init: str | Path | None = None
    organs_dir: str | Path | None = None
    organ_model: str | None = None


@dataclass
class _Run:
    """A run's parts and the state that changes from step to step."""

    config: Config
    ctx: D.DistContext
    out: Path
    net: nn.Module  # the bare network
    model: nn.Module  # ``net``, or its DDP wrapper
    use_organs: bool  # batches carry organ maps: the network's prompts (``net.uses_prompts``) or aux target
    train_volumes: list[TrainVolume]
    val_volumes: list[TrainVolume]
    meta: dict[str, Any]
    optimizer: torch.optim.Optimizer = None
    scheduler: torch.optim.lr_scheduler.LRScheduler = None
    loss_fn: nn.Module = None
    start: int = 0
    end: int = 0
    losses: list[float] = field(default_factory=list)  # of the steps since the last log row
    last_loss: float | None = None
    val_dice: float | None = None
    log: RunLog | None = None
    progress: bool = False  # bars (main process only)

    @property
    def amp(self) -> bool:
        return amp_active(self.ctx.device, self.config.train.amp)


def train(config: Config, inputs: TrainInputs, out: str | Path, ctx: D.DistContext, *,
          resume: dict[str, Any] | None = None, stop_at: int | None = None, progress: bool = True) -> TrainResult:
    """Train for ``config.train.steps`` steps (or until ``stop_at``); see the module docstring.

    ``resume``: a loaded ``checkpoint.pt`` to continue from.
    """
    run = _set_up(config, inputs, Path(out), ctx, resume=resume, progress=progress)
    if resume is not None:
        _resume(run, resume)
    run.end = config.train.steps if stop_at is None else max(run.start, min(stop_at, config.train.steps))
    run.progress = progress and ctx.is_main
    loader = _loader(run)
    run.log = RunLog(run.out / LOG_NAME if ctx.is_main else None, LOG_FIELDS, desc="train", total=run.end,
                     initial=run.start, progress=run.progress,
                     resume_step=run.start if resume is not None else None)
    run.net.train()
    for step, batch in zip(range(run.start, run.end), loader, strict=True):
        run.losses.append(_step(run, batch))
        _log_and_validate(run, step + 1)
        if (step + 1) % config.train.ckpt_every == 0 or step + 1 == run.end:
            _save_checkpoint(run, step + 1)
    return _finish(run)


def _set_up(config: Config, inputs: TrainInputs, out: Path, ctx: D.DistContext, *, resume: dict | None,
            progress: bool) -> _Run:
    """Network (on its device, DDP-wrapped when distributed), seeds, data cache, optimiser and loss."""
    run = config.train
    if run.batch_size % ctx.world_size:
        raise ConfigError(f"train.batch_size {run.batch_size} is not divisible by the {ctx.world_size} "
                          f"processes")
    patch = tuple(config.data.patch_size)
    rng.seed_everything(config.seed)
    net, net_cfg = build_model(config.model, patch)
    params = preprocessing_for(inputs.fingerprint, config.data.spacing)
    init = _init_encoders(net, config, inputs, params, resume=resume, main=ctx.is_main)
    rng.seed_everything(config.seed + 1 + ctx.rank)
    net.to(ctx.device)
    model = DistributedDataParallel(net, device_ids=[ctx.device.index] if ctx.device.type == "cuda" else None) \
        if ctx.distributed else net
    use_organs = bool(net.uses_prompts or net.organ_aux)
    train_ids, val_ids = _prepare_data(config, inputs, out, ctx, params, use_organs, progress)
    meta = {"arch": config.model.arch, "net": net_dict(net_cfg), "patch_size": list(patch),
            "config": config.to_dict(), "preprocessing": jsonable(params.to_dict()),
            "organ_model": inputs.organ_model, "case_ids": {"train": train_ids, "val": val_ids}, "init": init}
    cache = out / CACHE_NAME
    state = _Run(config, ctx, out, net, model, use_organs, load_volumes(train_ids, cache, use_organs=use_organs),
                 load_volumes(val_ids, cache, use_organs=use_organs), meta)
    state.optimizer, state.scheduler = _optimizer(net, config, pretrained=init is not None)
    state.loss_fn = make_loss(config.loss)
    return state


def _init_encoders(net: nn.Module, config: Config, inputs: TrainInputs, params, *, resume: dict | None,
                   main: bool) -> str | None:
    """The stage-2 checkpoint the encoders start from, as an absolute path (None: none); a resumed run's is the
    one it started from (the same optimiser groups). A fresh run loads its encoders into ``net`` and checks
    that they were pretrained on inputs preprocessed like ``params``: ConfigError listing the differences,
    unless ``train.allow_preprocessing_mismatch``, then a warning on stderr (as for a checkpoint that records
    no preprocessing, which cannot be checked)."""
    if resume is not None:
        return resume["meta"].get("init")
    if inputs.init is None:
        return None
    meta = load_encoders(net, inputs.init)
    problems = check_pretrained_preprocessing(meta, jsonable(params.to_dict()))
    unchecked = not isinstance(meta.get("preprocessing"), Mapping)
    if problems and not unchecked and not config.train.allow_preprocessing_mismatch:
        raise ConfigError(f"--init {inputs.init}: the stage-2 encoders were pretrained on inputs preprocessed "
                          f"otherwise than this run's: {'; '.join(problems)}. Pretrain again with this run's "
                          f"preprocessing, or set train.allow_preprocessing_mismatch=true to go on anyway")
    if problems and main:
        print(f"warning: --init {inputs.init}: {'; '.join(problems)}", file=sys.stderr)
    return str(Path(inputs.init).resolve())


def _optimizer(net: nn.Module, config: Config, *, pretrained: bool):
    """``(optimizer, scheduler)`` with the architecture's rate and warm-up where the config leaves them null,
    and the stage-2 encoders (``pretrained``) in their own group at ``optim.pretrained_lr_scale`` times the
    rate. A resumed run rebuilds the same groups (the checkpoint records ``init``), then loads their state."""
    optim = resolve_optim(config.optim, config.model.arch, config.train.steps, pretrained)
    groups = param_groups(net, optim.learning_rate, ENCODER_NAMES if pretrained else (),
                          config.optim.pretrained_lr_scale)
    return make_optimizer(groups, optim, config.train.steps)


def _prepare_data(config: Config, inputs: TrainInputs, out: Path, ctx: D.DistContext, params, use_organs: bool,
                  progress: bool) -> tuple[list[str], list[str]]:
    """Split the cases, write ``config.yaml`` and the case cache (main process); ``(train_ids, val_ids)``."""
    by_id = {case.case_id: case for case in inputs.cases}
    train_ids, val_ids = split_cases(sorted(by_id), config.data, config.seed)
    if ctx.is_main:
        out.mkdir(parents=True, exist_ok=True)
        write_config(out, config.to_dict())
        prepare_cache([by_id[i] for i in train_ids + val_ids], params, out / CACHE_NAME,
                      organs_dir=inputs.organs_dir, need_organs=use_organs, progress=progress)
    D.barrier(ctx)
    return train_ids, val_ids


def _resume(run: _Run, checkpoint: dict[str, Any]) -> None:
    """Weights, optimiser, scheduler, this rank's RNG states and pending losses from ``checkpoint``."""
    state = checkpoint["train_state"]
    run.net.load_state_dict(checkpoint["model"])
    run.optimizer.load_state_dict(state["optimizer"])
    run.scheduler.load_state_dict(state["scheduler"])
    rank_state = state["ranks"][run.ctx.rank % len(state["ranks"])]
    rng.restore(rank_state["rng"])
    run.losses = list(rank_state["losses"])
    run.start = int(state["step"])
    run.val_dice = checkpoint["meta"].get("val_dice")


def _loader(run: _Run) -> torch.utils.data.DataLoader:
    """This process's batches of steps ``[start, end)`` (each a function of (seed, step)); workers and
    pinning from ``data.num_workers``/``data.pin_memory`` (None: :func:`auto_num_workers`, pinned with CUDA)."""
    config = run.config
    data = config.data
    hard = HardNegativeShares(data.organ_fraction, data.hot_fraction,
                              tuple(ORGAN_IDS[name] for name in organ_names(data.hard_negative_organs, "")),
                              data.hot_quantile)
    batches = PatchBatches(run.train_volumes, data.patch_size, batch_size=config.train.batch_size,
                           lesion_fraction=data.lesion_fraction, augment=config.augment, seed=config.seed,
                           use_organs=run.use_organs, rank=run.ctx.rank, world_size=run.ctx.world_size,
                           steps=config.train.steps, hard_negatives=hard, organ_prompts=bool(run.net.uses_prompts),
                           lesion_warmup=data.lesion_warmup)
    cuda = run.ctx.device.type == "cuda"
    workers = config.data.num_workers
    if workers is None:
        workers = auto_num_workers(batches.per_rank, cuda)
    pin = cuda if config.data.pin_memory is None else config.data.pin_memory and cuda
    return torch.utils.data.DataLoader(batches, batch_size=None, sampler=range(run.start, run.end),
                                       num_workers=workers, pin_memory=pin,
                                       generator=torch.Generator().manual_seed(config.seed))


def _step(run: _Run, batch: dict[str, torch.Tensor]) -> float:
    """One optimiser step on ``batch``; returns its loss. A network with an auxiliary organ head
    (``net.organ_aux``) returns ``{"lesion", "organs"}``: its loss adds ``loss.organ_aux_weight`` times the
    cross-entropy of the organ logits (B, num_organs + 1, Z, Y, X) against the organ map (B, Z, Y, X)."""
    device = run.ctx.device
    image = batch["image"].to(device, non_blocking=True)
    label = batch["label"].to(device, non_blocking=True)
    organs = batch["organs"].to(device, non_blocking=True) if run.use_organs else None
    with autocast(device, run.config.train.amp):
        out = run.model(image, organs if run.net.uses_prompts else None)
    if isinstance(out, dict):
        loss = run.loss_fn(out["lesion"], label) + \
            run.config.loss.organ_aux_weight * F.cross_entropy(out["organs"].float(), organs)
    else:
        loss = run.loss_fn(out, label)
    optimizer_step(loss, run.optimizer, run.scheduler, run.net.parameters(), run.config.optim.grad_clip)
    return float(loss.detach())


def _log_and_validate(run: _Run, done: int) -> None:
    """Every ``log_every`` steps the mean loss over all processes, every ``val_every`` the validation
    Dice (and both at the end), then a log row when either was due; the progress bar every step."""
    config = run.config.train
    logged = done % config.log_every == 0 or done == run.end
    validated = bool(run.val_volumes) and (done % config.val_every == 0 or done == run.end)
    if logged:
        total, count = D.all_sum(run.ctx, [sum(run.losses), len(run.losses)])
        run.last_loss, run.losses = total / count, []
    if validated:
        run.val_dice = validate(run.net, run.val_volumes, tuple(run.config.data.patch_size), run.config.infer,
                                run.ctx, amp=run.amp, use_organs=bool(run.net.uses_prompts), progress=run.progress)
    if logged or validated:
        run.log.write(done, loss=run.last_loss if logged else None, lr=run.scheduler.get_last_lr()[0],
                      val_dice=run.val_dice if validated else None)
    run.log.advance(loss="-" if run.last_loss is None else f"{run.last_loss:.4f}",
                    val_dice="-" if run.val_dice is None else f"{run.val_dice:.3f}")


def _save_checkpoint(run: _Run, done: int) -> None:
    """``checkpoint.pt`` with every rank's RNG states and pending losses (gathered to the main process)."""
    ranks = D.gather_objects(run.ctx, {"rng": rng.capture(), "losses": list(run.losses)})
    if run.ctx.is_main:
        train_state = {"optimizer": run.optimizer.state_dict(), "scheduler": run.scheduler.state_dict(),
                       "ranks": ranks, "step": done}
        save_checkpoint(run.out / CHECKPOINT_NAME, make_checkpoint(
            "stage3", {**run.meta, "step": done, "val_dice": run.val_dice}, model=run.net.state_dict(),
            train_state=train_state))
    D.barrier(run.ctx)


def _finish(run: _Run) -> TrainResult:
    """Close the log; ``model.pt`` when the run reached its last step."""
    run.log.close()
    complete = run.end == run.config.train.steps
    if run.ctx.is_main and complete:
        save_checkpoint(run.out / MODEL_NAME, make_checkpoint(
            "stage3", {**run.meta, "step": run.end, "val_dice": run.val_dice}, model=run.net.state_dict()))
    D.barrier(run.ctx)
    return TrainResult(step=run.end, loss=math.nan if run.last_loss is None else run.last_loss,
                       val_dice=run.val_dice, checkpoint=run.out / CHECKPOINT_NAME,
                       model=run.out / MODEL_NAME if complete else None, rank=run.ctx.rank)
