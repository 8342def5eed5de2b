"""The two training loops of stage 1: the CT teacher on the source set, the mean-teacher student on the target.

Both draw ``batch_size`` patches per step (:func:`~anatoseg.stage1.augment.sample_patch`),
apply one random rotation/zoom per patch, and use the optimiser and schedule of their
config section (AdamW, cosine) through the shared training core (:mod:`anatoseg.training`).

Inputs are the body-frame coordinates then the image channels (:mod:`.inputs`); intensity
augmentations touch the image channels only. Student step (``image`` = CT, or CT + PET when
``use_pet``; a patch comes from the labelled source cases with probability
``student.source_fraction``, all its voxels trusted, else from a target case)::

    weak   = remove_contrast(affine(image))      # geometry shared by both views
    strong = strong_intensity(weak)               # student view
    loss   = ce_dice(student(strong), pseudo, trusted)   # trusted: filtering.trusted_voxels
           + w(t) * |softmax(student(strong)) - softmax(ema(weak))|^2
    ema   <- decay * ema + (1 - decay) * student

The student and its mean teacher (EMA) start from the teacher's (or the previous
round's student's) weights, or from scratch with external teacher labels; a PET
input channel starts at zero weight (:func:`~anatoseg.stage1.net.expand_input_channels`).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from anatoseg.data.labels import NUM_ORGANS, ORGAN_IDS
from anatoseg.stage1.augment import (
    UNENHANCED_HU,
    ClassVoxels,
    crop_padded,
    mild_intensity,
    random_affine,
    remove_contrast,
    sample_patch,
    strong_intensity,
)
from anatoseg.stage1.config import Stage1Config
from anatoseg.stage1.data import Stage1Case, make_preprocessing
from anatoseg.stage1.inputs import COORDINATE_CHANNELS, ct_window, network_input
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


@dataclass
class Pool:
    """Training volumes to draw patches from, with the weight of each volume in the draw.

    ``images``: per case ``(C, Z, Y, X)``; ``labels``: per case ``(Z, Y, X)``, with
    ``classes`` their :class:`ClassVoxels` (for centring patches on organs);
    ``masks``: per case ``(Z, Y, X)`` bool voxels to learn from, None for all (except
    the padding beyond the volume); ``weights``: per case draw probability (sum 1).
    """

    images: list[np.ndarray]
    labels: list[np.ndarray]
    classes: list[ClassVoxels]
    masks: list[np.ndarray | None]
    weights: np.ndarray

    @classmethod
    def of(cls, images, labels, masks=None, share: float = 1.0) -> Pool:
        """A pool whose cases share ``share`` of the draws equally."""
        masks = [None] * len(labels) if masks is None else list(masks)
        return cls(list(images), list(labels), [ClassVoxels(x) for x in labels], masks,
                   np.full(len(labels), share / max(len(labels), 1)))

    def __add__(self, other: Pool) -> Pool:
        return Pool(self.images + other.images, self.labels + other.labels, self.classes + other.classes,
                    self.masks + other.masks, np.concatenate([self.weights, other.weights]))


def _batch(pool: Pool, config: Stage1Config, rng: np.random.Generator, generator: torch.Generator, device,
           augment: bool = True):
    """Random patches of ``pool``: ``image`` (B, C, *P), ``target`` (B, *P) int64, ``mask`` (B, *P) bool.

    With ``augment``, rotation/zoom are applied alike to all three.
    """
    patch = config.data.patch_size
    picked_images, picked_labels, picked_masks = [], [], []
    for _ in range(config.data.batch_size):
        i = int(rng.choice(len(pool.labels), p=pool.weights / pool.weights.sum()))
        labels = pool.labels[i]
        box = sample_patch(labels.shape, patch, pool.classes[i], rng)
        picked_images.append(crop_padded(pool.images[i], box))
        picked_labels.append(crop_padded(labels, box, fill=0))
        mask = np.ones(labels.shape, dtype=bool) if pool.masks[i] is None else pool.masks[i]
        picked_masks.append(crop_padded(mask, box, fill=False))
    tensors = [torch.from_numpy(np.stack(picked_images)).float(),
               torch.from_numpy(np.stack(picked_labels))[:, None].float(),
               torch.from_numpy(np.stack(picked_masks))[:, None].float()]
    if augment:
        tensors = random_affine(tensors, ["bilinear", "nearest", "nearest"], generator)
    image, target, mask = (t.to(device) for t in tensors)
    return image, target[:, 0].long(), mask[:, 0] > 0.5


def _unenhanced(config: Stage1Config) -> dict[int, float]:
    """Organ id -> unenhanced CT value in the working normalisation, for the organs of the label set."""
    params = make_preprocessing(config.data.spacing)
    return {ORGAN_IDS[name]: (hu - params.ct_mean) / params.ct_std for name, hu in UNENHANCED_HU.items()
            if name in ORGAN_IDS}


def _on_image(x: torch.Tensor, config: Stage1Config, augment, *args) -> torch.Tensor:
    """``augment(image, *args)`` on the image channels of a network input ``x`` (B, C, Z, Y, X) only (the
    coordinate channels, first, are geometry: rotated and zoomed with the patch, never intensity-augmented)."""
    first = COORDINATE_CHANNELS if config.coordinates else 0
    return torch.cat([x[:, :first], augment(x[:, first:], *args)], 1) if first else augment(x, *args)


def _remove_contrast(image: torch.Tensor, target: torch.Tensor, unenhanced: dict[int, float], probability: float,
                     generator: torch.Generator) -> torch.Tensor:
    """:func:`remove_contrast` on the CT channel (channel 0) of image channels (B, C, Z, Y, X)."""
    if probability <= 0:
        return image
    ct = remove_contrast(image[:, :1], target, unenhanced, generator, probability)
    return torch.cat([ct, image[:, 1:]], 1)


def train_teacher(cases: Sequence[Stage1Case], config: Stage1Config, device: str | torch.device = "cpu"
                  ) -> OrganUNet:
    """Train the CT-only teacher (1 input channel) on labelled source cases; returns it in eval mode.

    Every case must have ``work.organs``. Loss: CE (``teacher.class_balance``) + Dice on all voxels of the
    patch; augmentation
    (unless ``teacher.augment`` is off): rotation/zoom, contrast removal (``teacher.contrast_removal``),
    mild intensity.
    """
    settings = config.teacher
    seed_everything(config.seed)
    rng = np.random.default_rng([config.seed, 1])
    generator = torch.Generator().manual_seed(config.seed + 1)
    net = OrganUNet(input_channels(1, config), NUM_CLASSES, config.widths, ct_window(config)).to(device)
    optimizer, scheduler = make_optimizer(net.parameters(), settings, settings.steps)
    pool = Pool.of([network_input(c.work.image[:1], config.coordinates) for c in cases],
                   [c.work.organs for c in cases])
    unenhanced = _unenhanced(config)
    net.train()
    log = RunLog(None, (), desc="teacher", total=settings.steps)
    for _ in range(settings.steps):
        image, target, mask = _batch(pool, config, rng, generator, device, settings.augment)
        if settings.augment:
            image = _on_image(image, config, _remove_contrast, target, unenhanced, settings.contrast_removal,
                              generator)
            image = _on_image(image, config, mild_intensity, generator)
        loss = masked_ce_dice(net(image), target, mask, settings.class_balance)
        optimizer_step(loss, optimizer, scheduler, net.parameters(), settings.grad_clip, what="stage-1 teacher")
        log.advance(loss=f"{loss.item():.3f}")
    log.close()
    return net.eval()


def student_channels(image: np.ndarray, use_pet: bool) -> np.ndarray:
    """The student's image channels of a working image ``(2, Z, Y, X)``: CT + PET, or CT only."""
    return image if use_pet else image[:1]


