"""Issue 21, input/output safety: case ids as paths, predict onto its inputs, CLI values, cases dropped
silently, leftovers and clobbering, absurd voxel sizes. Every test works on real files on disk and
goes through the real ``anato`` entry point where a user would."""

import json
import os
import shutil

import pytest

nib = pytest.importorskip("nibabel")

import numpy as np  # noqa: E402

from anatoseg.checkpoint import make_checkpoint, save_checkpoint  # noqa: E402
from anatoseg.config import ModelConfig  # noqa: E402
from anatoseg.data import find_cases, load_case, save_nifti  # noqa: E402
from anatoseg.data.paths import inside  # noqa: E402
from anatoseg.data.preprocess import Preprocessing, preprocess_case  # noqa: E402
from anatoseg.data.resample import grid_for_spacing  # noqa: E402
from anatoseg.errors import AnatoError, DataError  # noqa: E402
from anatoseg.stage3.config import Config  # noqa: E402
from anatoseg.training.cache import prepare_cache  # noqa: E402
from anatoseg.training.network import build_model, net_dict  # noqa: E402

from cli_testing import run_anato as run  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")
AFFINE = np.diag([4.0, 4.0, 4.0, 1.0])
SHAPE = (12, 12, 12)
PARAMS = Preprocessing(target_spacing=(8.0, 8.0, 8.0), ct_clip=(-1000.0, 1000.0), ct_mean=0.0, ct_std=100.0)




def write_study(folder, seg=True):
    """A small case folder: SUV, CTres (body), SEG with one lesion voxel."""
    folder.mkdir(parents=True, exist_ok=True)
    pet = np.ones(SHAPE, np.float32)
    save_nifti(folder / "SUV.nii.gz", pet, AFFINE)
    ct = np.full(SHAPE, -1000.0, np.float32)
    ct[2:10, 2:10, 2:10] = 40.0
    save_nifti(folder / "CTres.nii.gz", ct, AFFINE, dtype=np.int16)
    if seg:
        mask = np.zeros(SHAPE, np.uint8)
        mask[5, 5, 5] = 1
        save_nifti(folder / "SEG.nii.gz", mask, AFFINE)
    return folder


def write_manifest(root, ids, files_of=None):
    """``root/manifest.json`` listing one case per id, each with its own study folder (or ``files_of(n)``)."""
    entries = []
    for n, case in enumerate(ids):
        study = write_study(root / f"c{n}" / "study")
        entry = {"case": case, "pet": str(study / "SUV.nii.gz"), "ctres": str(study / "CTres.nii.gz"),
                 "lesions": str(study / "SEG.nii.gz")}
        entries.append({**entry, **(files_of(n) if files_of else {})})
    (root / "manifest.json").write_text(json.dumps({"format": "anatoseg-manifest", "version": 1, "cases": entries}))
    return root / "manifest.json"


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    """An untrained, prompt-free stage-3 model.pt (a small U-Net) as `anato train` writes it."""
    folder = tmp_path_factory.mktemp("model")
    config = Config(model=ModelConfig(arch="unet", preset="tiny"))
    net, net_cfg = build_model(config.model, (32, 32, 32))
    meta = {"arch": "unet", "net": net_dict(net_cfg), "patch_size": [32, 32, 32], "config": config.to_dict(),
            "preprocessing": json.loads(json.dumps(PARAMS.to_dict())), "organ_model": None}
    return save_checkpoint(folder / "model.pt", make_checkpoint("stage3", meta, model=net.state_dict()))


def snapshot(folder):
    return {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()}


# ------------------------------------------------------------ 1. case ids are never paths

@pytest.mark.parametrize("bad", ["/etc", "../../x", "..", ".", "", "a/b", "a\\b", "x\0y", None, 7, ".hidden"],
                         ids=["absolute", "parent-parent", "dotdot", "dot", "empty", "slash", "backslash", "nul",
                              "null", "int", "hidden"])
def test_manifest_case_id_that_is_a_path_is_refused(tmp_path, bad):
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "keep.txt").write_text("keep")
    write_manifest(tmp_path / "data", [bad])
    with pytest.raises(DataError, match="case id") as info:
        find_cases(tmp_path / "data")
    assert "manifest.json" in str(info.value)
    assert (victim / "keep.txt").read_text() == "keep"


