"""Loss, optimiser, learning-rate schedule and the optimiser step every training loop takes.

- :func:`make_loss`: Dice + CE with deep supervision on soft (average-pooled) targets;
- :func:`make_optimizer`: stage 3's (and stages 1 and 2's) from the config; :data:`ARCH_OPTIM`, :func:`arch_optim`,
  :func:`param_groups`: the per-architecture learning rate and warm-up, and the lower rate of pretrained encoders;
- :class:`LRSchedule`: the learning-rate multiplier of a step; :class:`ScheduledLR` applies it;
- :func:`optimizer_step`: zero the gradients, backward, clip, step, schedule (stages 1, 2, 3); a non-finite
  loss or gradient norm stops the run with :class:`~anatoseg.errors.DivergedError` before the weights change.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from monai.losses import DiceLoss
from torch import nn

from anatoseg.config import LossConfig
from anatoseg.configbase import OptimConfig
from anatoseg.errors import DivergedError


def supervision_target(label: torch.Tensor, shape: Sequence[int]) -> tuple[torch.Tensor, int]:
    """``(target (B, 2, *shape), stride)``: the one-hot of ``label`` ``(B, 1, Z, Y, X)`` {0, 1} average-pooled
    to ``shape`` (Z, Y, X), whose sides must divide the label's by one integer stride.

    Soft targets keep small lesions: a one-voxel lesion is 1/8 of its cell at stride 2, where nearest-neighbour
    downsampling keeps it whole or erases it depending on where it lies.
    """
    strides = {size // out for size, out in zip(label.shape[2:], shape, strict=True)}
    stride = strides.pop()
    if strides or any(out * stride != size for size, out in zip(label.shape[2:], shape, strict=True)):
        raise ValueError(f"deep-supervision head of shape {tuple(shape)} is not the label's "
                         f"{tuple(label.shape[2:])} at one integer stride")
    target = torch.cat([1 - label, label], dim=1).float()
    return (target if stride == 1 else F.avg_pool3d(target, stride)), stride


class DeepSupervisedDiceCE(nn.Module):
    """Dice + cross-entropy on two-class logits; the Dice term is the lesion class's only (nnU-Net's
    ``do_bg=False``: a background Dice near 1 would halve the pull towards the tiny lesion class).

    ``loss(logits, label)``: logits ``(B, 2, Z, Y, X)`` or a deep-supervision list of them at strides
    1, 2, 4, ... (weights 1, 1/2, 1/4, ..., floor 1/16); label ``(B, 1, Z, Y, X)`` float {0, 1}. Each head is
    compared with :func:`supervision_target` (soft targets); heads coarser than ``max_stride`` get no loss
    (None: every head), only a zero gradient so that DDP sees their parameters used. Logits are cast to
    float32 first, so the loss is exact under bf16 autocast.

    The cross-entropy averages every voxel of the batch, or with ``ce_topk`` only the largest share ``ce_topk``
    of the voxel losses (nnU-Net's TopK loss). The intent: once a network predicts "all background", the Dice
    gradient reaches a lesion logit through the softmax as p(1 - p) and vanishes with p, and a plain mean
    dilutes the lesion voxels' cross-entropy among ~10^5 easy background voxels; the top share keeps the
    lesions and the hardest background (hot spots). Measured once: a top-10 % share did not take the
    protocol's stuck unit off that plateau (``experiments/protocol/config.py``).
    """

    def __init__(self, config: LossConfig):
        super().__init__()
        self.dice = DiceLoss(softmax=True, batch=config.batch_dice, include_background=False)
        self.dice_weight = config.dice_weight
        self.ce_weight = config.ce_weight
        self.topk = config.ce_topk
        self.max_stride = config.max_supervised_stride

    def cross_entropy(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Mean cross-entropy of logits ``(B, 2, *S)`` against soft targets ``(B, 2, *S)`` over every voxel,
        or over the ``ce_topk`` share with the largest loss (at least one voxel)."""
        voxel = -(target * F.log_softmax(logits, dim=1)).sum(dim=1).flatten()
        if self.topk is None:
            return voxel.mean()
        return voxel.topk(max(1, math.ceil(self.topk * voxel.numel())), sorted=False).values.mean()

    def forward(self, logits: torch.Tensor | Sequence[torch.Tensor], label: torch.Tensor) -> torch.Tensor:
        heads = list(logits) if isinstance(logits, (list, tuple)) else [logits]
        total = heads[0].new_zeros((), dtype=torch.float32)
        for level, head in enumerate(heads):
            target, stride = supervision_target(label, head.shape[2:])
            if level and self.max_stride is not None and stride > self.max_stride:
                # no loss, but a zero gradient: DDP requires every parameter to take part in each step
                total = total + 0.0 * head.float().sum()
                continue
            head = head.float()
            term = self.dice_weight * self.dice(head, target) + self.ce_weight * self.cross_entropy(head, target)
            total = total + max(0.5**level, 1 / 16) * term
        return total


def make_loss(config: LossConfig) -> nn.Module:
    """Stage 3's loss from its config: :class:`DeepSupervisedDiceCE`."""
    return DeepSupervisedDiceCE(config)


@dataclass(frozen=True)
class ArchOptim:
    """The optimiser defaults of one architecture: AdamW and SGD learning rates, and the warm-up as a share of
    the run's steps."""

    adamw_lr: float
    sgd_lr: float
    warmup: float


#: Per-architecture defaults for ``optim.lr: null`` and ``optim.warmup_steps: null`` (every ``anatoseg*``
#: architecture is ``anatoseg``). From the validation sweep ``python -m anatoseg.experiments.lr_sweep``
#: (``benchmarks/results/lr-sweep-64203fc.md``: AdamW 1e-4, 5e-4, 2e-3, 15 steps, tiny preset, CPU): at
#: 15 steps every architecture ranks 2e-3 first and none diverges, which ranks how fast a rate starts, not
#: where it ends; the sweep is too short to separate more. The convolutional networks take 2e-3 (the demo
#: also measured 2e-3 leaving the all-background plateau where 1e-3 had not after 600 steps); the
#: transformers (SwinUNETR, UNETR) stay at 5e-4 with a 5 % warm-up, below the sweep's best, because their
#: papers train at 1e-4 with a warm-up and long runs at high rates are where transformers diverge. SGD as
#: nnU-Net (1e-2), a tenth of it for the transformers.
ARCH_OPTIM: dict[str, ArchOptim] = {
    "anatoseg": ArchOptim(adamw_lr=2e-3, sgd_lr=1e-2, warmup=0.0),
    "unet": ArchOptim(adamw_lr=2e-3, sgd_lr=1e-2, warmup=0.0),
    "segresnet": ArchOptim(adamw_lr=2e-3, sgd_lr=1e-2, warmup=0.0),
    "swinunetr": ArchOptim(adamw_lr=5e-4, sgd_lr=1e-3, warmup=0.05),
    "unetr": ArchOptim(adamw_lr=5e-4, sgd_lr=1e-3, warmup=0.05),
}
#: Warm-up share of the run's steps at least, when the encoders start from a stage-2 checkpoint (MAE-style
#: fine-tuning warms up before the pretrained weights move at full rate).
PRETRAINED_WARMUP = 0.05


def arch_optim(arch: str) -> ArchOptim:
    """The :data:`ARCH_OPTIM` entry of ``arch``; ValueError for one it does not know."""
    family = "anatoseg" if arch.startswith("anatoseg") else arch
    if family not in ARCH_OPTIM:
        raise ValueError(f"no optimiser defaults for architecture {arch!r} (known: {', '.join(ARCH_OPTIM)})")
    return ARCH_OPTIM[family]


def resolve_optim(config: OptimConfig, arch: str, total_steps: int, pretrained: bool) -> OptimConfig:
    """``config`` as a plain :class:`OptimConfig` with its learning rate and warm-up steps set: ``lr`` None is
    the architecture's rate for the optimiser, ``warmup_steps`` None its warm-up share of ``total_steps``
    (at least :data:`PRETRAINED_WARMUP` of them with ``pretrained`` encoders)."""
    defaults = arch_optim(arch)
    lr = config.lr if config.lr is not None else defaults.sgd_lr if config.name == "sgd" else defaults.adamw_lr
    warmup = config.warmup_steps
    if warmup is None:
        share = max(defaults.warmup, PRETRAINED_WARMUP if pretrained else 0.0)
        warmup = round(share * total_steps)
    return OptimConfig(name=config.name, lr=lr, weight_decay=config.weight_decay, momentum=config.momentum,
                       schedule=config.schedule, warmup_steps=warmup, grad_clip=config.grad_clip)


def param_groups(net: nn.Module, lr: float, pretrained: Sequence[str] = (),
                 pretrained_lr_scale: float = 1.0) -> list[dict[str, Any]]:
    """Optimiser parameter groups of ``net``: its new layers at ``lr`` first, then (when ``pretrained`` names
    modules, e.g. the stage-2 encoders) those modules' parameters at ``lr * pretrained_lr_scale``. Each
    group's rate is its base rate, so the schedule (warm-up, decay) scales every group alike."""
    prefixes = tuple(f"{name}." for name in pretrained)
    named = list(net.named_parameters())
    old = [p for name, p in named if prefixes and name.startswith(prefixes)]
    new = [p for name, p in named if not (prefixes and name.startswith(prefixes))]
    groups = [{"params": new, "lr": lr, "name": "new"}]
    if old:
        groups.append({"params": old, "lr": lr * pretrained_lr_scale, "name": "pretrained"})
    return groups


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
    """``(optimizer, scheduler)``: AdamW or SGD (Nesterov) with :class:`ScheduledLR` stepped once per step.

    ``parameters``: parameters, or groups with their own ``lr`` (:func:`param_groups`); ``config.learning_rate``
    is the rate of groups without one."""
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
