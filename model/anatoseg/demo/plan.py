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

    def stage1_overrides(self) -> list[str]:
        return [f"teacher.steps={self.teacher_steps}", f"student.steps={self.student_steps}"]

    def pretrain_overrides(self) -> list[str]:
        return [f"train.steps={self.pretrain_steps}", "crop.size=[32,32,32]", "mask.patch_size=[8,8,8]",
                "augment.affine_prob=0"]

    def train_overrides(self) -> list[str]:
        z, y, x = self.patch
        return [f"train.steps={self.train_steps}", f"data.patch_size=[{z},{y},{x}]", "model.preset=tiny",
                f"train.val_every={self.val_every}", "data.val_cases=1", f"optim.lr={TRAIN_LR}",
                f"data.lesion_fraction={TRAIN_LESION_FRACTION}", f"infer.mirror={str(TEST_MIRROR).lower()}"]


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

QUICK = DemoPlan(organ_cases=2, train_cases=3, test_cases=1, spacing=8.0, teacher_steps=15, student_steps=15,
                 pretrain_steps=10, train_steps=15, patch=(32, 32, 32), val_every=15)
# Sized for 15 minutes on 2 CPU cores, measured per step at these patches: teacher 0.25-0.32 s (48³,
# batch 2), anatoseg tiny 0.30-0.42 s (32×64×64, batch 2), by machine. More teacher steps give better
# organ prompts (see the results table, which gives the teacher 1200) but do not fit the budget.
# Measured `time make demo` on 2 cores, 2026-12-02: 9 min 15 s (demo 550 s: stage 1 223 s, stage 3 238 s,
# prediction 52 s); held-out Dice 0.344, 5 of 8 lesions, 7 false-positive components (0.56 ml per case).
# After the (Z, Y, X) axis change (2026-12-05, same seeds, stage 1 draws over other axes): held-out Dice 0.430,
# 4 of 8 lesions, 6 false-positive components (0.81 ml per case); 1299 s on 2 cores shared with other jobs
# (stage 1 846 s under contention, stage 3 345 s, prediction 65 s).
# The same plan with 500 stage-3 steps ran 694 s on the slower machine of 2026-11-24 (stage 3 226 s).
FULL = DemoPlan(organ_cases=4, train_cases=6, test_cases=3, spacing=4.0, teacher_steps=500, student_steps=150,
                pretrain_steps=100, train_steps=800, patch=(32, 64, 64), val_every=400)
