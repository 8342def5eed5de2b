"""End to end: ``anato train`` for a few steps on phantom cases, then ``anato predict`` writes masks on
the PET grid with the PET file's affine, also for a PET stored in another orientation, with organ
prompts from a folder, from the dataset's own organ maps or from the stage-1 model named in the checkpoint;
organ post-processing (``--suppress-organs``) and test-time mirroring options."""

import csv
import shutil
import sys

import nibabel as nib
import numpy as np
import pytest
from typer.testing import CliRunner

from anatoseg.checkpoint import load_checkpoint, make_checkpoint, save_checkpoint
from anatoseg.cli import app, main
from anatoseg.data.labels import NUM_ORGANS, ORGAN_IDS
from anatoseg.data.layouts import find_cases
from anatoseg.data.nifti import save_nifti
from anatoseg.data.phantom import generate_cohort
from anatoseg.errors import AnatoError, ConfigError
from anatoseg.inference.postprocess import suppress_in_organs
from anatoseg.nets import NetConfig, build_network
from anatoseg.stage1.config import Stage1Config
from anatoseg.stage1.data import make_preprocessing
from anatoseg.stage1.model import save_organ_model
from anatoseg.stage1.net import OrganUNet

from cli_testing import run_anato

pytestmark = pytest.mark.usefixtures("one_thread")


def _invoke(*args):
    result = CliRunner().invoke(app, [str(a) for a in args])
    if result.exception is not None and not isinstance(result.exception, (AnatoError, SystemExit)):
        raise result.exception
    return result


def _save_lps(source, target):
    """``source`` NIfTI saved to ``target`` with x and y reversed: the same image, stored in LPS order."""
    image = nib.load(str(source))
    flip = np.diag([-1.0, -1.0, 1.0, 1.0])
    flip[:2, 3] = np.array(image.shape[:2]) - 1
    save_nifti(target, np.asarray(image.dataobj)[::-1, ::-1], image.affine @ flip)
    return nib.load(str(target))


def _check_organ_sources(run, data, study, flipped, masks, tmp_path, monkeypatch, capsys):
    """Prompts from the dataset's own maps, none available (an error), or the checkpoint's stage-1 model."""
    cases = find_cases(data)
    # Without --organs the dataset's own organ maps (the labels `anato train` used) make the prompts.
    result = _invoke("predict", run / "model.pt", data, tmp_path / "own", "--no-progress")
    assert result.exit_code == 0, result.output
    assert "organ maps from: the dataset's own organ maps" in result.output
    assert "test-time mirroring on" in result.output  # the training config's default
    for files in cases:
        own = np.asarray(nib.load(str(tmp_path / "own" / f"{files.case_id}.nii.gz")).dataobj)
        np.testing.assert_array_equal(own, masks[files.case_id])

    # A prompt model needs organ maps (the LPS study has none): one line on stderr, exit 1.
    monkeypatch.setattr(sys, "argv", ["anato", "predict", str(run / "model.pt"), str(study), str(tmp_path / "x")])
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: the model uses organ prompts") and "\n" not in err
    assert not (tmp_path / "x").exists()

    # Without --organs the stage-1 model named in the checkpoint makes the prompts (an untrained one here).
    stage1 = Stage1Config(widths=(4, 4, 4, 4))
    with pytest.raises(ValueError, match="neither CT nor CT"):  # 2 inputs cannot hold 3 coordinates + the image
        save_organ_model(tmp_path / "bad1.pt", OrganUNet(2, NUM_ORGANS + 1, stage1.widths), stage1,
                         make_preprocessing((20, 20, 20)))
    save_organ_model(tmp_path / "stage1.pt", OrganUNet(5, NUM_ORGANS + 1, stage1.widths), stage1,
                     make_preprocessing((20, 20, 20)))
    checkpoint = load_checkpoint(run / "model.pt")
    meta = {**checkpoint["meta"], "organ_model": str(tmp_path / "stage1.pt")}
    save_checkpoint(tmp_path / "with_stage1.pt", make_checkpoint("stage3", meta, model=checkpoint["model"]))
    result = _invoke("predict", tmp_path / "with_stage1.pt", study, tmp_path / "stage1.nii.gz", "--no-progress")
    assert result.exit_code == 0, result.output
    assert "organ maps from: stage-1 model" in result.output
    out = nib.load(str(tmp_path / "stage1.nii.gz"))
    assert np.allclose(out.affine, flipped.affine) and out.shape == flipped.shape
    (tmp_path / "stage1.pt").unlink()
    result = _invoke("predict", tmp_path / "with_stage1.pt", study, tmp_path / "x.nii.gz")
    assert isinstance(result.exception, AnatoError) and "stage-1 organ model" in str(result.exception)


