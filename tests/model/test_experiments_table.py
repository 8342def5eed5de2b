"""The results table's arithmetic and rendering (anatoseg.experiments.table; the full run is too long for CI)."""

from __future__ import annotations

import numpy as np
import pytest

from anatoseg.experiments import table as results_table
from anatoseg.metrics.autopet import evaluate_case


def _case(name: str, truth_boxes, pred_boxes) -> dict:
    truth, pred = np.zeros((20, 20, 20), bool), np.zeros((20, 20, 20), bool)
    for box in truth_boxes:
        truth[box] = True
    for box in pred_boxes:
        pred[box] = True
    return evaluate_case(pred, truth, (2.0, 2.0, 2.0), case=name).to_dict()


def test_summary_is_mean_and_sd_over_the_cases_where_a_column_applies():
    lesion_a, lesion_b = np.s_[2:6, 2:6, 2:6], np.s_[12:16, 12:16, 12:16]
    cases = [_case("hit", [lesion_a, lesion_b], [lesion_a]),  # Dice 2/3, one of two lesions found
             _case("perfect", [lesion_a], [lesion_a]),
             _case("negative", [], [lesion_b])]  # no lesion: only its false-positive volume counts
    row = results_table.summarize(cases)
    assert row["n_cases"] == 3 and row["n_positive"] == 2
    dice_mean, dice_sd = row["dice"]
    assert dice_mean == pytest.approx((2 / 3 + 1) / 2) and dice_sd == pytest.approx(np.std([2 / 3, 1], ddof=1))
    assert row["sensitivity"][0] == pytest.approx(0.75)  # per-case 1/2 and 1/1
    assert row["pooled_sensitivity"] == pytest.approx(2 / 3)  # 2 of 3 lesions over all cases
    fpv = 64 * 8 / 1000  # the negative case's 64 voxels of 8 mm³, in ml
    assert row["fpv_ml"][0] == pytest.approx(fpv / 3)
    assert results_table.mean_sd([None, None]) == (None, None)
    assert results_table.mean_sd([0.5]) == (0.5, 0.0)


def test_markdown_holds_every_variant_the_budget_and_the_command():
    cases = [_case("perfect", [np.s_[2:6, 2:6, 2:6]], [np.s_[2:6, 2:6, 2:6]])]
    results = {
        "variants": {"full method": {"summary": results_table.summarize(cases), "seconds": {"train": 12.0}},
                     "SwinUNETR": {"arch": "swinunetr", "error": "RuntimeError: out of memory"}},
        "stage1_dice": {"teacher": 0.61, "student": 0.64},
        "meta": {"test_cases": 1, "test_positive": 1, "steps": 600, "batch_size": 2, "patch": "32×64×64",
                 "lr": 0.002, "lesion_fraction": 1.0, "preset": "tiny", "seed": 0, "train_cases": 12, "val_cases": 2,
                 "spacing": 4.0,
                 "command": "python -m anatoseg.experiments.table runs/table", "machine": "x86_64 CPU, 2 cores",
                 "seconds_total": 3600.0, "seconds": {"cohort": 60.0, "stage1": 400.0, "stage2": 200.0}}}
    text = results_table.markdown(results)
    assert "| full method | 1.000 ± 0.000 | 0.000 ± 0.000 | 0.000 ± 0.000 | 1.000 ± 0.000 | 1.000 | 12 |" in text
    assert "| SwinUNETR | failed: RuntimeError: out of memory |" in text
    assert "teacher 0.610, student 0.640" in text
    assert "`python -m anatoseg.experiments.table runs/table`" in text and "total 3600 s" in text
    assert "600 steps" in text and "lr 0.002" in text and "lesion-centred patch share 1.00" in text