def test_train_cache_never_replaces_a_folder_outside_the_cache(tmp_path):
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "keep.txt").write_text("keep")
    (case,) = find_cases(write_manifest(tmp_path / "data", ["ok"]))
    for name in (str(victim), "../victim", ".."):
        bad = type(case)(**{**case.__dict__, "case_id": name})  # as if an id got past the reader
        with pytest.raises(AnatoError, match="not a plain name inside"):
            prepare_cache([bad], PARAMS, tmp_path / "run" / "cache", organs_dir=None, need_organs=False,
                          progress=False)
    assert (victim / "keep.txt").read_text() == "keep" and sorted(os.listdir(victim)) == ["keep.txt"]
    assert inside(tmp_path, "ok.nii.gz") == tmp_path / "ok.nii.gz"


def test_predict_with_a_path_case_id_writes_nothing(monkeypatch, capsys, tmp_path, model):
    manifest = write_manifest(tmp_path / "data", ["../../escaped"])
    code, out, err = run(monkeypatch, capsys, "predict", model, manifest, tmp_path / "a" / "b" / "out",
                         "--no-progress")
    assert code == 1 and err.startswith("error: ") and err.count("\n") == 1 and "case id" in err
    assert not (tmp_path / "escaped.nii.gz").exists() and not (tmp_path / "a").exists()


# ------------------------------------------------------------ 2. predict never overwrites its inputs

def test_predict_refuses_to_write_onto_its_inputs(monkeypatch, capsys, tmp_path, model):
    study = write_study(tmp_path / "p" / "s")
    before = snapshot(tmp_path)
    link = tmp_path / "link.nii.gz"
    link.symlink_to(study / "SUV.nii.gz")
    hard = tmp_path / "hard.nii.gz"
    os.link(study / "SEG.nii.gz", hard)
    for target in (study / "SEG.nii.gz", study / "SUV.nii.gz", link, hard):
        code, _, err = run(monkeypatch, capsys, "predict", model, study, target, "--no-progress", "--overwrite")
        assert code == 1 and "onto an input of this run" in err and err.count("\n") == 1, err
    code, _, err = run(monkeypatch, capsys, "predict", model, study, model, "--no-progress", "--overwrite")
    assert code == 1 and "not a folder" in err
    after = snapshot(tmp_path)
    assert all(after[p] == data for p, data in before.items())


def test_predict_refuses_existing_predictions_unless_overwrite(monkeypatch, capsys, tmp_path, model):
    study = write_study(tmp_path / "p" / "s")
    target = tmp_path / "pred.nii.gz"
    target.write_bytes(b"earlier result")
    code, _, err = run(monkeypatch, capsys, "predict", model, study, target, "--no-progress")
    assert code == 1 and "exist already" in err and "--overwrite" in err
    assert target.read_bytes() == b"earlier result"
    code, out, err = run(monkeypatch, capsys, "predict", model, study, target, "--no-progress", "--overwrite")
    assert code == 0, err
    assert nib.load(str(target)).shape == SHAPE and "predicted 1 case(s)" in out


# ------------------------------------------------------------ 3. CLI numbers are validated

@pytest.mark.parametrize("option,value,key", [("--batch-size", -2, "infer.batch_size"),
                                              ("--batch-size", 0, "infer.batch_size"),
                                              ("--overlap", -1, "infer.overlap"), ("--overlap", 1, "infer.overlap"),
                                              ("--overlap", "nan", "infer.overlap"),
                                              ("--overlap", "inf", "infer.overlap")])
def test_predict_numeric_options_are_validated(monkeypatch, capsys, tmp_path, model, option, value, key):
    study = write_study(tmp_path / "p" / "s")
    code, out, err = run(monkeypatch, capsys, "predict", model, study, tmp_path / "out", option, value,
                         "--no-progress")
    assert code == 1 and err.startswith("error: ") and key in err and err.count("\n") == 1, err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("args,key", [
    (["--steps", 0], "train.steps"), (["--batch-size", -1], "train.batch_size"), (["--lr", "nan"], "optim.lr"),
    (["--lr", -1], "lr must be > 0"), (["--set", "infer.overlap=nan"], "infer.overlap"),
    (["--set", "data.val_fraction=-1"], "data.val_fraction"), (["--set", "augment.flip_prob=inf"], "flip_prob"),
    (["--set", "data.spacing=0,4,4"], "data.spacing"), (["--set", "loss.ce_weight=-1"], "loss weights")],
    ids=["steps0", "batch-neg", "lr-nan", "lr-neg", "overlap-nan", "val-neg", "flip-inf", "spacing0", "loss-neg"])
