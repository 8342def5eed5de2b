"""Lesion-level FROC, false positives by organ and sensitivity by lesion attribute, on hand-built
candidates and volumes whose answers are worked out in the comments."""

import numpy as np
import pytest

from anatoseg.data.labels import ORGAN_NAMES
from anatoseg.metrics.breakdown import (
    OTHER,
    false_positives_by_organ,
    lesion_records,
    sensitivity_by,
    size_bin,
)
from anatoseg.metrics.froc import (
    CaseScores,
    case_scores,
    case_scores_from_masks,
    extract_candidates,
    froc,
)


def _three_cases():
    # case A, 2 lesions: 0.9 hits L0; 0.8 FP; 0.6 hits L1; 0.3 hits L0 again (a duplicate: neither TP nor FP); 0.2 FP
    a = CaseScores.from_matches([0.9, 0.8, 0.6, 0.3, 0.2], [[0], [], [1], [0], []], n_lesions=2)
    # case B, 1 lesion: 0.7 FP; 0.5 hits L0; 0.1 FP
    b = CaseScores.from_matches([0.7, 0.5, 0.1], [[], [0], []], n_lesions=1)
    # case C, no lesion: 0.95 FP
    c = CaseScores.from_matches([0.95], [[]], n_lesions=0)
    return [a, b, c]


def test_froc_on_known_candidates():
    curve = froc(_three_cases(), fp_rates=(0.25, 0.5, 1.0, 2.0, 4.0))
    assert (curve.n_lesions, curve.n_cases) == (3, 3)
    # threshold:  .95   .9   .8   .7   .6   .5   .2   .1   (0.3 is a duplicate's score: no operating point)
    # detected:    0    1    1    1    2    3    3    3   of 3 lesions
    # FP:          1    1    2    3    3    3    4    5   over 3 cases
    np.testing.assert_allclose(curve.thresholds, [0.95, 0.9, 0.8, 0.7, 0.6, 0.5, 0.2, 0.1])
    np.testing.assert_allclose(curve.sensitivity, np.array([0, 1, 1, 1, 2, 3, 3, 3]) / 3)
    np.testing.assert_allclose(curve.fp_per_case, np.array([1, 1, 2, 3, 3, 3, 4, 5]) / 3)
    assert curve.at == pytest.approx({0.25: 0.0, 0.5: 1 / 3, 1.0: 1.0, 2.0: 1.0, 4.0: 1.0})
    assert curve.mean == pytest.approx((0 + 1 / 3 + 3) / 5)


def test_froc_default_rates_and_missed_lesion():
    case = CaseScores.from_matches([0.4], [[]], n_lesions=2)  # two lesions never hit
    curve = froc([case])
    assert list(curve.at) == [0.5, 1.0, 2.0, 4.0] and all(v == 0.0 for v in curve.at.values())
    with pytest.raises(ValueError, match="lesion index"):
        CaseScores.from_matches([0.4], [[2]], n_lesions=2)


def _prob_case():
    prob, gt = np.zeros((10, 10, 10)), np.zeros((10, 10, 10), dtype=np.uint8)
    gt[1:3, 1:3, 1:3] = 1
    prob[1:3, 1:3, 1:3] = 0.5
    prob[2, 2, 2] = 0.8        # the lesion's candidate: max 0.8
    prob[1:3, 6:8, 6] = 0.4    # FP blob, max 0.4
    prob[5, 5, 5], prob[6, 6, 6] = 0.3, 0.6  # corner neighbours: two candidates under 18-connectivity
    prob[8, 1, 1] = 0.05       # below the candidate threshold
    return prob, gt


def test_candidates_from_probability_map():
    prob, gt = _prob_case()
    labels, scores = extract_candidates(prob, threshold=0.1)
    assert labels.shape == prob.shape and sorted(scores) == pytest.approx([0.3, 0.4, 0.6, 0.8])
    case = case_scores(prob, gt)
    np.testing.assert_allclose(case.lesion_scores, [0.8])
    np.testing.assert_allclose(np.sort(case.fp_scores), [0.3, 0.4, 0.6])
    masks = [(labels == k + 1, s) for k, s in enumerate(scores)]
    again = case_scores_from_masks(masks, gt)
    np.testing.assert_allclose(again.lesion_scores, case.lesion_scores)
    np.testing.assert_allclose(np.sort(again.fp_scores), np.sort(case.fp_scores))
    curve = froc([case, case_scores(np.zeros_like(prob), gt)])  # second case: lesion missed, no FP
    np.testing.assert_allclose(curve.fp_per_case, [0.0, 0.5, 1.0, 1.5])  # thresholds 0.8, 0.6, 0.4, 0.3
    assert curve.at == pytest.approx({0.5: 0.5, 1.0: 0.5, 2.0: 0.5, 4.0: 0.5})


SPACING = (2.0, 2.0, 2.0)  # voxel = 0.008 ml
LIVER, SPLEEN = 4, 5


