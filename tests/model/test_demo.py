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
    for stage in ("phantom cohorts", "stage 1: organ pseudo-labels", "stage 2: cross-modal pretraining",
                  "stage 3: segmentation training", "whole-body prediction"):
        assert stage in summary["seconds"]


def test_demo_refuses_a_non_empty_folder(tmp_path):
    (tmp_path / "keep.txt").write_text("mine")
    result = CliRunner().invoke(app, ["demo", str(tmp_path), "--quick"])
    assert result.exit_code != 0
    assert (tmp_path / "keep.txt").read_text() == "mine"
