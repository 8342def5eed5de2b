"""Loss, optimiser and learning-rate schedule of stage 3, built from the config."""

from __future__ import annotations

import math

import torch
from monai.losses import DeepSupervisionLoss, DiceCELoss

from anatoseg.config import LossConfig, OptimConfig


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

    A plain object (not a lambda) so ``LambdaLR.state_dict()`` stores its fields.
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


def make_optimizer(parameters, config: OptimConfig, total_steps: int):
    """``(optimizer, scheduler)``: AdamW or SGD (Nesterov) with :class:`LRSchedule` stepped once per step."""
    if config.name == "sgd":
        optimizer = torch.optim.SGD(parameters, lr=config.learning_rate, momentum=config.momentum,
                                    nesterov=True, weight_decay=config.weight_decay)
    else:
        optimizer = torch.optim.AdamW(parameters, lr=config.learning_rate, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, LRSchedule(config.schedule, total_steps, config.warmup_steps))
    return optimizer, scheduler
