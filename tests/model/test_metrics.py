"""autoPET metrics on hand-built cases whose values are worked out by hand in the comments."""

import pytest

pytest.importorskip("nibabel")

import numpy as np  # noqa: E402

from anatoseg.metrics import aggregate, components, evaluate_case, hd95  # noqa: E402

SPACING = (2.0, 2.0, 2.0)  # one voxel = 8 mm^3 = 0.008 ml
VOXEL_ML = 0.008


def empty(shape=(20, 20, 20)):
    return np.zeros(shape, dtype=np.uint8)


def test_missed_lesion_and_false_positive_component():
    gt, pred = empty(), empty()
    gt[2:4, 2:4, 2:4] = 1          # lesion A: 8 voxels
    gt[15, 15, 15] = 1             # lesion B: 1 voxel, missed
    pred[2:4, 2:4, 2:4] = 1        # A found exactly
    pred[10, 2:5, 10] = 1          # FP component: 3 voxels far from any lesion
    m = evaluate_case(pred, gt, SPACING, case="a")
    # Dice = 2*8 / (11 + 9); FPV = 3 voxels; FNV = 1 voxel.
    assert m.dice == pytest.approx(16 / 20)
    assert m.fpv_ml == pytest.approx(3 * VOXEL_ML)
    assert m.fnv_ml == pytest.approx(1 * VOXEL_ML)
    assert (m.tp, m.fp, m.fn) == (1, 1, 1)
    assert m.sensitivity == pytest.approx(0.5)
    assert m.gt_volume_ml == pytest.approx(9 * VOXEL_ML)
    assert m.pred_volume_ml == pytest.approx(11 * VOXEL_ML)
    assert m.positive


def test_partial_overlap_is_a_hit_with_no_fp_volume():
    gt, pred = empty(), empty()
    gt[5:10, 5:10, 5:10] = 1
    pred[9:14, 5:10, 5:10] = 1  # one slab of 25 voxels overlaps
    m = evaluate_case(pred, gt, SPACING)
    assert m.fpv_ml == 0.0 and m.fnv_ml == 0.0
    assert (m.tp, m.fp, m.fn) == (1, 0, 0)
    assert m.dice == pytest.approx(2 * 25 / 250)


def test_edge_neighbours_join_corner_neighbours_do_not():
    gt = empty()
    gt[5, 5, 5] = 1
    edge = empty()
    edge[5, 5, 5] = edge[6, 6, 5] = 1      # shares an edge with the lesion voxel: same component
    corner = empty()
    corner[5, 5, 5] = corner[6, 6, 6] = 1  # shares only a corner: a separate component
    m_edge = evaluate_case(edge, gt, SPACING)
    m_corner = evaluate_case(corner, gt, SPACING)
    assert (m_edge.fp, m_edge.fpv_ml) == (0, 0.0)
    assert m_corner.fp == 1
    assert m_corner.fpv_ml == pytest.approx(VOXEL_ML)
    assert components(edge)[1] == 1 and components(corner)[1] == 2


def test_ground_truth_split_at_a_corner_counts_two_lesions():
    gt, pred = empty(), empty()
    gt[5, 5, 5] = gt[6, 6, 6] = 1  # two lesions touching at a corner
    pred[5, 5, 5] = 1
    m = evaluate_case(pred, gt, SPACING)
    assert (m.tp, m.fn) == (1, 1)
    assert m.fnv_ml == pytest.approx(VOXEL_ML)
    gt[6, 6, 6] = 0
    gt[6, 6, 5] = 1  # now they share an edge: one lesion, found
    m = evaluate_case(pred, gt, SPACING)
    assert (m.tp, m.fn, m.fnv_ml) == (1, 0, 0.0)


def test_negative_case_counts_only_false_positives():
    pred = empty()
    pred[3, 3, 3:5] = 1
    m = evaluate_case(pred, empty(), SPACING, case="neg")
    assert not m.positive
    assert m.fpv_ml == pytest.approx(2 * VOXEL_ML)
    assert m.fp == 1
    assert m.dice is None and m.fnv_ml is None and m.sensitivity is None and m.hd95_mm is None


def test_hd95_by_hand():
    a, b = empty(), empty()
    a[4, 4, 4] = 1
    b[7, 4, 4] = 1
    assert hd95(a, b, (2.0, 1.0, 1.0)) == pytest.approx(6.0)  # 3 voxels along x at 2 mm
    assert hd95(a, a, SPACING) == 0.0
    assert hd95(a, empty(), SPACING) is None
    # A 1x1x3 bar against its middle voxel: distances 0 (middle) and 1 voxel (ends) -> P95 of
    # {0, 1, 1} is 1 voxel = 2 mm; the other direction is 0.
    bar = empty()
    bar[4, 4, 3:6] = 1
    assert hd95(a, bar, SPACING) == pytest.approx(np.percentile([0.0, 2.0, 2.0], 95))


def test_missed_case_has_zero_dice_and_full_fnv():
    gt = empty()
    gt[1:3, 1:3, 1:3] = 1
    m = evaluate_case(empty(), gt, SPACING)
    assert m.dice == 0.0 and m.fnv_ml == pytest.approx(8 * VOXEL_ML) and m.sensitivity == 0.0
    assert m.hd95_mm is None


def test_aggregate_uses_positive_cases_for_dice_and_fnv():
    gt, pred = empty(), empty()
    gt[2:4, 2:4, 2:4] = 1
    gt[15, 15, 15] = 1
    pred[2:4, 2:4, 2:4] = 1
    pred[10, 2:5, 10] = 1
    positive = evaluate_case(pred, gt, SPACING, "pos")
    neg_pred = empty()
    neg_pred[3, 3, 3:5] = 1
    negative = evaluate_case(neg_pred, empty(), SPACING, "neg")
    mean = aggregate([positive, negative])
    assert mean["n_cases"] == 2 and mean["n_positive"] == 1
    assert mean["dice"] == pytest.approx(0.8)
    assert mean["fnv_ml"] == pytest.approx(VOXEL_ML)
    assert mean["fpv_ml"] == pytest.approx((3 + 2) * VOXEL_ML / 2)
    assert (mean["tp"], mean["fp"], mean["fn"]) == (1, 2, 1)
    assert mean["lesion_sensitivity"] == pytest.approx(0.5)


def test_anisotropic_spacing_scales_volumes():
    gt, pred = empty(), empty()
    pred[1, 1, 1] = 1
    m = evaluate_case(pred, gt, (4.0, 2.5, 3.0))
    assert m.fpv_ml == pytest.approx(4.0 * 2.5 * 3.0 / 1000)