def test_train_numeric_options_are_validated(monkeypatch, capsys, tmp_path, args, key):
    data = write_manifest(tmp_path / "data", ["a", "b"])
    code, _, err = run(monkeypatch, capsys, "train", data, tmp_path / "run", *args, "--no-progress")
    assert code == 1 and err.startswith("error: ") and key in err and err.count("\n") == 1, err
    assert not (tmp_path / "run" / "cache").exists()


@pytest.mark.parametrize("args", [["--spacing", "nan"], ["--spacing", "inf"], ["--spacing", "-4"],
                                  ["--ct-spacing", "0"], ["--negatives", "nan"], ["--cases", 0]],
                         ids=["spacing-nan", "spacing-inf", "spacing-neg", "ct-zero", "negatives-nan", "cases0"])
def test_phantom_numeric_options_are_validated(monkeypatch, capsys, tmp_path, args):
    code, _, err = run(monkeypatch, capsys, "phantom", tmp_path / "out", *args, "--no-progress")
    assert code in (1, 2) and "Traceback" not in err and not (tmp_path / "out").exists(), err


# ------------------------------------------------------------ 4. no case is dropped or merged silently

def test_a_study_without_suv_is_an_error_or_a_counted_skip(monkeypatch, capsys, tmp_path, model):
    write_study(tmp_path / "data" / "p1" / "s")
    broken = write_study(tmp_path / "data" / "p2" / "s")
    (broken / "SUV.nii.gz").unlink()
    with pytest.raises(DataError, match="p2_s: .*no SUV"):
        find_cases(tmp_path / "data")
    code, _, err = run(monkeypatch, capsys, "predict", model, tmp_path / "data", tmp_path / "out", "--no-progress")
    assert code == 1 and "p2_s" in err and "--skip-bad" in err and not (tmp_path / "out").exists()
    code, out, err = run(monkeypatch, capsys, "predict", model, tmp_path / "data", tmp_path / "out",
                         "--no-progress", "--skip-bad")
    assert code == 0 and "warning: skipped case p2_s" in err and "1 case(s) skipped" in out
    assert sorted(os.listdir(tmp_path / "out")) == ["p1_s.nii.gz"]
    # evaluate: the same dataset as ground truth.
    code, _, err = run(monkeypatch, capsys, "evaluate", tmp_path / "out", tmp_path / "data")
    assert code == 1 and "p2_s" in err
    code, out, err = run(monkeypatch, capsys, "evaluate", tmp_path / "out", tmp_path / "data", "--skip-bad")
    assert code == 0 and "warning: skipped case p2_s" in err and "means over 1 case(s) (1 case(s) skipped" in out


def test_duplicate_ids_and_missing_files_are_found_before_anything_is_written(monkeypatch, capsys, tmp_path,
                                                                             model):
    with pytest.raises(DataError, match="duplicate case ids: same"):
        find_cases(write_manifest(tmp_path / "dup", ["same", "other", "same"]))
    manifest = write_manifest(tmp_path / "data", ["a", "b", "c"],
                              files_of=lambda n: {"lesions": "missing/SEG.nii.gz"} if n == 2 else {})
    code, _, err = run(monkeypatch, capsys, "predict", model, manifest, tmp_path / "out", "--no-progress")
    assert code == 1 and "c: " in err and "missing/SEG.nii.gz" in err and "file not found" in err
    assert not (tmp_path / "out").exists()  # case a was not written before case c failed
    code, _, err = run(monkeypatch, capsys, "train", tmp_path / "dup", tmp_path / "run", "--no-progress")
    assert code == 1 and "duplicate case ids" in err


# ------------------------------------------------------------ 5. leftovers and clobbering

def test_evaluate_ignores_temporary_and_hidden_files(monkeypatch, capsys, tmp_path):
    gt, pred = tmp_path / "gt", tmp_path / "pred"
    study = write_study(tmp_path / "p" / "s")
    for folder in (gt, pred):
        folder.mkdir()
        shutil.copy(study / "SEG.nii.gz", folder / "case.nii.gz")
    shutil.copy(study / "SEG.nii.gz", gt / ".case.nii.gz.abc123.tmp.nii.gz")  # left by a killed writer
    shutil.copy(study / "SEG.nii.gz", gt / "other.tmp.nii.gz")
    (gt / ".run-tmp").mkdir()
    shutil.copy(study / "SEG.nii.gz", gt / ".run-tmp" / "x.nii.gz")
    code, out, err = run(monkeypatch, capsys, "evaluate", pred, gt, "--json", tmp_path / "m.json")
    assert code == 0, err
    assert [c["case"] for c in json.loads((tmp_path / "m.json").read_text())["cases"]] == ["case"]
    (tmp_path / "data" / "p").mkdir(parents=True)
    write_study(tmp_path / "data" / "p" / "s")
    write_study(tmp_path / "data" / "p" / ".s.xyz.tmp")  # a half-written study folder
    assert [c.case_id for c in find_cases(tmp_path / "data")] == ["p_s"]


