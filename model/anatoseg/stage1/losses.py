"""Losses and the mean-teacher update of stage 1.

- :func:`masked_ce_dice`: cross-entropy (optionally class-balanced) + soft Dice over the
  trusted voxels only (an untrusted voxel contributes nothing, whatever the prediction there;
  which voxels are trusted is decided in :mod:`anatoseg.stage1.filtering`).
- :func:`consistency_loss`: squared distance between the student's and the
  mean teacher's softmax outputs (Tarvainen & Valpola, 2017).
- :func:`ema_update`: ``ema <- decay * ema + (1 - decay) * student``.
- :func:`sigmoid_rampup`: the consistency weight schedule ``exp(-5 (1 - t)^2)``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def masked_ce_dice(logits: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, class_balance: float = 0.0,
                   smooth: float = 1e-5) -> torch.Tensor:
    """Cross-entropy plus soft Dice over the voxels where ``mask`` is True.

    ``logits``: ``(B, K, Z, Y, X)``; ``target``: ``(B, Z, Y, X)`` int64 class ids;
    ``mask``: ``(B, Z, Y, X)`` bool. The Dice term is the mean over the classes
    present in the masked target of ``1 - 2|P∩T| / (|P| + |T|)``, with P the
    masked softmax (batch Dice). The cross-entropy is ``(1 - class_balance)`` times its
    mean over the trusted voxels plus ``class_balance`` times the mean over the present
    classes of each class's mean (every present class weighs the same, whatever its size:
    with the plain mean, background voxels dominate and small organs leave the
    all-background start last). Returns a scalar; 0 (with gradient) when no voxel is trusted.
    """
    weight = mask.to(logits.dtype)
    count = weight.sum()
    if count == 0:
        return logits.sum() * 0.0
    voxel_ce = F.cross_entropy(logits, target, reduction="none") * weight
    onehot = F.one_hot(target, logits.shape[1]).movedim(-1, 1).to(logits.dtype) * weight[:, None]
    dims = (0, 2, 3, 4)
    sizes_true = onehot.sum(dims)
    present = sizes_true > 0
    ce = voxel_ce.sum() / count
    if class_balance > 0:
        per_class = (voxel_ce[:, None] * onehot).sum(dims)[present] / sizes_true[present]
        ce = (1 - class_balance) * ce + class_balance * per_class.mean()
    probs = logits.softmax(1) * weight[:, None]
    intersection = (probs * onehot).sum(dims)
    sizes = probs.sum(dims) + sizes_true
    dice = 1 - (2 * intersection + smooth) / (sizes + smooth)
    return ce + dice[present].mean()


def consistency_loss(student_logits: torch.Tensor, ema_logits: torch.Tensor) -> torch.Tensor:
    """Mean over voxels of ``sum_k (softmax(student)_k - softmax(ema)_k)^2``; both ``(B, K, Z, Y, X)``.

    The mean teacher's output is a target: no gradient flows into it.
    """
    return (student_logits.softmax(1) - ema_logits.detach().softmax(1)).pow(2).sum(1).mean()


@torch.no_grad()
def ema_update(ema: nn.Module, student: nn.Module, decay: float) -> None:
    """``ema_p <- decay * ema_p + (1 - decay) * student_p`` for every parameter; buffers are copied."""
    for ema_p, p in zip(ema.parameters(), student.parameters(), strict=True):
        ema_p.lerp_(p, 1.0 - decay)
    for ema_b, b in zip(ema.buffers(), student.buffers(), strict=True):
        ema_b.copy_(b)


def sigmoid_rampup(step: int, length: int) -> float:
    """``exp(-5 (1 - t)^2)`` with ``t = min(step / length, 1)``; 1 when ``length`` is 0."""
    if length <= 0:
        return 1.0
    t = min(max(step / length, 0.0), 1.0)
    return math.exp(-5.0 * (1.0 - t) ** 2)
