"""The two training loops of stage 1: the CT teacher on the source set, the mean-teacher student on the target.

Both draw ``batch_size`` patches per step (:func:`~anatoseg.stage1.augment.sample_patch`),
apply one random rotation/zoom per patch, and use AdamW with a cosine schedule.

Student step (``image`` = CT, or CT + PET when ``use_pet``)::

    weak   = affine(image)                       # geometry shared by both views
    strong = strong_intensity(weak)               # student view
    loss   = ce_dice(student(strong), pseudo, trusted)   # trusted: filtering.trusted_voxels
           + w(t) * |softmax(student(strong)) - softmax(ema(weak))|^2
    ema   <- decay * ema + (1 - decay) * student

The student and its mean teacher (EMA) start from the teacher's weights; a PET
input channel starts at zero weight (:func:`~anatoseg.stage1.net.expand_input_channels`).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from anatoseg.data.labels import NUM_ORGANS
from anatoseg.stage1.augment import (
    ClassVoxels,
    crop_padded,
    mild_intensity,
    random_affine,
    sample_patch,
    strong_intensity,
)
from anatoseg.stage1.data import Stage1Case
from anatoseg.stage1.losses import consistency_loss, ema_update, masked_ce_dice, sigmoid_rampup
from anatoseg.stage1.net import OrganUNet, expand_input_channels
from anatoseg.stage1.settings import Stage1Config
from anatoseg.training.optim import LRSchedule

NUM_CLASSES = NUM_ORGANS + 1  # background + organs


@dataclass
class PseudoLabels:
    """The teacher's output on one target case, on the working grid.

    ``labels``: ``(X, Y, Z)`` uint8 organ ids; ``confidence``: ``(X, Y, Z)`` float32
    in [0, 1]; ``trusted``: ``(X, Y, Z)`` bool, the voxels the student learns from.
    """

    labels: np.ndarray
    confidence: np.ndarray
    trusted: np.ndarray


def _batch(images: Sequence[np.ndarray], labels: Sequence[np.ndarray], classes: Sequence[ClassVoxels],
           masks: Sequence[np.ndarray] | None, config: Stage1Config, rng: np.random.Generator,
           generator: torch.Generator, device):
    """Random patches: ``image`` (B, C, *P), ``target`` (B, *P) int64, ``mask`` (B, *P) bool.

    ``images``: per case ``(C, X, Y, Z)``; ``labels``: per case ``(X, Y, Z)``, with
    ``classes`` their :class:`ClassVoxels` (for centring patches on organs);
    ``masks``: per case ``(X, Y, Z)`` bool voxels to learn from, or None (all,
    except the padding beyond the volume). Rotation/zoom are applied alike to all three.
    """
    patch = config.data.patch_size
    picked_images, picked_labels, picked_masks = [], [], []
    for _ in range(config.data.batch_size):
        i = int(rng.integers(len(images)))
        box = sample_patch(labels[i].shape, patch, classes[i], rng)
        picked_images.append(crop_padded(images[i], box))
        picked_labels.append(crop_padded(labels[i], box, fill=0))
        mask = np.ones(labels[i].shape, dtype=bool) if masks is None else masks[i]
        picked_masks.append(crop_padded(mask, box, fill=False))
    tensors = [torch.from_numpy(np.stack(picked_images)).float(),
               torch.from_numpy(np.stack(picked_labels))[:, None].float(),
               torch.from_numpy(np.stack(picked_masks))[:, None].float()]
    image, target, mask = (t.to(device) for t in random_affine(tensors, ["bilinear", "nearest", "nearest"],
                                                                generator))
    return image, target[:, 0].long(), mask[:, 0] > 0.5


def _optimizer(net: torch.nn.Module, lr: float, weight_decay: float, steps: int):
    optimizer = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=weight_decay)
    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, LRSchedule("cosine", steps))


def train_teacher(cases: Sequence[Stage1Case], config: Stage1Config, device: str | torch.device = "cpu"
                  ) -> OrganUNet:
    """Train the CT-only teacher (1 input channel) on labelled source cases; returns it in eval mode.

    Every case must have ``work.organs``. Loss: CE + Dice on all voxels of the volume, mild intensity
    augmentation.
    """
    torch.manual_seed(config.seed)
    rng = np.random.default_rng([config.seed, 1])
    generator = torch.Generator().manual_seed(config.seed + 1)
    net = OrganUNet(1, NUM_CLASSES, config.widths).to(device)
    optimizer, scheduler = _optimizer(net, config.teacher.lr, config.teacher.weight_decay, config.teacher.steps)
    images = [c.work.image[:1] for c in cases]
    labels = [c.work.organs for c in cases]
    classes = [ClassVoxels(organs) for organs in labels]
    net.train()
    progress = tqdm(range(config.teacher.steps), desc="teacher", unit="step")
    for _ in progress:
        image, target, mask = _batch(images, labels, classes, None, config, rng, generator, device)
        loss = masked_ce_dice(net(mild_intensity(image, generator)), target, mask)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        progress.set_postfix(loss=f"{loss.item():.3f}")
    return net.eval()


def student_channels(image: np.ndarray, use_pet: bool) -> np.ndarray:
    """The student's input channels of a working image ``(2, X, Y, Z)``: CT + PET, or CT only."""
    return image if use_pet else image[:1]


def train_student(cases: Sequence[Stage1Case], pseudo: Sequence[PseudoLabels], teacher: OrganUNet,
                  config: Stage1Config, device: str | torch.device = "cpu") -> OrganUNet:
    """Train the student on target cases against the trusted voxels of their pseudo-labels (module docstring).

    Returns the student's mean teacher (the EMA weights), in eval mode: the student stage 1 outputs.
    """
    settings = config.student
    torch.manual_seed(config.seed + 2)
    rng = np.random.default_rng([config.seed, 2])
    generator = torch.Generator().manual_seed(config.seed + 3)
    student = OrganUNet(2 if settings.use_pet else 1, NUM_CLASSES, config.widths).to(device)
    expand_input_channels(teacher.state_dict(), student)
    ema = copy.deepcopy(student)
    for p in ema.parameters():
        p.requires_grad_(False)
    optimizer, scheduler = _optimizer(student, settings.lr, settings.weight_decay, settings.steps)
    images = [student_channels(c.work.image, settings.use_pet) for c in cases]
    labels = [p.labels for p in pseudo]
    trusted = [p.trusted for p in pseudo]
    classes = [ClassVoxels(p.labels) for p in pseudo]
    rampup = int(settings.consistency_rampup * settings.steps)
    student.train()
    ema.train()
    progress = tqdm(range(settings.steps), desc="student", unit="step")
    for step in progress:
        weak, target, mask = _batch(images, labels, classes, trusted, config, rng, generator, device)
        strong = strong_intensity(weak, generator)
        logits = student(strong)
        with torch.no_grad():
            ema_logits = ema(weak)
        supervised = masked_ce_dice(logits, target, mask)
        weight = settings.consistency_weight * sigmoid_rampup(step, rampup)
        consistency = consistency_loss(logits, ema_logits)
        loss = supervised + weight * consistency
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        ema_update(ema, student, settings.ema_decay)
        progress.set_postfix(sup=f"{supervised.item():.3f}", cons=f"{consistency.item():.4f}")
    return ema.eval()
