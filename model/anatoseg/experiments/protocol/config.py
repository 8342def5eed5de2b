"""The protocol's budgets: cohort sizes and seeds, phantom spacing, steps and patch, per scale.

A :class:`Scale` is the whole experimental design except the variants; ``--scale cpu`` and
``--scale gpu`` pick one of :data:`SCALES`. Stage-3 settings not named here (learning rate,
lesion share, hard negatives, augmentation, deep supervision, test-time mirroring) are the stage-3
config's own defaults, so every variant trains with the current recipe exactly as ``anato train``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from anatoseg.errors import ConfigError

COHORT_SEEDS = {"organ_ct": 1101, "train": 2202, "test": 3303, "pretrain": 4404}
"""Phantom cohort seeds (:func:`anatoseg.data.phantom.generate_cohort`), fixed for every run:
``organ_ct`` diagnostic CT with organ labels (stage-1 source), ``train`` labelled PET-CT (stage-1
target and stage-3 training, the last ``val_cases`` for validation), ``pretrain`` unlabelled PET-CT
(stage 2 only; its lesion masks are never read), ``test`` held-out PET-CT, scored."""


@dataclass(frozen=True)
class Scale:
    """One budget of the protocol (module docstring). Sizes ``(Z, Y, X)``; spacing in mm."""

    name: str
    spacing: float  # phantom voxel size, mm (isotropic)
    organ_cases: int
    train_cases: int
    val_cases: int  # of the training cases, for stage 3's validation
    pretrain_cases: int
    test_cases: int
    test_negatives: float  # share of lesion-free test cases
    train_negatives: float  # share of lesion-free training cases
    teacher_steps: int  # stage 1
    student_steps: int
    pretrain_steps: int  # stage 2
    pretrain_crop: tuple[int, int, int]
    steps: int  # stage 3, every variant
    batch_size: int
    patch: tuple[int, int, int]  # divisible by 32 (SwinUNETR)
    preset: str
    val_every: int
    seeds: int  # training seeds per variant: 0 .. seeds-1
    stage1_set: dict = field(default_factory=dict)  # extra stage-1 overrides (``anato pseudolabel --set``)
    stage3_set: dict = field(default_factory=dict)  # extra stage-3 overrides for every variant

    def check(self) -> Scale:
        if self.test_cases < 1 or self.train_cases <= self.val_cases or self.seeds < 1:
            raise ConfigError(f"scale {self.name}: need test_cases >= 1, train_cases > val_cases and seeds >= 1")
        if not (0 <= self.test_negatives <= 1 and 0 <= self.train_negatives < 1):
            raise ConfigError(f"scale {self.name}: negative shares must lie in [0, 1]")
        return self

    def to_dict(self) -> dict:
        return asdict(self)


# CPU (2 cores, the ≤150-minute table; measurements in benchmarks/results/protocol-budget.md):
# - 6 mm phantom: a whole-body test case is ~0.6 M voxels instead of 3 M at 4 mm, so predicting the
#   40 test cases of a unit costs well under a minute; lesions of 5-40 mm still span 1-7 voxels.
# - 40 test cases, 16 lesion-free (40 %): the floor for a paired comparison (sd of Dice
#   differences ~0.11, a 0.05 difference needs ~40 cases), with FPV measured on negatives.
# - patch 32×64×64 (19×38×38 cm at 6 mm: most of a trunk cross-section), batch 2, tiny preset: the
#   largest that SwinUNETR/UNETR take at this budget.
# - steps: see the plateau measurement in protocol-budget.md (the full method's held-out Dice leaves 0
#   well before this many steps at the stage-3 defaults).
CPU = Scale(name="cpu", spacing=6.0, organ_cases=4, train_cases=12, val_cases=2, pretrain_cases=8, test_cases=40,
            test_negatives=0.4, train_negatives=0.0, teacher_steps=600, student_steps=150, pretrain_steps=200,
            pretrain_crop=(32, 32, 32), steps=300, batch_size=2, patch=(32, 64, 64), preset="tiny", val_every=150,
            seeds=3)

# GPU (one H100/H200, an estimate, not measured here): nnU-Net-like patch at 3 mm and the base preset,
# 48 test cases, 24 training cases. Per unit ~1500 steps at ~0.1 s plus 48 whole-body predictions;
# about 8 minutes of device time for the ablation group, more for the whole table.
GPU = Scale(name="gpu", spacing=3.0, organ_cases=8, train_cases=24, val_cases=4, pretrain_cases=24, test_cases=48,
            test_negatives=0.4, train_negatives=0.0, teacher_steps=2000, student_steps=500, pretrain_steps=1000,
            pretrain_crop=(64, 64, 64), steps=1500, batch_size=2, patch=(64, 128, 128), preset="base",
            val_every=500, seeds=3)

SCALES = {"cpu": CPU, "gpu": GPU}
