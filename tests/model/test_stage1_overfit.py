"""The stage-1 teacher's network and loss learn the organs of one case by heart (issue 18, item 1).

On one diagnostic phantom case the urinary bladder and the pancreas stayed at Dice 0 after
400 teacher steps on random 32^3 patches (8 mm, lr 2e-2, no augmentation), even inside a patch
centred on the bladder. This test separates the suspects: it trains a fresh
:class:`~anatoseg.stage1.net.OrganUNet` with the teacher's loss (:func:`masked_ce_dice`), input
(:func:`network_input`: coordinates, CT, soft-tissue window) and optimiser on one fixed batch:
two patches of the case's working grid, centred on the bladder and on the pancreas. Labels
overwritten by another organ, a class width or index off by one, a loss that drops a present
class, or an input that cannot tell urine from the surrounding tissue would each keep an organ
at 0 here; every organ the patches hold with at least :data:`MIN_VOXELS` voxels must exceed
Dice 0.9 (measured: all 0.99-1.00 at 150 steps).

None of those is the defect: the organs leave the all-background start one at a time, and how
soon depends on the share of background in the batch. With 24^3 patches (68 % background) every
organ here is learnt within 150 steps; with 32^3 patches (78 %, lr 1e-2) the bladder is the last
to leave background, between 350 and 400 steps of seeing it in every batch, so on random patches,
where it is in about one patch in five, 400 steps never reach it. The plain cross-entropy is a
mean over voxels, so background sets its pace. With half of it class-balanced
(``class_balance`` 0.5 in :func:`masked_ce_dice`: every present class weighs the same) the 32^3
batch is learnt in 130 steps, the bladder included (at 100 steps: bladder 0.94, pancreas 0.84).

Organs under :data:`MIN_VOXELS` voxels in the batch are left out: at 8 mm the oesophagus and
ureters are one or two voxels across, and only a rim of the breasts enters the patches; their
Dice swings with a single voxel.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from anatoseg.data.labels import NUM_ORGANS, ORGAN_IDS, ORGAN_NAMES
from anatoseg.data.phantom import generate_cohort
from anatoseg.stage1 import build_config
from anatoseg.stage1.augment import crop_padded
from anatoseg.stage1.data import load_source, make_preprocessing
from anatoseg.stage1.inputs import ct_window, network_input
from anatoseg.stage1.losses import masked_ce_dice
from anatoseg.stage1.net import OrganUNet
from anatoseg.stage1.report import organ_dice
from anatoseg.training.optim import make_optimizer, optimizer_step

SPACING = 8.0
CLASS_BALANCE = 0.5
CENTRES = ("urinary_bladder", "pancreas")
MIN_VOXELS = 40

pytestmark = pytest.mark.usefixtures("one_thread")


def centred_box(organs: np.ndarray, organ: int, patch: int) -> tuple[slice, slice, slice]:
    """A ``patch``-sided box around the median voxel of ``organ`` in ``organs`` (Z, Y, X), kept inside the
    volume where it fits (the caller pads where it does not)."""
    centre = [int(np.median(axis)) for axis in np.nonzero(organs == organ)]
    starts = [max(0, min(c - patch // 2, n - patch)) for c, n in zip(centre, organs.shape, strict=True)]
    return tuple(slice(s, s + patch) for s in starts)


def fit_fixed_batch(root, patch: int, steps: int, class_balance: float) -> dict[str, float]:
    """Train a fresh teacher network ``steps`` steps on the two ``patch``-sided patches of one case centred on
    :data:`CENTRES`; the Dice on that batch of every organ it holds with at least :data:`MIN_VOXELS` voxels."""
    generate_cohort(root, cases=1, seed=11, spacing=SPACING, domain="diagnostic", progress=False)
    config = build_config(overrides=[f"data.spacing={SPACING},{SPACING},{SPACING}",
                                     f"data.patch_size={patch},{patch},{patch}", f"teacher.steps={steps}",
                                     "teacher.lr=1e-2", "teacher.schedule=constant"])
    [case] = load_source(root, make_preprocessing(config.data.spacing), progress=False)
    inputs = network_input(case.work.image[:1], config.coordinates)
    boxes = [centred_box(case.work.organs, ORGAN_IDS[name], patch) for name in CENTRES]
    image = torch.from_numpy(np.stack([crop_padded(inputs, box) for box in boxes])).float()
    target = torch.from_numpy(np.stack([crop_padded(case.work.organs, box, fill=0) for box in boxes])).long()
    mask = torch.ones_like(target, dtype=torch.bool)
    torch.manual_seed(0)
    net = OrganUNet(image.shape[1], NUM_ORGANS + 1, config.widths, ct_window(config))
    optimizer, scheduler = make_optimizer(net.parameters(), config.teacher, steps)
    for _ in range(steps):
        loss = masked_ce_dice(net(image), target, mask, class_balance)
        optimizer_step(loss, optimizer, scheduler, net.parameters())
    with torch.no_grad():
        predicted = net.eval()(image).argmax(1)
    dice = organ_dice(predicted.numpy(), target.numpy())
    counts = np.bincount(target.numpy().ravel(), minlength=NUM_ORGANS + 1)
    assessed = {ORGAN_NAMES[k]: round(dice[ORGAN_NAMES[k]], 3) for k in range(1, NUM_ORGANS + 1)
                if counts[k] >= MIN_VOXELS}
    assert set(CENTRES) <= set(assessed), counts
    return assessed


@pytest.mark.parametrize(("patch", "steps", "class_balance"), [(24, 150, 0.0), (32, 130, CLASS_BALANCE)],
                         ids=["P24-plain-150", f"P32-balance{CLASS_BALANCE}-130"])
def test_teacher_network_learns_bladder_and_pancreas_patches_of_one_case(tmp_path, patch, steps, class_balance):
    assessed = fit_fixed_batch(tmp_path / "case", patch, steps, class_balance)
    low = {name: value for name, value in assessed.items() if value <= 0.9}
    assert not low, f"organs below Dice 0.9 on the batch they trained on: {low}; all assessed: {assessed}"