def test_false_positives_by_organ():
    organs = np.zeros((10, 10, 10), dtype=np.uint8)
    organs[0:5] = LIVER
    organs[5:8] = SPLEEN
    pred, gt = np.zeros_like(organs), np.zeros_like(organs)
    pred[1, 1, 1:5] = 1           # FP in the liver, 4 voxels
    pred[7:9, 3, 3] = 1           # FP: 1 voxel spleen (z 7), 1 background (z 8): tie -> other (lowest id, 0)
    pred[6, 6, 5:9] = 1
    pred[8, 6, 6] = 0             # separate FP: 4 voxels in the spleen at z 6
    pred[9, 9, 8:10] = 1          # FP in background, 2 voxels -> other
    pred[3, 7:9, 7] = 1           # touches the lesion: not a false positive
    gt[3, 8, 7:9] = 1
    fps = false_positives_by_organ(pred, gt, organs, SPACING, names={LIVER: "liver", SPLEEN: "spleen"})
    assert {k: v["count"] for k, v in fps.items()} == {"liver": 1, "spleen": 1, OTHER: 2}
    assert fps["liver"]["volume_ml"] == pytest.approx(4 * 0.008)
    assert fps["spleen"]["volume_ml"] == pytest.approx(4 * 0.008)
    assert fps[OTHER]["volume_ml"] == pytest.approx(4 * 0.008)
    full = false_positives_by_organ(pred, gt, organs, SPACING)  # the project's organ set
    assert set(full) == {*list(ORGAN_NAMES.values())[1:], OTHER}
    assert full["liver"]["count"] == 1 and full["spleen"]["count"] == 1


def test_sensitivity_by_size_and_tag():
    spacing = (5.0, 5.0, 5.0)  # voxel = 0.125 ml
    gt, pred = np.zeros((20, 12, 12), dtype=np.uint8), np.zeros((20, 12, 12), dtype=np.uint8)
    gt[0, 0, 0] = 1                 # lesion 1: 0.125 ml -> <1 ml, found
    gt[2:4, 0:2, 0:2] = 1           # lesion 2: 8 voxels = 1 ml -> 1-5 ml, missed
    gt[5:8, 0:4, 0:4] = 1           # lesion 3: 48 voxels = 6 ml -> 5-20 ml, found
    gt[10:18, 0:5, 0:5] = 1         # lesion 4: 200 voxels = 25 ml -> >20 ml, missed
    pred[0, 0, 0] = pred[6, 1, 1] = 1
    organs = np.zeros_like(gt)
    organs[9:] = 11                 # lesion 4 in the skeleton
    records = lesion_records(pred, gt, spacing, tags={1: {"site": "node"}, 3: {"site": "node"}, 4: {"site": "bone"}},
                             organs=organs)
    assert [r["size"] for r in records] == ["<1 ml", "1-5 ml", "5-20 ml", ">20 ml"]
    assert [r["detected"] for r in records] == [True, False, True, False]
    assert [r["organ"] for r in records] == [OTHER, OTHER, OTHER, "skeleton"]
    by_size = sensitivity_by(records)
    assert list(by_size) == ["<1 ml", "1-5 ml", "5-20 ml", ">20 ml"]
    assert [by_size[k]["sensitivity"] for k in by_size] == [1.0, 0.0, 1.0, 0.0]
    by_site = sensitivity_by(records, "site")  # lesion 2 has no tag and is left out
    assert by_site == {"node": {"tp": 2, "n": 2, "sensitivity": 1.0}, "bone": {"tp": 0, "n": 1, "sensitivity": 0.0}}
    assert sensitivity_by([], "size")["<1 ml"]["sensitivity"] is None
    assert size_bin(0.99) == "<1 ml" and size_bin(20.0) == ">20 ml"


def test_a_body_wide_blob_touching_every_lesion_is_a_false_positive_not_a_detection():
    """A candidate must overlap a lesion with IoU >= MIN_IOU: a low-probability blob over the whole volume
    that touches two lesions hits neither (it used to 'detect' both at one false positive per case)."""
    gt = np.zeros((12, 12, 12), dtype=np.uint8)
    gt[2:4, 2:4, 2:4] = 1
    gt[8:10, 8:10, 8:10] = 1
    blob = np.full(gt.shape, 0.2)
    case = case_scores(blob, gt)
    assert np.all(np.isneginf(case.lesion_scores)) and case.fp_scores.tolist() == pytest.approx([0.2])
    again = case_scores_from_masks([(blob > 0.1, 0.2)], gt)
    assert np.all(np.isneginf(again.lesion_scores)) and again.fp_scores.tolist() == pytest.approx([0.2])
    # a candidate on a lesion, twice its size (IoU 0.5), is a hit
    tight = np.zeros(gt.shape)
    tight[2:4, 2:4, 1:5] = 0.9
    np.testing.assert_allclose(case_scores(tight, gt).lesion_scores, [0.9, -np.inf])
