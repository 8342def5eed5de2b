"""The demo's budgets: how many phantom cases and optimisation steps each stage gets.

``FULL`` fits ``make demo`` (≤ 15 minutes on 2 CPU cores); ``QUICK`` (``--quick``)
fits ≤ 2 minutes and only shows that every stage runs end to end.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DemoPlan:
    """Cohort sizes (cases), phantom spacing (mm), steps per stage and the stage-3 patch (Z, Y, X voxels)."""

    organ_cases: int  # diagnostic-CT organ set for the stage-1 teacher
    train_cases: int  # PET-CT cases for stages 1 (target), 2 and 3
    test_cases: int  # held-out PET-CT cases predicted whole-body
    spacing: float
    teacher_steps: int  # stage 1: the CT teacher on the organ set ...
    student_steps: int  # ... and the student on the PET-CT set
    pretrain_steps: int
    train_steps: int
    patch: tuple[int, int, int]
    val_every: int
    # Stage 2's crop (Z, Y, X): its mask patch is the tiny preset's deepest stride, 16, so that the
    # alignment term has tokens visible in both views (an 8-voxel mask patch left none: the term was dead).
    pretrain_crop: tuple[int, int, int] = (32, 64, 64)
    # Stage 1's working grid (mm, isotropic; its organ maps are written back on the cases' grid), None for
    # stage 1's default (4 mm). Organs need context more than resolution: on the full demo's cohorts, 450
    # teacher steps reached mean organ Dice 0.415 on the PET-CT cases at 6 mm (brain 0.90, lungs 0.92) and
    # 0.214 at 4 mm (brain 0.14, lungs 0.00), where a 48³ patch covers 19 cm instead of 29.
    stage1_spacing: float | None = None

    def stage1_overrides(self) -> list[str]:
        grid = [] if self.stage1_spacing is None else [f"data.spacing={self.stage1_spacing:g},"
                                                       f"{self.stage1_spacing:g},{self.stage1_spacing:g}"]
        return [f"teacher.steps={self.teacher_steps}", f"student.steps={self.student_steps}",
                f"data.overlap={INFER_OVERLAP}", *grid]

    def pretrain_overrides(self) -> list[str]:
        z, y, x = self.pretrain_crop
        return [f"train.steps={self.pretrain_steps}", f"crop.size=[{z},{y},{x}]", "mask.patch_size=[16,16,16]",
                "augment.affine_prob=0"]

    def train_overrides(self) -> list[str]:
        z, y, x = self.patch
        return [f"train.steps={self.train_steps}", f"data.patch_size=[{z},{y},{x}]", "model.preset=tiny",
                f"train.val_every={self.val_every}", "data.val_cases=1", f"optim.lr={TRAIN_LR}",
                f"data.lesion_fraction={TRAIN_LESION_FRACTION}", f"infer.mirror={str(TEST_MIRROR).lower()}",
                f"infer.overlap={INFER_OVERLAP}", f"loss.max_supervised_stride={TRAIN_SUPERVISED_STRIDE}"]


# AdamW at 2e-3 rather than the 3e-4 default: on the phantom's few-voxel lesions the network sits at
# the all-background solution for the first ~250 steps; at 1e-3 (UNet) it was still there after 600.
TRAIN_LR = 2e-3
# Every patch centred on a lesion voxel (nnU-Net's 1/3 is for 250k-step runs). On the demo cohort at 1/3
# (one lesion patch per batch of 2) the loss sat on the all-background plateau until step ~400 of 500
# and every held-out lesion probability stayed below 0.5 (no lesion found); at 1.0 it leaves the plateau
# at ~300. Lesion-centred 32×64×64 patches (128×256×256 mm) still hold mostly normal tissue.
TRAIN_LESION_FRACTION = 1.0
# No test-time mirroring in the demo (the model's infer.mirror, which `anato predict` then follows): the
# 8 flips make prediction 8 times the work, 52-65 s of the full demo would become ~7-8 minutes and break
# its 15-minute budget, and the quick demo only shows that every stage runs.
TEST_MIRROR = False
# Deep supervision on the full-resolution head only (the stage-3 default also supervises strides 2 and 4, 8
# and 16 mm cells, coarser than most phantom lesions), as the results table's protocol does. On the full
# demo's cohorts (one seed, 2026-12-06; 1 thread each): 700 steps at stride 1 held-out Dice 0.396, FPV 8.5 ml;
# at stride 4, 700 steps Dice 0.351, FPV 10.2 ml and 800 steps Dice 0.383, FPV 8.9 ml. All three found the
# same 3 of 10 lesions (every one of 5 ml or more, none smaller): no difference one seed can show, so the
# cheaper schedule.
TRAIN_SUPERVISED_STRIDE = 1
# Sliding windows overlapping by 1/4 of a window per axis instead of 1/2 (stage-1 organ maps and stage-3
# prediction), ~2.4 times fewer windows, as the results table's protocol does.
INFER_OVERLAP = 0.25

QUICK = DemoPlan(organ_cases=2, train_cases=3, test_cases=1, spacing=8.0, teacher_steps=15, student_steps=15,
                 pretrain_steps=10, train_steps=15, patch=(32, 32, 32), val_every=15, pretrain_crop=(32, 32, 32))
# Sized for 15 minutes on 2 CPU cores, measured per step: teacher ~0.48 s (48³, batch 2), anatoseg tiny ~0.46 s
# (32×64×64, batch 2). More teacher steps give better organ prompts (the results table gives the teacher 600
# at 6 mm) but do not fit the budget.
# History (`time make demo`, 2 cores): phantom v1, 2026-12-02: 9 min 15 s, held-out Dice 0.344, 5 of 8
# lesions, FPV 0.56 ml per case. Phantom v2 (10 test lesions, 5 of them under 1 ml) with teacher 500 /
# student 150 steps at 4 mm, stage 2 on 32³ crops, 800 stage-3 steps at stride 4 (2026-12-06): 16 min 19 s,
# Dice 0.392, 3 of 10 lesions, FPV 8.9 ml: over budget. This plan: README, "make demo".
FULL = DemoPlan(organ_cases=4, train_cases=6, test_cases=3, spacing=4.0, teacher_steps=450, student_steps=100,
                pretrain_steps=100, train_steps=600, patch=(32, 64, 64), val_every=300, stage1_spacing=6.0)
