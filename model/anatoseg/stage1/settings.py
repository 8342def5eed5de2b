"""Stage-1 settings: one dataclass tree, read from YAML/JSON and ``section.key=value`` overrides.

Uses the project's config machinery (:func:`anatoseg.config.merge`,
:func:`anatoseg.config.load_file`, :func:`anatoseg.config.apply_overrides`), so a
file has the same nesting as :class:`Stage1Config`::

    teacher: {steps: 600, lr: 5.0e-3}
    student: {steps: 600, threshold: 0.9, class_fraction: 0.5, ema_decay: 0.99, use_pet: true}
    data: {spacing: [4, 4, 4], patch_size: [48, 48, 48], batch_size: 2}
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from anatoseg.config import apply_overrides, load_file, merge
from anatoseg.errors import ConfigError


@dataclass
class Stage1Data:
    """Working grid and patches. Sizes are (X, Y, Z) in voxels (the Case axis order), spacing in mm."""

    spacing: tuple[float, float, float] = (4.0, 4.0, 4.0)  # working grid; outputs go back to the PET grid
    patch_size: tuple[int, int, int] = (48, 48, 48)
    batch_size: int = 2
    overlap: float = 0.5  # inference: sliding windows of patch_size, this overlap per axis ...
    slab: int = 96  # ... run on Z slabs of this many working voxels (bounded memory)


@dataclass
class TeacherConfig:
    """The CT-only teacher trained on the labelled source domain."""

    steps: int = 300
    lr: float = 5e-3
    weight_decay: float = 1e-4


@dataclass
class StudentConfig:
    """The target-domain student (mean teacher with confidence-filtered pseudo-labels)."""

    steps: int = 300
    lr: float = 2e-3
    weight_decay: float = 1e-4
    threshold: float = 0.9  # pseudo-label voxels whose teacher confidence is below are ignored ...
    class_fraction: float = 0.5  # ... except that each class keeps at least its most confident share (filtering.py)
    ema_decay: float = 0.99  # mean-teacher weights: ema <- decay * ema + (1 - decay) * student
    consistency_weight: float = 1.0  # weight of the student-vs-EMA softmax MSE (ramped up)
    consistency_rampup: float = 0.3  # fraction of the steps over which the weight ramps up (sigmoid)
    use_pet: bool = True  # the student also sees the PET (SUV) channel


@dataclass
class Stage1Config:
    data: Stage1Data = field(default_factory=Stage1Data)
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    student: StudentConfig = field(default_factory=StudentConfig)
    widths: tuple[int, int, int, int] = (8, 16, 32, 64)  # OrganUNet channels per level
    seed: int = 0

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict (tuples become lists)."""
        return json.loads(json.dumps(dataclasses.asdict(self)))

    def validate(self) -> Stage1Config:
        divisor = 2 ** (len(self.widths) - 1)
        if any(p < divisor or p % divisor for p in self.data.patch_size):
            raise ConfigError(f"data.patch_size must be multiples of {divisor} (the network's downsampling), "
                              f"got {self.data.patch_size}")
        if self.data.slab < 1 or not 0 <= self.data.overlap < 1:
            raise ConfigError(f"data.slab must be >= 1 and data.overlap in [0, 1), "
                              f"got {self.data.slab} and {self.data.overlap}")
        if min(self.data.spacing) <= 0:
            raise ConfigError(f"data.spacing must be positive, got {self.data.spacing}")
        for name in ("data.batch_size", "teacher.steps", "student.steps"):
            section, key = name.split(".")
            if getattr(getattr(self, section), key) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(getattr(self, section), key)}")
        if not 0 < self.student.threshold < 1:
            raise ConfigError(f"student.threshold must lie in (0, 1), got {self.student.threshold}")
        if not 0 <= self.student.class_fraction <= 1:
            raise ConfigError(f"student.class_fraction must lie in [0, 1], got {self.student.class_fraction}")
        if not 0 <= self.student.ema_decay < 1:
            raise ConfigError(f"student.ema_decay must lie in [0, 1), got {self.student.ema_decay}")
        if not 0 <= self.student.consistency_rampup <= 1:
            raise ConfigError(f"student.consistency_rampup must lie in [0, 1], "
                              f"got {self.student.consistency_rampup}")
        return self


def build_config(config_file: str | Path | None = None, overrides: Iterable[str] = (),
                 values: dict[str, Any] | None = None) -> Stage1Config:
    """Defaults, then ``config_file``, then ``overrides`` (``section.key=value``), then ``values``."""
    config = Stage1Config()
    if config_file is not None:
        config = merge(config, load_file(config_file))
    config = apply_overrides(config, overrides)
    if values:
        config = merge(config, values)
    return config.validate()
