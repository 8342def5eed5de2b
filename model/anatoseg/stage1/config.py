"""Stage-1 settings: one dataclass tree on the shared base (:mod:`anatoseg.configbase`).

A file has the same nesting as :class:`Stage1Config`; sizes and spacings are
(Z, Y, X), and a file that sets ``data.patch_size`` or ``data.spacing`` must say
``axes: zyx`` (stage 1 read them as (X, Y, Z) before)::

    axes: zyx
    seed: 0
    teacher: {steps: 600, lr: 5.0e-3}
    student: {steps: 600, threshold: 0.9, class_fraction: 0.5, ema_decay: 0.99, use_pet: true}
    data: {spacing: [4, 4, 4], patch_size: [48, 48, 48], batch_size: 2}

``teacher`` and ``student`` are :class:`~anatoseg.configbase.OptimConfig` sections
(AdamW, cosine schedule, no clipping by default) with their step counts.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from anatoseg.configbase import ConfigBase, OptimConfig
from anatoseg.errors import ConfigError


@dataclass
class Stage1Data:
    """Working grid and patches. Sizes are (Z, Y, X) in voxels, spacing in mm."""

    spacing: tuple[float, float, float] = (4.0, 4.0, 4.0)  # working grid; outputs go back to the PET grid
    patch_size: tuple[int, int, int] = (48, 48, 48)
    batch_size: int = 2
    overlap: float = 0.5  # inference: sliding windows of patch_size, this overlap per axis ...
    slab: int = 96  # ... run on Z slabs of this many working voxels (bounded memory)


@dataclass
class PhaseConfig(OptimConfig):
    """One training phase of stage 1: its steps and optimiser (AdamW, cosine, no clipping by default)."""

    schedule: str = "cosine"
    grad_clip: float | None = None
    steps: int = 300
    # share of the cross-entropy where every present class weighs the same (losses.py); 0.5 measured at the
    # protocol's CPU stage-1 budget (model/README.md, "Stage 1"): teacher 0.26 -> 0.58 held-out mean organ Dice
    class_balance: float = 0.5


@dataclass
class TeacherConfig(PhaseConfig):
    """The CT-only teacher trained on the labelled source domain."""

    lr: float | None = 5e-3
    contrast_removal: float = 0.5  # share of patches whose enhanced organs are pulled toward unenhanced HU
    augment: bool = True  # False: no rotation/zoom/intensity/contrast augmentation (overfitting checks)


@dataclass
class StudentConfig(PhaseConfig):
    """The target-domain student (mean teacher with confidence-filtered pseudo-labels)."""

    lr: float | None = 2e-3
    threshold: float = 0.9  # pseudo-label voxels whose teacher confidence is below are ignored ...
    class_fraction: float = 0.5  # ... except that each class keeps at least its most confident share (filtering.py)
    ema_decay: float = 0.99  # mean-teacher weights: ema <- decay * ema + (1 - decay) * student
    consistency_weight: float = 1.0  # weight of the student-vs-EMA softmax MSE (ramped up)
    consistency_rampup: float = 0.3  # fraction of the steps over which the weight ramps up (sigmoid)
    use_pet: bool = True  # the student also sees the PET (SUV) channel
    source_fraction: float = 0.5  # share of the student's patches drawn from the labelled source cases
    rounds: int = 1  # training rounds; each later round relabels the target with the previous student
    # 0: the target cases' written maps come from the student trained on all of them; K >= 2: each case's map
    # comes from a student trained (from the same teacher, same rounds) without the case's fold of K, so
    # stage 3 trains on prompts as good as those of unseen cases (K more student trainings)
    cross_fit: int = 0


@dataclass
class Stage1Config(ConfigBase):
    data: Stage1Data = field(default_factory=Stage1Data)
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    student: StudentConfig = field(default_factory=StudentConfig)
    widths: tuple[int, int, int, int] = (8, 16, 32, 64)  # OrganUNet channels per level
    coordinates: bool = True  # body-frame coordinate input channels (inputs.py)
    ct_window: bool = True  # the networks also read the CT through a soft-tissue window (net.py)

    AXIS_KEYS: ClassVar[tuple[str, ...]] = ("data.patch_size", "data.spacing")
    OPTION_KEYS: ClassVar[dict[str, tuple[str, ...]]] = {
        "steps": ("teacher.steps", "student.steps"), "batch_size": ("data.batch_size",),
        "lr": ("teacher.lr", "student.lr"), "seed": ("seed",)}

    def check(self) -> None:
        divisor = 2 ** (len(self.widths) - 1)
        if any(p < divisor or p % divisor for p in self.data.patch_size):
            raise ConfigError(f"data.patch_size must be multiples of {divisor} (the network's downsampling), "
                              f"got {self.data.patch_size}")
        if self.data.slab < 1 or not 0 <= self.data.overlap < 1:
            raise ConfigError(f"data.slab must be >= 1 and data.overlap in [0, 1), "
                              f"got {self.data.slab} and {self.data.overlap}")
        if min(self.data.spacing) <= 0:
            raise ConfigError(f"data.spacing must be positive, got {self.data.spacing}")
        self.require_positive("data.batch_size", "teacher.steps", "student.steps", "student.rounds")
        student = self.student
        if not 0 < student.threshold < 1:
            raise ConfigError(f"student.threshold must lie in (0, 1), got {student.threshold}")
        if not 0 <= student.class_fraction <= 1:
            raise ConfigError(f"student.class_fraction must lie in [0, 1], got {student.class_fraction}")
        for key, value in (("teacher.contrast_removal", self.teacher.contrast_removal),
                           ("teacher.class_balance", self.teacher.class_balance),
                           ("student.class_balance", student.class_balance),
                           ("student.source_fraction", student.source_fraction)):
            if not 0 <= value <= 1:
                raise ConfigError(f"{key} must lie in [0, 1], got {value}")
        if student.cross_fit == 1 or student.cross_fit < 0:
            raise ConfigError(f"student.cross_fit must be 0 (off) or a number of folds >= 2, got {student.cross_fit}")
        if not 0 <= student.ema_decay < 1:
            raise ConfigError(f"student.ema_decay must lie in [0, 1), got {student.ema_decay}")
        if not 0 <= student.consistency_rampup <= 1:
            raise ConfigError(f"student.consistency_rampup must lie in [0, 1], got {student.consistency_rampup}")


def build_config(config_file: str | Path | None = None, overrides: Iterable[str] = ()) -> Stage1Config:
    """Defaults, then ``config_file``, then ``overrides`` (``section.key=value``); validated."""
    return Stage1Config.build(config_file, overrides)
