"""`anato demo --quick`: every stage end to end on phantoms, with all its outputs."""

import json

import pytest
from typer.testing import CliRunner

pytest.importorskip("nibabel")

from anatoseg.cli import app  # noqa: E402


@pytest.mark.slow
def test_quick_demo_writes_every_output(tmp_path):
    out = tmp_path / "demo"
    result = CliRunner().invoke(app, ["demo", str(out), "--quick", "--no-progress"])
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["plan"] == "quick"
    assert (out / "stage1" / "stage1.pt").exists() and (out / "stage2" / "encoders.pt").exists()
    assert (out / "stage3" / "model.pt").exists()
    predictions = sorted((out / "predictions").glob("*.nii.gz"))
    assert len(predictions) == 1 and len(summary["pictures"]) == 1
    assert (out / "png" / (predictions[0].name.replace(".nii.gz", ".png"))).stat().st_size > 10_000
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["cases"][0]["dice"] is not None
    # one record per GT lesion, binned by size; the bins count the same lesions as the metrics table
    lesions, by_size = summary["lesions"], summary["lesions_by_size"]
    case = metrics["cases"][0]
    assert len(lesions) == case["tp"] + case["fn"] > 0
    assert sum(entry["n"] for entry in by_size.values()) == len(lesions)
    assert sum(entry["tp"] for entry in by_size.values()) == sum(r["detected"] for r in lesions) == case["tp"]
    assert list(by_size) == ["<1 ml", "1-5 ml", "5-20 ml", ">20 ml"]
    assert all(isinstance(r["site"], str) and r["contrast"] > 0 for r in lesions)  # from the phantom's lesion list
    assert "lesions found by size: <1 ml " in result.output
    for stage in ("phantom cohorts", "stage 1: organ pseudo-labels", "stage 2: cross-modal pretraining",
                  "stage 3: segmentation training", "whole-body prediction"):
        assert stage in summary["seconds"]


def test_demo_refuses_a_non_empty_folder(tmp_path):
    (tmp_path / "keep.txt").write_text("mine")
    result = CliRunner().invoke(app, ["demo", str(tmp_path), "--quick"])
    assert result.exit_code != 0
    assert (tmp_path / "keep.txt").read_text() == "mine"


@pytest.mark.parametrize("plan_name", ["FULL", "QUICK"])
def test_demo_plans_give_valid_configs_for_every_stage(plan_name):
    """Every stage accepts the plan's overrides; stage 2's mask patch is no finer than the network's deepest
    stride (the alignment term would compare no token), and stage 3 predicts as it was configured."""
    from anatoseg.demo import plan as plans
    from anatoseg.nets.config import NetConfig
    from anatoseg.stage1 import build_config
    from anatoseg.stage2.config import PretrainConfig
    from anatoseg.stage3.config import Config

    plan = getattr(plans, plan_name)
    stage1 = build_config(overrides=plan.stage1_overrides())
    assert (stage1.teacher.steps, stage1.student.steps) == (plan.teacher_steps, plan.student_steps)
    if plan.stage1_spacing is not None:
        assert tuple(stage1.data.spacing) == (plan.stage1_spacing,) * 3
    stage2 = PretrainConfig.build(None, plan.pretrain_overrides())
    assert tuple(stage2.crop.size) == plan.pretrain_crop
    assert min(stage2.mask.patch_size) >= NetConfig.preset(stage2.model.preset).divisor
    stage3 = Config.build(None, plan.train_overrides())
    assert stage3.train.steps == plan.train_steps and tuple(stage3.data.patch_size) == plan.patch
    assert stage3.infer.overlap == plans.INFER_OVERLAP and stage3.infer.mirror is plans.TEST_MIRROR
    assert stage3.loss.max_supervised_stride == plans.TRAIN_SUPERVISED_STRIDE

