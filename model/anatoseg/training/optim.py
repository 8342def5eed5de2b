"""Loss, optimiser, learning-rate schedule and the optimiser step every training loop takes.

- :func:`make_loss`, :func:`make_optimizer`: stage 3's (and stage 2's) from the config;
- :class:`LRSchedule`: the learning-rate multiplier of a step; :class:`ScheduledLR` applies it;
- :func:`optimizer_step`: zero the gradients, backward, clip, step, schedule (stages 1, 2, 3); a non-finite
  loss or gradient norm stops the run with :class:`~anatoseg.errors.DivergedError` before the weights change.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import torch
from monai.losses import DeepSupervisionLoss, DiceCELoss

from anatoseg.config import LossConfig
from anatoseg.configbase import OptimConfig
from anatoseg.errors import DivergedError


def make_loss(config: LossConfig) -> torch.nn.Module:
    """Dice + cross-entropy on two-class logits; the Dice term is the lesion class's only (nnU-Net's
    ``do_bg=False``: a background Dice near 1 would halve the pull towards the tiny lesion class).

    ``loss(logits, label)``: logits ``(B, 2, Z, Y, X)`` or a deep-supervision list
    of them at strides 1, 2, 4, ... (weights 1, 1/2, 1/4, ..., floor 1/16; the label
    is downsampled by nearest neighbour); label ``(B, 1, Z, Y, X)`` float {0, 1}.
    Logits are cast to float32 first, so the loss is exact under bf16 autocast.
    """
    dice_ce = DiceCELoss(to_onehot_y=True, softmax=True, batch=config.batch_dice, include_background=False,
                         lambda_dice=config.dice_weight, lambda_ce=config.ce_weight)
    return DeepSupervisionLoss(dice_ce, weight_mode="exp")


class LRSchedule:
    """Multiplier of the base learning rate at a step: linear warm-up, then poly/cosine/constant.

    - ``poly``: ``(1 - t) ** 0.9`` (nnU-Net); ``cosine``: ``0.5 (1 + cos(pi t))``,
      with ``t`` the fraction of post-warm-up steps done.

    """

    def __init__(self, kind: str, total_steps: int, warmup_steps: int = 0):
        self.kind = kind
        self.total_steps = total_steps
        self.warmup_steps = warmup_steps

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        t = min(1.0, (step - self.warmup_steps) / max(1, self.total_steps - self.warmup_steps))
        if self.kind == "poly":
            return (1 - t) ** 0.9
        if self.kind == "cosine":
            return 0.5 * (1 + math.cos(math.pi * t))
        return 1.0


class ScheduledLR(torch.optim.lr_scheduler.LRScheduler):
    """Every base learning rate times ``schedule(step)``.

    Its state is the step count only (``schedule`` is left out of :meth:`state_dict`): the
    schedule comes from the config at construction, so ``load_state_dict`` alone resumes a run.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, schedule: LRSchedule, last_epoch: int = -1):
        self.schedule = schedule
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:
        factor = self.schedule(self.last_epoch)
        return [base_lr * factor for base_lr in self.base_lrs]

    def state_dict(self) -> dict[str, Any]:
        return {key: value for key, value in super().state_dict().items() if key != "schedule"}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict({key: value for key, value in state_dict.items()
                                 if key not in ("schedule", "lr_lambdas")})  # lr_lambdas: LambdaLR checkpoints


def make_optimizer(parameters, config: OptimConfig, total_steps: int):
    """``(optimizer, scheduler)``: AdamW or SGD (Nesterov) with :class:`ScheduledLR` stepped once per step."""
    if config.name == "sgd":
        optimizer = torch.optim.SGD(parameters, lr=config.learning_rate, momentum=config.momentum,
                                    nesterov=True, weight_decay=config.weight_decay)
    else:
        optimizer = torch.optim.AdamW(parameters, lr=config.learning_rate, weight_decay=config.weight_decay)
    scheduler = ScheduledLR(optimizer, LRSchedule(config.schedule, total_steps, config.warmup_steps))
    return optimizer, scheduler


def optimizer_step(loss: torch.Tensor, optimizer: torch.optim.Optimizer,
                   scheduler: torch.optim.lr_scheduler.LRScheduler | None, params: Iterable[torch.Tensor],
                   grad_clip: float | None = None, what: str = "training") -> None:
    """One training step after the forward: zero the gradients, backward, clip the norm of
    ``params``' gradients to ``grad_clip`` (None: no clipping), optimiser step, then scheduler step.

    Raises DivergedError naming ``what`` and the step (the scheduler's count + 1) when the loss or the
    gradient norm is NaN or infinite; the optimiser has not stepped then, so the weights stay finite.
    Under DDP the gradients are averaged over the processes first, so every process stops alike.
    """
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    params = [p for p in params if p.grad is not None]
    if grad_clip is not None:
        norm = torch.nn.utils.clip_grad_norm_(params, grad_clip)
    else:
        norm = torch.nn.utils.get_total_norm([p.grad for p in params])
    loss = loss.detach()
    if not bool(torch.isfinite(loss) & torch.isfinite(norm.to(loss.device))):
        step = "" if scheduler is None else f" at step {scheduler.last_epoch + 1}"
        raise DivergedError(f"{what} diverged{step}: loss {float(loss):.4g}, gradient norm {float(norm):.4g}; "
                            "stopped before the weights changed (nothing from this step was saved). "
                            "Lower the learning rate or set a gradient clip (optim.grad_clip)")
    optimizer.step()
    if scheduler is not None:
        scheduler.step()
