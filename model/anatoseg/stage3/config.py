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
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from anatoseg.config import DataConfig, InferConfig, LossConfig, NetworkRunConfig, RunConfig
from anatoseg.errors import ConfigError

#: Voxels per training patch that each network preset is sized for (``base``: the
#: autoPET nnU-Net patch 112×160×128 at batch 2 in bf16 on a 24 GB GPU).
PATCH_VOXEL_BUDGET = {"tiny": 64**3, "base": 112 * 160 * 128}

@dataclass
class TrainRunConfig(RunConfig):
    val_every: int = 250


@dataclass
class Config(NetworkRunConfig):
    data: DataConfig = field(default_factory=DataConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainRunConfig = field(default_factory=TrainRunConfig)
    infer: InferConfig = field(default_factory=InferConfig)

    def check(self) -> None:
        if len(self.data.patch_size) != 3 or min(self.data.patch_size) < 1:
            raise ConfigError(f"data.patch_size must be three positive sizes (Z, Y, X), "
                              f"got {self.data.patch_size}")
        if not 0 <= self.data.lesion_fraction <= 1:
            raise ConfigError(f"data.lesion_fraction must lie in [0, 1], got {self.data.lesion_fraction}")
        self.infer.validate("infer")
        self._check_data()
        self.require_positive(*(f"train.{name}" for name in ("steps", "batch_size", "val_every", "ckpt_every",
                                                             "log_every")))

    def _check_data(self) -> None:
        data, augment = self.data, self.augment
        if data.spacing is not None and (len(data.spacing) != 3 or min(data.spacing) <= 0):
            raise ConfigError(f"data.spacing must be three sizes > 0 (mm, Z, Y, X), got {data.spacing}")
        if not 0 <= data.val_fraction < 1 or (data.val_cases is not None and data.val_cases < 0):
            raise ConfigError(f"data.val_fraction must lie in [0, 1) and data.val_cases be >= 0, got "
                              f"{data.val_fraction}, {data.val_cases}")
        if data.num_workers is not None and data.num_workers < 0:
            raise ConfigError(f"data.num_workers must be >= 0 or null (auto), got {data.num_workers}")
        for name in ("flip_prob", "affine_prob", "intensity_prob", "scale", "intensity_scale"):
            if not 0 <= getattr(augment, name) <= 1:
                raise ConfigError(f"augment.{name} must lie in [0, 1], got {getattr(augment, name)}")
        if self.loss.dice_weight < 0 or self.loss.ce_weight < 0:
            raise ConfigError(f"loss weights must be >= 0, got {self.loss.dice_weight}, {self.loss.ce_weight}")


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
