"""Stage-3 run configuration (``anato train``): one dataclass tree on the shared base (:mod:`anatoseg.configbase`).

Precedence, lowest first: the dataclass defaults below; values derived from the
dataset fingerprint (:func:`defaults_from_fingerprint`: target spacing and patch
size); a config file (``--config run.yaml``); ``--set section.key=value``
overrides and the typed CLI options (``--arch``, ``--steps``...). All sizes and
spacings are (Z, Y, X).

Example file::

    axes: zyx
    seed: 0
    model: {arch: anatoseg, preset: tiny, net: {gradient_checkpointing: true}}
    optim: {name: adamw, lr: 3.0e-4, schedule: cosine}
    train: {steps: 2000, batch_size: 2, val_every: 250}

``model.net`` is a free dict of :class:`anatoseg.nets.NetConfig` fields applied on
top of ``model.preset``; it is checked when the network is built.

The training recipe, for every architecture alike (each a value here, so that an experiment varies it
with ``--set``):

- ``data``: a third of the patches centred on lesions; of the others, a quarter each (a sixth of all) on
  high-uptake organs (``data.hard_negative_organs``) and on hot voxels outside the lesions (PET above the
  case's ``data.hot_quantile``), the rest at random (:mod:`anatoseg.training.sampling`);
- ``augment``: nnU-Net's mirroring (left/right organ labels swapped on an X flip), rotation and scaling,
  brightness, gamma, contrast, noise, blur, simulated low resolution, and a PET-CT misregistration of up to
  ``augment.misalign_voxels`` (:mod:`anatoseg.training.augment`); where the network reads organ maps, their
  corruption (``augment.organ_corruption``, :mod:`anatoseg.training.organ_corruption`);
- ``loss``: deep supervision against average-pooled (soft) targets, no loss at heads coarser than
  ``loss.max_supervised_stride``; ``anatoseg_organ_aux`` adds ``loss.organ_aux_weight`` times its organ head's
  cross-entropy;
- ``optim``: ``lr`` and ``warmup_steps`` null take the architecture's defaults
  (:data:`anatoseg.training.optim.ARCH_OPTIM`); stage-2 encoders (``--init``) train at
  ``optim.pretrained_lr_scale`` times the rate of the new layers;
- ``infer``: test-time mirroring (``infer.mirror``) and organ post-processing (``infer.suppress_organs``)
  for ``anato predict``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from anatoseg.config import DataConfig, InferConfig, LossConfig, NetworkRunConfig, RunConfig, organ_names
from anatoseg.configbase import OptimConfig
from anatoseg.errors import ConfigError

#: Voxels per training patch that each network preset is sized for (``base``: the
#: autoPET nnU-Net patch 112×160×128 at batch 2 in bf16 on a 24 GB GPU).
PATCH_VOXEL_BUDGET = {"tiny": 64**3, "base": 112 * 160 * 128}


@dataclass
class TrainRunConfig(RunConfig):
    val_every: int = 250
    # --init with a stage-2 checkpoint preprocessed otherwise (spacing, normalisation) than this run: a warning
    # instead of a ConfigError
    allow_preprocessing_mismatch: bool = False


@dataclass
class TrainOptimConfig(OptimConfig):
    """Stage 3's optimiser: ``lr`` None (null) is the architecture's rate and ``warmup_steps`` None its warm-up
    (:func:`anatoseg.training.optim.resolve_optim`); encoders loaded from a stage-2 checkpoint train at
    ``pretrained_lr_scale`` times the rate of the new layers, with a warm-up of at least 5 % of the steps."""

    warmup_steps: int | None = None
    pretrained_lr_scale: float = 0.25

    def validate(self, prefix: str = "optim") -> None:
        OptimConfig.validate(dataclasses.replace(self, warmup_steps=self.warmup_steps or 0), prefix)
        if not 0 < self.pretrained_lr_scale <= 1:
            raise ConfigError(f"{prefix}.pretrained_lr_scale must lie in (0, 1], got {self.pretrained_lr_scale}")


@dataclass
class Config(NetworkRunConfig):
    optim: TrainOptimConfig = field(default_factory=TrainOptimConfig)
    data: DataConfig = field(default_factory=DataConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainRunConfig = field(default_factory=TrainRunConfig)
    infer: InferConfig = field(default_factory=InferConfig)

    def check(self) -> None:
        if len(self.data.patch_size) != 3 or min(self.data.patch_size) < 1:
            raise ConfigError(f"data.patch_size must be three positive sizes (Z, Y, X), "
                              f"got {self.data.patch_size}")
        self.infer.validate("infer")
        self._check_data()
        self._check_augment()
        self.require_positive(*(f"train.{name}" for name in ("steps", "batch_size", "val_every", "ckpt_every",
                                                             "log_every")))

    def _check_data(self) -> None:
        data = self.data
        if not 0 <= data.lesion_fraction <= 1:
            raise ConfigError(f"data.lesion_fraction must lie in [0, 1], got {data.lesion_fraction}")
        if data.lesion_warmup < 0:
            raise ConfigError(f"data.lesion_warmup must be >= 0 steps, got {data.lesion_warmup}")
        if min(data.organ_fraction, data.hot_fraction) < 0 or data.organ_fraction + data.hot_fraction > 1:
            raise ConfigError(f"data.organ_fraction and hot_fraction (shares of the patches not centred on a lesion) "
                              f"must be >= 0 and sum to <= 1, got {data.organ_fraction:g}, {data.hot_fraction:g}")
        if not 0 < data.hot_quantile < 1:
            raise ConfigError(f"data.hot_quantile must lie in (0, 1), got {data.hot_quantile}")
        organ_names(data.hard_negative_organs, "data.hard_negative_organs")
        if data.spacing is not None and (len(data.spacing) != 3 or min(data.spacing) <= 0):
            raise ConfigError(f"data.spacing must be three sizes > 0 (mm, Z, Y, X), got {data.spacing}")
        if not 0 <= data.val_fraction < 1 or (data.val_cases is not None and data.val_cases < 0):
            raise ConfigError(f"data.val_fraction must lie in [0, 1) and data.val_cases be >= 0, got "
                              f"{data.val_fraction}, {data.val_cases}")
        if data.num_workers is not None and data.num_workers < 0:
            raise ConfigError(f"data.num_workers must be >= 0 or null (auto), got {data.num_workers}")
        loss = self.loss
        if min(loss.dice_weight, loss.ce_weight, loss.organ_aux_weight) < 0:
            raise ConfigError(f"loss weights must be >= 0, got dice_weight {loss.dice_weight}, ce_weight "
                              f"{loss.ce_weight}, organ_aux_weight {loss.organ_aux_weight}")
        if loss.ce_topk is not None and not 0 < loss.ce_topk <= 1:
            raise ConfigError(f"loss.ce_topk must lie in (0, 1] or be null (every voxel), got {loss.ce_topk}")
        if self.loss.max_supervised_stride is not None and self.loss.max_supervised_stride < 1:
            raise ConfigError(f"loss.max_supervised_stride must be >= 1 or null, got "
                              f"{self.loss.max_supervised_stride}")

    def _check_augment(self) -> None:
        augment = self.augment
        unit = ("flip_prob", "affine_prob", "intensity_prob", "scale", "intensity_scale", "gamma_prob",
                "contrast_prob", "contrast_range", "noise_prob", "blur_prob", "lowres_prob", "misalign_prob")
        for name in unit:
            if not 0 <= getattr(augment, name) <= 1:
                raise ConfigError(f"augment.{name} must lie in [0, 1], got {getattr(augment, name)}")
        ranges = {"gamma_range": (1e-3, math.inf), "blur_sigma": (0, math.inf), "lowres_zoom": (1e-3, 1)}
        for name, (low, high) in ranges.items():
            a, b = getattr(augment, name)
            if not low <= a <= b <= high:
                raise ConfigError(f"augment.{name} must be two values {low:g} <= a <= b <= {high:g}, got {a}, {b}")
        if augment.noise_std < 0 or augment.misalign_voxels < 0:
            raise ConfigError(f"augment.noise_std and misalign_voxels must be >= 0, got {augment.noise_std}, "
                              f"{augment.misalign_voxels}")
        augment.organ_corruption.validate("augment.organ_corruption")


def defaults_from_fingerprint(fingerprint: Mapping[str, Any], preset: str = "tiny",
                              divisor: int = 16) -> dict[str, Any]:
    """Data-derived defaults (nnU-Net style) as a partial config dict: spacing and patch size.

    ``fingerprint`` is :mod:`anatoseg.data.fingerprint`'s JSON: ``median_spacing``
    and ``median_body_shape``, (Z, Y, X) like everything else. The target spacing is the median
    spacing; the patch starts as the median body extent and its longest side in mm
    shrinks by 10 % steps until the patch fits the preset's voxel budget
    (:data:`PATCH_VOXEL_BUDGET`); sides are then rounded down to multiples of
    ``divisor`` (the network's total downsampling).
    """
    try:
        spacing = [float(s) for s in fingerprint["median_spacing"]]
        shape = [float(s) for s in fingerprint["median_body_shape"]]
    except (KeyError, TypeError, ValueError) as exc:
        raise ConfigError(f"dataset fingerprint lacks median_spacing/median_body_shape ({exc})") from None
    budget = PATCH_VOXEL_BUDGET.get(preset, PATCH_VOXEL_BUDGET["tiny"])
    patch = [max(divisor, int(round(s))) for s in shape]
    while math.prod(patch) > budget:
        axis = max(range(3), key=lambda a: (patch[a] * spacing[a], patch[a]))
        if patch[axis] <= divisor:
            break
        patch[axis] = max(divisor, int(patch[axis] * 0.9))
    patch = [max(divisor, p // divisor * divisor) for p in patch]
    return {"data": {"patch_size": patch, "spacing": spacing}}