def input_channels(image_channels: int, config: Stage1Config) -> int:
    """Network input channels for ``image_channels`` image channels (plus the coordinates, if used)."""
    return image_channels + (COORDINATE_CHANNELS if config.coordinates else 0)


def inputs_of(image: np.ndarray, use_pet: bool, config: Stage1Config) -> np.ndarray:
    """The network input of a working image ``(2, Z, Y, X)`` (:func:`student_channels`, coordinates first)."""
    return network_input(student_channels(image, use_pet), config.coordinates)


def _student_pool(cases: Sequence[Stage1Case], pseudo: Sequence[PseudoLabels], source: Sequence[Stage1Case],
                  config: Stage1Config) -> Pool:
    """Target cases with their trusted pseudo-labels, mixed with the labelled source cases
    (``student.source_fraction`` of the draws when there are any)."""
    use_pet = config.student.use_pet
    share = config.student.source_fraction if source else 0.0
    pool = Pool.of([inputs_of(c.work.image, use_pet, config) for c in cases], [p.labels for p in pseudo],
                   [p.trusted for p in pseudo], share=1.0 - share)
    if share > 0:
        pool = pool + Pool.of([inputs_of(c.work.image, use_pet, config) for c in source],
                              [c.work.organs for c in source], share=share)
    return pool


def train_student(cases: Sequence[Stage1Case], pseudo: Sequence[PseudoLabels], init: OrganUNet | None,
                  config: Stage1Config, device: str | torch.device = "cpu",
                  source: Sequence[Stage1Case] = ()) -> OrganUNet:
    """Train the student on target cases against the trusted voxels of their pseudo-labels, in batches
    mixed with the labelled ``source`` cases (module docstring).

    ``init``: the network it starts from (the teacher, or the previous round's student; input
    channels are expanded), or None for a fresh network (external teacher labels).
    Returns the student's mean teacher (the EMA weights), in eval mode: the student stage 1 outputs.
    """
    settings = config.student
    seed_everything(config.seed + 2)
    rng = np.random.default_rng([config.seed, 2])
    generator = torch.Generator().manual_seed(config.seed + 3)
    student = OrganUNet(input_channels(2 if settings.use_pet else 1, config), NUM_CLASSES, config.widths,
                        ct_window(config)).to(device)
    if init is not None:
        expand_input_channels(init.state_dict(), student)
    ema = copy.deepcopy(student)
    for p in ema.parameters():
        p.requires_grad_(False)
    optimizer, scheduler = make_optimizer(student.parameters(), settings, settings.steps)
    pool = _student_pool(cases, pseudo, source, config)
    unenhanced = _unenhanced(config)
    rampup = int(settings.consistency_rampup * settings.steps)
    student.train()
    ema.train()
    log = RunLog(None, (), desc="student", total=settings.steps)
    for step in range(settings.steps):
        weak, target, mask = _batch(pool, config, rng, generator, device)
        weak = _on_image(weak, config, _remove_contrast, target, unenhanced, config.teacher.contrast_removal,
                         generator)
        strong = _on_image(weak, config, strong_intensity, generator)
        logits = student(strong)
        with torch.no_grad():
            ema_logits = ema(weak)
        supervised = masked_ce_dice(logits, target, mask, settings.class_balance)
        weight = settings.consistency_weight * sigmoid_rampup(step, rampup)
        consistency = consistency_loss(logits, ema_logits)
        loss = supervised + weight * consistency
        optimizer_step(loss, optimizer, scheduler, student.parameters(), settings.grad_clip,
                       what="stage-1 student")
        ema_update(ema, student, settings.ema_decay)
        log.advance(sup=f"{supervised.item():.3f}", cons=f"{consistency.item():.4f}")
    log.close()
    return ema.eval()
