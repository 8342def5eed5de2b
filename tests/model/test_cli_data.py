"""``anato phantom``, ``anato evaluate`` and ``anato view``, and every bad input through the CLI."""

import json
import shutil
import subprocess
import sys

import pytest

nib = pytest.importorskip("nibabel")

import numpy as np  # noqa: E402

from anatoseg.data import save_nifti  # noqa: E402
from anatoseg.data.phantom import generate_cohort  # noqa: E402

from cli_testing import leftovers  # noqa: E402
from cli_testing import run_anato as run  # noqa: E402

AFFINE = np.diag([4.0, 4.0, 4.0, 1.0])
SHAPE = (12, 12, 12)






@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    root = tmp_path_factory.mktemp("cohort")
    generate_cohort(root, cases=1, seed=2, spacing=10.0, progress=False)
    return root


def test_phantom_command(monkeypatch, capsys, tmp_path):
    code, out, err = run(monkeypatch, capsys, "phantom", tmp_path / "out", "--cases", 2, "--seed", 4,
                         "--spacing", "12", "--domain", "diagnostic", "--negatives", 0.5)
    assert code == 0, err
    assert "wrote 2 cases (1 with lesions" in out
    assert "phantom" in err  # the progress bar
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert [e["domain"] for e in manifest["cases"]] == ["diagnostic"] * 2
    assert manifest["organ_labels"]["4"] == "liver"
    assert (tmp_path / "out" / "phantom_s4_0001" / "study" / "CTres.nii.gz").is_file()


def test_phantom_refuses_a_foreign_folder_and_bad_spacing(monkeypatch, capsys, tmp_path):
    (tmp_path / "mine.txt").write_text("keep me")
    code, out, err = run(monkeypatch, capsys, "phantom", tmp_path, "--spacing", "12", "--no-progress")
    assert code == 1 and err.count("\n") == 1 and "refusing" in err and str(tmp_path) in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine.txt"]
    code, _, err = run(monkeypatch, capsys, "phantom", tmp_path / "new", "--spacing", "4,x")
    assert code == 2 and "--spacing" in err and not (tmp_path / "new").exists()


def test_evaluate_command_on_folders_and_files(monkeypatch, capsys, cohort, tmp_path):
    entry = json.loads((cohort / "manifest.json").read_text())["cases"][0]
    case_id, seg = entry["case"], cohort / entry["lesions"]
    preds = tmp_path / "preds"
    preds.mkdir()
    shutil.copy(seg, preds / f"{case_id}.nii.gz")
    code, out, err = run(monkeypatch, capsys, "evaluate", preds, cohort, "--json", tmp_path / "m.json",
                         "--csv", tmp_path / "m.csv")
    assert code == 0, err
    assert case_id in out and "mean" in out
    report = json.loads((tmp_path / "m.json").read_text())
    assert report["cases"][0]["case"] == case_id and report["cases"][0]["dice"] == 1.0
    assert report["mean"]["fpv_ml"] == 0.0 and report["mean"]["fnv_ml"] == 0.0
    rows = (tmp_path / "m.csv").read_text().splitlines()
    assert rows[0].startswith("case,") and rows[1].startswith(case_id) and rows[-1].startswith("mean")
    # Two single files: a prediction that misses everything.
    empty = save_nifti(tmp_path / "empty.nii.gz", np.zeros(nib.load(seg).shape, np.uint8), nib.load(seg).affine)
    code, out, _ = run(monkeypatch, capsys, "evaluate", empty, seg)
    assert code == 0 and "0.000" in out


def test_view_command(monkeypatch, capsys, cohort, tmp_path):
    entry = json.loads((cohort / "manifest.json").read_text())["cases"][0]
    case_id, study = entry["case"], (cohort / entry["pet"]).parent
    code, out, err = run(monkeypatch, capsys, "view", study, "--out", tmp_path / "a.png")
    assert code == 0, err
    assert (tmp_path / "a.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    code, _, err = run(monkeypatch, capsys, "view", study / "SUV.nii.gz", "--pred", study / "SEG.nii.gz",
                       "--out", tmp_path / "b.png")
    assert code == 0, err and (tmp_path / "b.png").is_file()
    monkeypatch.chdir(tmp_path)
    code, _, err = run(monkeypatch, capsys, "view", cohort)  # a one-case dataset; default output name
    assert code == 0, err and (tmp_path / f"{case_id}.png").is_file()


# ---------------------------------------------------------------- bad input

def mask(value=1, shape=SHAPE, affine=AFFINE):
    data = np.zeros(shape, np.uint8)
    data[4:6, 4:6, 4:6] = value
    return data, affine


def write_case_dir(folder, *, suv=None, ct_affine=None, organs_value=None):
    folder.mkdir(parents=True)
    pet = np.ones(SHAPE, np.float32) if suv is None else suv
    save_nifti(folder / "SUV.nii.gz", pet, AFFINE)
    if ct_affine is None:
        save_nifti(folder / "CTres.nii.gz", np.zeros(SHAPE, np.int16), AFFINE)
    else:
        save_nifti(folder / "CT.nii.gz", np.zeros(SHAPE, np.int16), ct_affine)
    save_nifti(folder / "SEG.nii.gz", *mask())
    if organs_value is not None:
        save_nifti(folder / "ORGANS.nii.gz", *mask(organs_value))
    return folder


