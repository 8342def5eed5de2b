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
    group: str = "table"  # the variant group run without --variants (variants.GROUPS)
    stage1_set: dict = field(default_factory=dict)  # extra stage-1 overrides (``anato pseudolabel --set``)
    stage2_set: dict = field(default_factory=dict)  # extra stage-2 overrides (``anato pretrain --set``)
    stage3_set: dict = field(default_factory=dict)  # extra stage-3 overrides for every variant

    def check(self) -> Scale:
        if self.test_cases < 1 or self.train_cases <= self.val_cases or self.seeds < 1:
            raise ConfigError(f"scale {self.name}: need test_cases >= 1, train_cases > val_cases and seeds >= 1")
        if not (0 <= self.test_negatives <= 1 and 0 <= self.train_negatives < 1):
            raise ConfigError(f"scale {self.name}: negative shares must lie in [0, 1]")
        return self

    def to_dict(self) -> dict:
        return asdict(self)


# CPU (2 cores, the ≤150-minute table; measurements and the estimate in benchmarks/results/protocol-budget.md):
# - 6 mm phantom: a whole-body case is ~0.9 M voxels (3 M at 4 mm); lesions of 5-40 mm still span
#   1-7 voxels.
# - 40 test cases, 16 lesion-free (40 %): the floor for a paired comparison (sd of Dice
#   differences ~0.11: a 0.05 difference needs ~40 cases); FPV is measured on the negatives too.
# - patch 32×64×64 (19×38×38 cm at 6 mm), batch 2, tiny preset: divisible by 32 (SwinUNETR).
# - 1200 steps (revised 2026-12-05 from 600; benchmarks/results/protocol-budget.md). 300 steps do not leave
#   the all-background plateau (UNet, this scale's training cohort, validation Dice on the 2 validation cases:
#   0.000 at 100, 200 and 0.003 at 300 even with lesion share 1.0; with a 900-step schedule 0.038 at 450).
#   600 steps left it for UNet with every seed (test Dice 0.25) but for the anatoseg variants only by seed
#   lottery: 4 of their 12 units passed test Dice 0.05 in the first table (protocol-cpu-7204307), their
#   training loss sat at the deep-supervision plateau (1.754 = three heads at Dice loss 1) until the poly
#   schedule had decayed. With a 1200-step schedule the two full-method seeds that stayed there with 600 left it
#   (validation Dice 0.080 and 0.335 at 1200; the loss drops between steps 500 and 800 while the learning rate is
#   still above half its peak). Per stage-3 step (1 thread): 0.57 CPU-s anatoseg, 0.17 UNet, 0.79 SegResNet,
#   4.1 SwinUNETR, 0.54 UNETR; the full-resolution decoder convolutions are half of an anatoseg step.
# - deep supervision: only the full-resolution head gets a loss (loss.max_supervised_stride 1; revised
#   2026-12-05, before: the stage-3 default 4). At 6 mm a stride-2 cell is 12 mm and a stride-4 cell 24 mm,
#   bigger than most phantom lesions (1-7 voxels across), so the coarse heads' soft targets stay near 0; my
#   reading (not measured) is that their Dice terms hold the shared decoder at "all background". Measured on
#   the one unit of the 1200-step table that never left the plateau (no prompts, seed 2), with probes on that
#   run's stages at commit 8077c95 (benchmarks/results/protocol-cpu-45fc05a/): stride 1 left it (validation
#   Dice 0.27 at step 400, 0.39 at 600, 0.25 at 1200); stride 2 stayed on it (loss 1.505 = 1.5 x Dice loss 1
#   at step 500), and so did, as far as each ran, a top-10 % cross-entropy (loss.ce_topk 0.1) and 200 steps of
#   lesion-only patches (data.lesion_warmup 200) (1200 steps, validation Dice 0 at every 200), SGD at 1e-2
#   (480 steps), AdamW at 5e-4 (490) and no affine/gamma/blur/low-resolution augmentation (700).
# - SwinUNETR and SegResNet are left out of the CPU table (group "table-cpu"): at 1200 steps SwinUNETR's 3
#   units would take ~250 CPU-minutes and SegResNet's ~63 (0.79 CPU-s per step, 11 CPU-s per scored case), and
#   the 6 other variants already take ~227 CPU-minutes plus ~16 for the stages: ~125 minutes on 2 cores at
#   --jobs 2. Both stay in the registry and the GPU table (--variants SegResNet runs it here too).
#   A second torch thread gives no speed-up: run with OMP_NUM_THREADS=1 and --jobs 2.
# - stage 2 on 64×64×64 crops with mask patches of the tiny preset's deepest stride, 16³
#   (stages.mask_patch): 64 patches per crop, ~6 tokens per crop visible in both views at mask ratio 0.7 for
#   the alignment term (a 32×64×64 crop left ~3; a finer mask patch leaves none and the term dead).
# - no test-time mirroring (8 flips are 8 times the prediction work of 40 cases in each unit) and
#   sliding windows overlapping by 1/4 instead of 1/2 (~2.4x fewer windows): scoring the test cases would
#   otherwise cost more than training (SegResNet: 11 CPU-s per case at overlap 1/2).
CPU = Scale(name="cpu", spacing=6.0, organ_cases=4, train_cases=12, val_cases=2, pretrain_cases=8, test_cases=40,
            test_negatives=0.4, train_negatives=0.0, teacher_steps=600, student_steps=150, pretrain_steps=200,
            pretrain_crop=(64, 64, 64), steps=1200, batch_size=2, patch=(32, 64, 64), preset="tiny", val_every=200,
            seeds=3, group="table-cpu",
            stage3_set={"infer.mirror": False, "infer.overlap": 0.25, "loss.max_supervised_stride": 1})

# GPU (one H100/H200): an ESTIMATE, nothing of it measured here. nnU-Net-like patch and the base preset at
# the phantom's 4 mm (3 mm cases take ~4x the CPU to generate and preprocess, which the GPU does not speed up),
# 48 test cases. Guessed costs: ~0.1 s per base-preset step at batch 2 in bf16, ~1.5 s per test case
# (CPU preprocessing dominates), stages ~2 min: a unit ~2.5 min, so ≤8 minutes of device time holds the
# stages plus about two units (e.g. --variants "no prompts" --seeds 1), not the whole table (~60 min).
# Deep supervision down to stride 2 (8 mm cells at 4 mm), not the stage-3 default 4 (16 mm): an extrapolation
# of the CPU scale's measurement (12 mm cells kept a network on the plateau there), not measured at this scale.
GPU = Scale(name="gpu", spacing=4.0, organ_cases=8, train_cases=24, val_cases=4, pretrain_cases=16, test_cases=48,
            test_negatives=0.4, train_negatives=0.0, teacher_steps=1500, student_steps=300, pretrain_steps=500,
            pretrain_crop=(64, 128, 128), steps=1000, batch_size=2, patch=(64, 128, 128), preset="base",
            val_every=500, seeds=3, stage3_set={"loss.max_supervised_stride": 2})

SCALES = {"cpu": CPU, "gpu": GPU}
