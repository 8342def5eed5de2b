"""Stage-3 run configuration: one dataclass tree, read from YAML/JSON, every value overridable.

Precedence, lowest first:

1. the dataclass defaults below;
2. values derived from the dataset fingerprint (:func:`defaults_from_fingerprint`):
   target spacing and patch size;
3. a config file (``--config run.yaml``, YAML or JSON, same nesting as :class:`Config`);
4. ``--set section.key=value`` overrides and the typed CLI options (``--arch``, ``--steps``...).

Example file::

    model: {arch: anatoseg, preset: tiny, net: {gradient_checkpointing: true}}
    optim: {name: adamw, lr: 3.0e-4, schedule: cosine}
    train: {steps: 2000, batch_size: 2, val_every: 250}

``model.net`` is a free dict of :class:`anatoseg.nets.NetConfig` fields applied on
top of ``model.preset``; it is checked when the network is built.
"""

from __future__ import annotations

import dataclasses
import json
import math
import types
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from anatoseg.errors import ConfigError

#: Voxels per training patch that each network preset is sized for (``base``: the
#: autoPET nnU-Net patch 112×160×128 at batch 2 in bf16 on a 24 GB GPU).
PATCH_VOXEL_BUDGET = {"tiny": 64**3, "base": 112 * 160 * 128}

OPTIMIZERS = ("adamw", "sgd")
SCHEDULES = ("poly", "cosine", "constant")
DEFAULT_LR = {"adamw": 3e-4, "sgd": 1e-2}


@dataclass
class DataConfig:
    """Patches and the held-out split. Sizes are (Z, Y, X) in voxels, spacing in mm."""

    patch_size: tuple[int, int, int] = (64, 64, 64)
    spacing: tuple[float, float, float] | None = None  # target (Z, Y, X) mm; None: the fingerprint's median
    lesion_fraction: float = 1 / 3  # share of patches centred on a lesion voxel
    val_fraction: float = 0.2  # held-out share of cases (at least one when there are >= 2 cases)
    val_cases: int | None = None  # overrides val_fraction with a count
    num_workers: int = 0  # DataLoader worker processes building batches


@dataclass
class AugmentConfig:
    """Random augmentation applied to each training patch (MONAI transforms)."""

    flip_prob: float = 0.5  # per axis
    affine_prob: float = 0.2
    rotate_deg: float = 15.0  # uniform in +-rotate_deg about each axis
    scale: float = 0.15  # zoom in [1 - scale, 1 + scale]
    intensity_prob: float = 0.15
    intensity_scale: float = 0.1  # multiply each channel by 1 + U(-s, s)
    intensity_shift: float = 0.1  # add U(-s, s) (normalised units)


@dataclass
class ModelConfig:
    arch: str = "anatoseg"
    preset: str = "tiny"
    net: dict[str, Any] = field(default_factory=dict)  # NetConfig fields over the preset


@dataclass
class OptimConfig:
    name: str = "adamw"
    lr: float | None = None  # None: 3e-4 for AdamW, 1e-2 for SGD
    weight_decay: float = 1e-4
    momentum: float = 0.99  # SGD (Nesterov)
    schedule: str = "poly"
    warmup_steps: int = 0
    grad_clip: float | None = 12.0  # max gradient norm; None: no clipping

    @property
    def learning_rate(self) -> float:
        return DEFAULT_LR[self.name] if self.lr is None else self.lr


@dataclass
class LossConfig:
    dice_weight: float = 1.0
    ce_weight: float = 1.0
    batch_dice: bool = True  # Dice over the whole batch (nnU-Net) rather than per sample


@dataclass
class TrainRunConfig:
    steps: int = 1000
    batch_size: int = 2  # global: split over DDP processes
    seed: int = 0
    amp: bool = True  # bf16 autocast on CUDA; ignored on the CPU
    val_every: int = 250
    ckpt_every: int = 250
    log_every: int = 10


