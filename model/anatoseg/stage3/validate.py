"""Validation during training: sliding-window Dice on held-out preprocessed cases."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from torch import nn
from tqdm.auto import tqdm

from anatoseg.config import InferConfig
from anatoseg.inference.sliding_window import sliding_window_probability
from anatoseg.training.distributed import DistContext, all_sum
from anatoseg.training.sampling import TrainVolume


def dice(pred: np.ndarray, truth: np.ndarray) -> float:
    """Foreground Dice of two boolean arrays of one shape (NaN when both are empty)."""
    overlap = np.logical_and(pred, truth).sum()
    total = pred.sum() + truth.sum()
    return float(2 * overlap / total) if total else math.nan


def validate(net: nn.Module, volumes: Sequence[TrainVolume], patch_size: Sequence[int], infer: InferConfig,
             ctx: DistContext, *, amp: bool, use_organs: bool, progress: bool = False) -> float:
    """Mean Dice over the validation cases that contain lesions (NaN if none do).

    Each process takes every ``world_size``-th case; the sums are all-reduced.
    ``net`` is the bare module (not the DDP wrapper); it is put back in training mode.
    ``progress``: a bar over this process's cases and one over each case's windows
    (validation of a ``base`` run takes tens of seconds).
    """
    net.eval()
    total, count = 0.0, 0.0
    mine = [v for v in volumes[ctx.rank::ctx.world_size] if v.num_lesions]
    for volume in tqdm(mine, desc="validation", unit="case", disable=not progress, leave=False):
        prob = sliding_window_probability(net, volume.image, patch_size, organs=volume.organs if use_organs else None,
                                          overlap=infer.overlap, sigma_scale=infer.sigma_scale,
                                          batch_size=infer.batch_size, device=ctx.device, amp=amp,
                                          progress=progress, description=volume.name)
        total += dice(prob.numpy() >= 0.5, np.asarray(volume.label) > 0)
        count += 1
    net.train()
    total, count = all_sum(ctx, [total, count])
    return total / count if count else math.nan