def bad_missing(tmp):
    save_nifti(tmp / "gt.nii.gz", *mask())
    return ["evaluate", tmp / "missing.nii.gz", tmp / "gt.nii.gz"], "missing.nii.gz", "file not found"


def bad_corrupt(tmp):
    folder = write_case_dir(tmp / "case")
    (folder / "SUV.nii.gz").write_bytes(b"\x1f\x8b garbage, not gzip data" * 10)
    return ["view", folder], "SUV.nii.gz", "cannot read NIfTI"


def bad_truncated(tmp):
    save_nifti(tmp / "gt.nii.gz", *mask())
    data = np.random.default_rng(0).integers(0, 2, (40, 40, 40)).astype(np.uint8)
    path = save_nifti(tmp / "pred.nii.gz", data, AFFINE)
    path.write_bytes(path.read_bytes()[:-200])
    return ["evaluate", path, tmp / "gt.nii.gz"], "pred.nii.gz", "truncated or corrupt"


def bad_4d(tmp):
    save_nifti(tmp / "gt.nii.gz", *mask())
    nib.save(nib.Nifti1Image(np.zeros((*SHAPE, 3), np.uint8), AFFINE), tmp / "pred.nii.gz")
    return ["evaluate", tmp / "pred.nii.gz", tmp / "gt.nii.gz"], "pred.nii.gz", "4D image"


def bad_nan(tmp):
    suv = np.ones(SHAPE, np.float32)
    suv[3, 3, 3] = np.inf
    suv[1, 2, 3] = np.nan
    return ["view", write_case_dir(tmp / "case", suv=suv)], "SUV.nii.gz", "NaN or infinite"


def bad_no_overlap(tmp):
    far = AFFINE.copy()
    far[:3, 3] = [0.0, 0.0, 900.0]
    return ["view", write_case_dir(tmp / "case", ct_affine=far)], "CT.nii.gz", "does not overlap"


def bad_gt_labels(tmp):
    save_nifti(tmp / "gt.nii.gz", *mask(value=2))
    save_nifti(tmp / "pred.nii.gz", *mask())
    return ["evaluate", tmp / "pred.nii.gz", tmp / "gt.nii.gz"], "gt.nii.gz", "unknown values 2"


def bad_organ_labels(tmp):
    return ["view", write_case_dir(tmp / "case", organs_value=99)], "ORGANS.nii.gz", "unknown values 99"


def bad_grids(tmp):
    save_nifti(tmp / "gt.nii.gz", *mask())
    save_nifti(tmp / "pred.nii.gz", *mask(shape=(12, 12, 13)))
    return ["evaluate", tmp / "pred.nii.gz", tmp / "gt.nii.gz"], "pred.nii.gz", "different grid"


def bad_shifted_grid(tmp):
    shifted = AFFINE.copy()
    shifted[0, 3] = 2.0
    save_nifti(tmp / "gt.nii.gz", *mask())
    save_nifti(tmp / "pred.nii.gz", *mask(affine=shifted))
    return ["evaluate", tmp / "pred.nii.gz", tmp / "gt.nii.gz"], "pred.nii.gz", "different grid"


def bad_view_pred_grid(tmp):
    folder = write_case_dir(tmp / "case")
    save_nifti(tmp / "pred.nii.gz", *mask(shape=(10, 12, 12)))
    return ["view", folder, "--pred", tmp / "pred.nii.gz"], "pred.nii.gz", "not on the PET grid"


def bad_missing_prediction(tmp):
    (tmp / "gt").mkdir()
    (tmp / "pred").mkdir()
    save_nifti(tmp / "gt" / "case_a.nii.gz", *mask())
    return ["evaluate", tmp / "pred", tmp / "gt"], "pred", "no prediction for case case_a"


BAD_INPUTS = [bad_missing, bad_corrupt, bad_truncated, bad_4d, bad_nan, bad_no_overlap, bad_gt_labels,
              bad_organ_labels, bad_grids, bad_shifted_grid, bad_view_pred_grid, bad_missing_prediction]


@pytest.mark.parametrize("make", BAD_INPUTS, ids=[f.__name__[4:] for f in BAD_INPUTS])
def test_bad_input_gives_one_line_and_writes_nothing(monkeypatch, capsys, tmp_path, make):
    args, culprit, problem = make(tmp_path)
    outputs = ["--json", tmp_path / "r.json", "--csv", tmp_path / "r.csv"] if args[0] == "evaluate" else \
        ["--out", tmp_path / "r.png"]
    before = set(tmp_path.rglob("*"))
    code, out, err = run(monkeypatch, capsys, *args, *outputs)
    assert code == 1
    assert err.count("\n") == 1 and err.startswith("error: "), err
    assert culprit in err and problem in err
    assert "Traceback" not in err + out
    assert set(tmp_path.rglob("*")) == before  # no report, no PNG, no temporary
    assert not leftovers(tmp_path)


def test_console_script_prints_no_traceback(tmp_path):
    result = subprocess.run([sys.executable, "-m", "anatoseg", "evaluate", tmp_path / "p.nii.gz",
                             tmp_path / "g.nii.gz"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [f"error: {tmp_path / 'g.nii.gz'}: file not found"]