def _check_post_processing(run, data, study, masks, tmp_path, monkeypatch, capsys):
    """--suppress-organs removes the components mostly inside the chosen organs, and needs organ maps."""
    chosen = ("brain", "heart", "kidney_left", "kidney_right", "urinary_bladder")
    result = _invoke("predict", run / "model.pt", data, tmp_path / "post", "--suppress-organs", ",".join(chosen),
                     "--no-progress")
    assert result.exit_code == 0, result.output
    for files in find_cases(data):
        out = np.asarray(nib.load(str(tmp_path / "post" / f"{files.case_id}.nii.gz")).dataobj)
        organs = np.asarray(nib.load(str(files.organs)).dataobj)
        np.testing.assert_array_equal(out, suppress_in_organs(masks[files.case_id], organs,
                                                              [ORGAN_IDS[n] for n in chosen]))
    code, _, err = run_anato(monkeypatch, capsys, "predict", run / "model.pt", data, tmp_path / "x",
                             "--suppress-organs", "brain,kidneys")
    assert code == 1 and "unknown organ name(s) kidneys" in err and "\n" not in err.strip()
    # A network without prompts reads organ maps only for the post-processing, and then needs them.
    checkpoint = load_checkpoint(run / "model.pt")
    meta = {**checkpoint["meta"], "arch": "anatoseg_noprompt"}
    net = build_network("anatoseg_noprompt", NetConfig.from_dict(meta["net"]), meta["patch_size"])
    save_checkpoint(tmp_path / "plain.pt", make_checkpoint("stage3", meta, model=net.state_dict()))
    result = _invoke("predict", tmp_path / "plain.pt", study, tmp_path / "plain.nii.gz", "--no-mirror",
                     "--no-progress")
    assert result.exit_code == 0 and "organ maps from: none" in result.output and "mirroring off" in result.output
    code, _, err = run_anato(monkeypatch, capsys, "predict", tmp_path / "plain.pt", study, tmp_path / "y.nii.gz",
                             "--suppress-organs", "brain")
    assert code == 1 and err.strip().startswith("error: --suppress-organs needs organ maps") and "\n" not in err.strip()
    assert not (tmp_path / "y.nii.gz").exists()


def test_train_then_predict_on_the_pet_grid(tmp_path, monkeypatch, capsys):
    data = generate_cohort(tmp_path / "data", cases=2, seed=1, spacing=10.0, progress=False)
    run = tmp_path / "run"
    # --lr 3e-4: three AdamW steps at anatoseg's default 2e-3 push every voxel below 0.5, and the checks below
    # need a mask that is neither empty nor full
    result = _invoke("train", data, run, "--steps", 3, "--patch-size", "32,32,32", "--batch-size", 2,
                     "--set", "data.val_cases=1", "--set", "infer.overlap=0.25", "--set", "train.log_every=1",
                     "--lr", "3e-4", "--no-progress")
    assert result.exit_code == 0, result.output
    assert "model written to" in result.output
    with open(run / "log.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["step"] for r in rows] == ["1", "2", "3"] and 0.0 <= float(rows[-1]["val_dice"]) <= 1.0
    meta = load_checkpoint(run / "model.pt", kind="stage3")["meta"]
    assert meta["arch"] == "anatoseg" and meta["patch_size"] == [32, 32, 32] and meta["organ_model"] is None

    cases = find_cases(data)
    organs = tmp_path / "organs"  # stage-1 style folder: <case_id>.nii.gz
    organs.mkdir()
    for files in cases:
        shutil.copy(files.organs, organs / f"{files.case_id}.nii.gz")
    pred = tmp_path / "pred"
    result = _invoke("predict", run / "model.pt", data, pred, "--organs", organs, "--no-progress")
    assert result.exit_code == 0, result.output
    masks = {}
    for files in cases:
        suv = nib.load(str(files.pet))
        out = nib.load(str(pred / f"{files.case_id}.nii.gz"))
        assert out.shape == suv.shape and np.allclose(out.affine, suv.affine)
        assert out.get_data_dtype() == np.uint8
        masks[files.case_id] = np.asarray(out.dataobj)
        assert set(np.unique(masks[files.case_id])) <= {0, 1}
        assert 0 < masks[files.case_id].sum() < masks[files.case_id].size  # not a trivial mask

    # The same case stored in LPS voxel order: the mask comes back in that order, with that affine.
    files = cases[0]
    study = tmp_path / "lps" / "study"
    study.mkdir(parents=True)
    flipped = _save_lps(files.pet, study / "SUV.nii.gz")
    _save_lps(files.ctres, study / "CTres.nii.gz")
    (lps_case,) = find_cases(study)
    _save_lps(files.organs, organs / f"{lps_case.case_id}.nii.gz")  # stage-1 maps share the PET file's grid
    result = _invoke("predict", run / "model.pt", study, tmp_path / "lps.nii.gz",
                     "--organs", organs, "--no-progress")
    assert result.exit_code == 0, result.output
    out = nib.load(str(tmp_path / "lps.nii.gz"))
    assert np.allclose(out.affine, flipped.affine) and out.shape == flipped.shape
    np.testing.assert_array_equal(np.asarray(out.dataobj), masks[files.case_id][::-1, ::-1])

    _check_organ_sources(run, data, study, flipped, masks, tmp_path, monkeypatch, capsys)
    _check_post_processing(run, data, study, masks, tmp_path, monkeypatch, capsys)

    # A checkpoint whose weights do not fit the network its metadata names is refused.
    checkpoint = load_checkpoint(run / "model.pt")
    checkpoint["meta"]["net"]["widths"] = [8, 16, 32, 128]
    save_checkpoint(tmp_path / "bad.pt", make_checkpoint("stage3", checkpoint["meta"], model=checkpoint["model"]))
    result = _invoke("predict", tmp_path / "bad.pt", data, pred, "--organs", organs)
    assert isinstance(result.exception, ConfigError) and "does not fit this network" in str(result.exception)
