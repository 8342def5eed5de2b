"""The two training loops of stage 1: the CT teacher on the source set, the mean-teacher student on the target.

Both draw ``batch_size`` patches per step (:func:`~anatoseg.stage1.augment.sample_patch`),
apply one random rotation/zoom per patch, and use the optimiser and schedule of their
config section (AdamW, cosine) through the shared training core (:mod:`anatoseg.training`).

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

from anatoseg.data.labels import NUM_ORGANS
from anatoseg.stage1.augment import (
    ClassVoxels,
    crop_padded,
    mild_intensity,
    random_affine,
    sample_patch,
    strong_intensity,
)
from anatoseg.stage1.config import Stage1Config
from anatoseg.stage1.data import Stage1Case
from anatoseg.stage1.losses import consistency_loss, ema_update, masked_ce_dice, sigmoid_rampup
from anatoseg.stage1.net import OrganUNet, expand_input_channels
from anatoseg.training.log import RunLog
from anatoseg.training.optim import make_optimizer, optimizer_step
from anatoseg.training.rng import seed_everything

NUM_CLASSES = NUM_ORGANS + 1  # background + organs


@dataclass
class PseudoLabels:
    """The teacher's output on one target case, on the working grid.

    ``labels``: ``(Z, Y, X)`` uint8 organ ids; ``confidence``: ``(Z, Y, X)`` float32
    in [0, 1]; ``trusted``: ``(Z, Y, X)`` bool, the voxels the student learns from.
    """

    labels: np.ndarray
    confidence: np.ndarray
    trusted: np.ndarray


def _batch(images: Sequence[np.ndarray], labels: Sequence[np.ndarray], classes: Sequence[ClassVoxels],
           masks: Sequence[np.ndarray] | None, config: Stage1Config, rng: np.random.Generator,
           generator: torch.Generator, device):
    """Random patches: ``image`` (B, C, *P), ``target`` (B, *P) int64, ``mask`` (B, *P) bool.

    ``images``: per case ``(C, Z, Y, X)``; ``labels``: per case ``(Z, Y, X)``, with
    ``classes`` their :class:`ClassVoxels` (for centring patches on organs);
    ``masks``: per case ``(Z, Y, X)`` bool voxels to learn from, or None (all,
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


def train_teacher(cases: Sequence[Stage1Case], config: Stage1Config, device: str | torch.device = "cpu"
                  ) -> OrganUNet:
    """Train the CT-only teacher (1 input channel) on labelled source cases; returns it in eval mode.

    Every case must have ``work.organs``. Loss: CE + Dice on all voxels of the volume, mild intensity
    augmentation.
    """
    settings = config.teacher
    seed_everything(config.seed)
    rng = np.random.default_rng([config.seed, 1])
    generator = torch.Generator().manual_seed(config.seed + 1)
    net = OrganUNet(1, NUM_CLASSES, config.widths).to(device)
    optimizer, scheduler = make_optimizer(net.parameters(), settings, settings.steps)
    images = [c.work.image[:1] for c in cases]
    labels = [c.work.organs for c in cases]
    classes = [ClassVoxels(organs) for organs in labels]
    net.train()
    log = RunLog(None, (), desc="teacher", total=settings.steps)
    for _ in range(settings.steps):
        image, target, mask = _batch(images, labels, classes, None, config, rng, generator, device)
        loss = masked_ce_dice(net(mild_intensity(image, generator)), target, mask)
        optimizer_step(loss, optimizer, scheduler, net.parameters(), settings.grad_clip, what="stage-1 teacher")
        log.advance(loss=f"{loss.item():.3f}")
    log.close()
    return net.eval()


def student_channels(image: np.ndarray, use_pet: bool) -> np.ndarray:
    """The student's input channels of a working image ``(2, Z, Y, X)``: CT + PET, or CT only."""
    return image if use_pet else image[:1]


def train_student(cases: Sequence[Stage1Case], pseudo: Sequence[PseudoLabels], teacher: OrganUNet,
                  config: Stage1Config, device: str | torch.device = "cpu") -> OrganUNet:
    """Train the student on target cases against the trusted voxels of their pseudo-labels (module docstring).

    Returns the student's mean teacher (the EMA weights), in eval mode: the student stage 1 outputs.
    """
    settings = config.student
    seed_everything(config.seed + 2)
    rng = np.random.default_rng([config.seed, 2])
    generator = torch.Generator().manual_seed(config.seed + 3)
    student = OrganUNet(2 if settings.use_pet else 1, NUM_CLASSES, config.widths).to(device)
    expand_input_channels(teacher.state_dict(), student)
    ema = copy.deepcopy(student)
    for p in ema.parameters():
        p.requires_grad_(False)
    optimizer, scheduler = make_optimizer(student.parameters(), settings, settings.steps)
    images = [student_channels(c.work.image, settings.use_pet) for c in cases]
    labels = [p.labels for p in pseudo]
    trusted = [p.trusted for p in pseudo]
    classes = [ClassVoxels(p.labels) for p in pseudo]
    rampup = int(settings.consistency_rampup * settings.steps)
    student.train()
    ema.train()
    log = RunLog(None, (), desc="student", total=settings.steps)
    for step in range(settings.steps):
        weak, target, mask = _batch(images, labels, classes, trusted, config, rng, generator, device)
        strong = strong_intensity(weak, generator)
        logits = student(strong)
        with torch.no_grad():
            ema_logits = ema(weak)
        supervised = masked_ce_dice(logits, target, mask)
        weight = settings.consistency_weight * sigmoid_rampup(step, rampup)
        consistency = consistency_loss(logits, ema_logits)
        loss = supervised + weight * consistency
        optimizer_step(loss, optimizer, scheduler, student.parameters(), settings.grad_clip,
                       what="stage-1 student")
        ema_update(ema, student, settings.ema_decay)
        log.advance(sup=f"{supervised.item():.3f}", cons=f"{consistency.item():.4f}")
    log.close()
    return ema.eval()