@dataclass
class InferConfig:
    overlap: float = 0.5  # of the window, per axis
    sigma_scale: float = 0.125  # Gaussian sigma as a fraction of the window size
    batch_size: int = 1  # windows per forward pass


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainRunConfig = field(default_factory=TrainRunConfig)
    infer: InferConfig = field(default_factory=InferConfig)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict (tuples become lists)."""
        return json.loads(json.dumps(dataclasses.asdict(self)))

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> Config:
        return merge(cls(), values)

    def validate(self) -> Config:
        if self.optim.name not in OPTIMIZERS:
            raise ConfigError(f"optim.name must be one of {', '.join(OPTIMIZERS)}, got {self.optim.name!r}")
        if self.optim.schedule not in SCHEDULES:
            raise ConfigError(f"optim.schedule must be one of {', '.join(SCHEDULES)}, "
                              f"got {self.optim.schedule!r}")
        if len(self.data.patch_size) != 3 or min(self.data.patch_size) < 1:
            raise ConfigError(f"data.patch_size must be three positive sizes (Z, Y, X), "
                              f"got {self.data.patch_size}")
        if not 0 <= self.data.lesion_fraction <= 1:
            raise ConfigError(f"data.lesion_fraction must lie in [0, 1], got {self.data.lesion_fraction}")
        if not 0 <= self.infer.overlap < 1:
            raise ConfigError(f"infer.overlap must lie in [0, 1), got {self.infer.overlap}")
        for name in ("steps", "batch_size", "val_every", "ckpt_every", "log_every"):
            if getattr(self.train, name) < 1:
                raise ConfigError(f"train.{name} must be >= 1, got {getattr(self.train, name)}")
        return self


def load_file(path: str | Path) -> dict[str, Any]:
    """Read a YAML or JSON config file into a nested dict."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read config file: {exc.strerror}", path) from None
    try:
        values = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise ConfigError(f"not valid {'JSON' if path.suffix == '.json' else 'YAML'}: {exc}", path) from None
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise ConfigError("a config file must hold a mapping of sections", path)
    return values


def merge(config: Any, values: Mapping[str, Any], prefix: str = "") -> Any:
    """Return a copy of dataclass ``config`` with nested ``values`` applied, types coerced."""
    if not isinstance(values, Mapping):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'} must be a mapping, got {values!r}")
    hints = typing.get_type_hints(type(config))
    changes = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if key not in hints:
            known = ", ".join(f.name for f in dataclasses.fields(config))
            raise ConfigError(f"unknown config key {name!r} (known here: {known})")
        current = getattr(config, key)
        if dataclasses.is_dataclass(current):
            changes[key] = merge(current, value, f"{name}.")
        else:
            changes[key] = _coerce(value, hints[key], name)
    return dataclasses.replace(config, **changes)


def apply_overrides(config: Config, overrides: Iterable[str]) -> Config:
    """Apply ``section.key=value`` strings; ``model.net.<field>=v`` sets one network field."""
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"override {item!r} is not of the form section.key=value")
        parts = key.strip().split(".")
        value: Any = _parse_scalar(raw.strip())
        for part in reversed(parts):
            value = {part: value}
        if parts[:2] == ["model", "net"] and len(parts) > 2:
            net = {**config.model.net, **value["model"]["net"]}
            config = merge(config, {"model": {"net": net}})
        else:
            config = merge(config, value)
    return config


def _parse_scalar(raw: str) -> Any:
    try:
        return yaml.safe_load(raw) if raw else ""
    except yaml.YAMLError:
        return raw


def _coerce(value: Any, hint: Any, name: str) -> Any:
    """Convert ``value`` to the annotated type ``hint`` (str, int, float, bool, tuples, Optional, dict)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null")):
            if type(None) in args:
                return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(value, inner[0], name)
    try:
        if hint is bool:
            if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "1", "0"):
                return value.lower() in ("true", "yes", "1")
            if isinstance(value, bool):
                return value
            raise ValueError(value)
        if hint is int:
            if isinstance(value, bool) or float(value) != int(float(value)):
                raise ValueError(value)
            return int(float(value))
        if hint is float:
            if isinstance(value, bool):
                raise ValueError(value)
            return float(value)
        if hint is str:
            if not isinstance(value, str):
                raise ValueError(value)
            return value
        if origin is tuple:
            if isinstance(value, str):
                value = [v for v in value.replace("x", ",").split(",") if v.strip()]
            items = list(value)
            if len(items) != len(args):
                raise ValueError(value)
            return tuple(_coerce(v, a, name) for v, a in zip(items, args, strict=True))
        if origin is dict:
            if not isinstance(value, Mapping):
                raise ValueError(value)
            return dict(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{name}: cannot use {value!r} as {_type_name(hint)}") from None
    raise ConfigError(f"{name}: unsupported config type {hint}")


def _type_name(hint: Any) -> str:
    return getattr(hint, "__name__", None) or str(hint).replace("typing.", "")


def defaults_from_fingerprint(fingerprint: Mapping[str, Any], preset: str = "tiny",
                              divisor: int = 16) -> dict[str, Any]:
    """Data-derived defaults (nnU-Net style) as a partial config dict: spacing and patch size.

    ``fingerprint`` is :mod:`anatoseg.data.fingerprint`'s JSON: ``median_spacing``
    and ``median_body_shape`` in (X, Y, Z) order. The target spacing is the median
    spacing; the patch starts as the median body extent and its longest side in mm
    shrinks by 10 % steps until the patch fits the preset's voxel budget
    (:data:`PATCH_VOXEL_BUDGET`); sides are then rounded down to multiples of
    ``divisor`` (the network's total downsampling). Returned in (Z, Y, X) order.
    """
    try:
        spacing = [float(s) for s in fingerprint["median_spacing"]][::-1]
        shape = [float(s) for s in fingerprint["median_body_shape"]][::-1]
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