def test_phantom_refuses_to_clobber_and_appends_with_the_same_settings(monkeypatch, capsys, tmp_path):
    out = tmp_path / "cohort"
    assert run(monkeypatch, capsys, "phantom", out, "--spacing", "12", "--no-progress")[0] == 0
    case_dir = out / "phantom_s0_0000"
    (case_dir / "study" / "notes.txt").write_text("mine")
    manifest = (out / "manifest.json").read_text()
    code, _, err = run(monkeypatch, capsys, "phantom", out, "--spacing", "12", "--no-progress")
    assert code == 1 and "--append" in err and "--overwrite" in err
    code, _, err = run(monkeypatch, capsys, "phantom", out, "--spacing", "10", "--append", "--no-progress")
    assert code == 1 and "other settings" in err and "spacing" in err
    assert (out / "manifest.json").read_text() == manifest and (case_dir / "study" / "notes.txt").exists()
    code, out_text, err = run(monkeypatch, capsys, "phantom", out, "--spacing", "12", "--append", "--no-progress")
    assert code == 0, err
    entries = json.loads((out / "manifest.json").read_text())["cases"]
    assert [e["case"] for e in entries] == ["phantom_s0_0000_study", "phantom_s0_0001_study"]
    assert (case_dir / "study" / "notes.txt").read_text() == "mine"
    # One id rule: through the manifest, the tree and one study folder, a case has the same id.
    (out / "manifest.json").rename(tmp_path / "manifest.json")
    assert [c.case_id for c in find_cases(out)] == [e["case"] for e in entries]
    assert [c.case_id for c in find_cases(case_dir / "study")] == ["phantom_s0_0000_study"]


# ------------------------------------------------------------ 6. absurd voxel sizes

def test_absurd_voxel_size_is_refused_before_allocating(monkeypatch, capsys, tmp_path):
    study = write_study(tmp_path / "p" / "s")
    save_nifti(study / "SUV.nii.gz", np.ones(SHAPE, np.float32), np.diag([1e-6, 1e-6, 1e-6, 1.0]))
    with pytest.raises(DataError, match=r"SUV.nii.gz.*implausible voxel size"):
        find_cases(tmp_path)
    code, _, err = run(monkeypatch, capsys, "view", study)
    assert code == 1 and "implausible voxel size" in err and "SUV.nii.gz" in err
    # A resampling target that would need terabytes: one error naming the image and the size.
    with pytest.raises(DataError, match=r"SUV.nii.gz.*would be .* voxels \(.* GB\)"):
        grid_for_spacing((400, 400, 600), np.diag([2.0, 2.0, 2.0, 1.0]), (1e-3, 1e-3, 1e-3),
                         path=study / "SUV.nii.gz")
    write_study(study)
    (case,) = find_cases(tmp_path)
    tiny = Preprocessing(target_spacing=(1e-4, 1e-4, 1e-4), ct_clip=(-1000.0, 1000.0), ct_mean=0.0, ct_std=1.0)
    with pytest.raises(DataError, match=r"SUV.nii.gz.*would be"):
        preprocess_case(load_case(case), tiny)


@pytest.mark.parametrize("args,key", [
    (["pretrain", "{data}", "{out}", "--mask-ratio", "nan", "--no-progress"], "mask.ratio"),
    (["pretrain", "{data}", "{out}", "--lr", "inf", "--no-progress"], "optim.lr"),
    (["pseudolabel", "{data}", "{data}", "{out}", "--threshold", "nan"], "student.threshold"),
    (["pseudolabel", "{data}", "{data}", "{out}", "--lr", "nan"], "lr")], ids=["mask-nan", "lr-inf", "thr-nan",
                                                                            "lr-nan"])
def test_pretrain_and_pseudolabel_non_finite_numbers_are_refused(monkeypatch, capsys, tmp_path, args, key):
    data = write_manifest(tmp_path / "data", ["a", "b"])
    filled = [a.format(data=data, out=tmp_path / "out") for a in args]
    code, _, err = run(monkeypatch, capsys, *filled)
    assert code == 1 and "must be a finite number" in err and key in err and err.count("\n") == 1, err
