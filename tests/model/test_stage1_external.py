"""Stage 1 with teacher labels made elsewhere (``anato pseudolabel --teacher-labels``): TotalSegmentator-format
files written here from the phantom's organ maps, per-structure folders (masks and probabilities, on the CT
grid) and multi-label maps with a class list."""

from __future__ import annotations

import json
import sys

import nibabel as nib
import numpy as np
import pytest

from anatoseg.data.labels import ORGAN_IDS
from anatoseg.data.layouts import find_cases
from anatoseg.data.nifti import save_nifti
from anatoseg.data.phantom import generate_cohort
from anatoseg.data.resample import resample_to_grid
from anatoseg.data.totalseg import TOTALSEG_TO_ORGAN
from anatoseg.errors import AnatoError, DataError
from anatoseg.stage1 import build_config, run_pseudolabel
from anatoseg.stage1.data import load_target, make_preprocessing
from anatoseg.stage1.external import external_labels
from anatoseg.stage1.report import organ_dice

SPACING = 12.0
TINY = ["widths=4,8,8,8", "data.spacing=12,12,12", "data.patch_size=16,16,16", "data.slab=24",
        "data.overlap=0.25", "teacher.steps=2", "student.steps=2", "student.threshold=0.05"]
# one TotalSegmentator class per organ of the label set (the lungs as one lobe: the others are left out)
CLASS_OF: dict[str, str] = {}
for _name, _organ in TOTALSEG_TO_ORGAN.items():
    CLASS_OF.setdefault(_organ, _name)

pytestmark = pytest.mark.usefixtures("one_thread")


def _write_folder(folder, organs, affine, probability_of=None):
    """Per-structure files from an organ map; ``probability_of``: organ name -> value written inside it
    (a probability file instead of a mask)."""
    for organ, class_name in CLASS_OF.items():
        mask = organs == ORGAN_IDS[organ]
        if mask.any():
            value = (probability_of or {}).get(organ, 1.0)
            data = mask.astype(np.float32) * value if value != 1.0 else mask.astype(np.uint8)
            save_nifti(folder / f"{class_name}.nii.gz", data, affine)


@pytest.fixture(scope="module")
def external(tmp_path_factory):
    """(source, target, labels folder): case 0 as per-structure files on the CT grid (liver as
    probability 0.8), case 1 as a multi-label map on the PET grid with a classes.json."""
    root = tmp_path_factory.mktemp("stage1_external")
    generate_cohort(root / "source", cases=1, seed=21, spacing=SPACING, domain="diagnostic", progress=False)
    generate_cohort(root / "target", cases=2, seed=22, spacing=SPACING, domain="petct", progress=False)
    labels = root / "totalseg"
    first, second = find_cases(root / "target")
    organs = nib.load(first.organs)
    ct = nib.load(first.ct)
    on_ct = resample_to_grid(np.asarray(organs.dataobj), organs.affine, ct.shape, ct.affine, order=0,
                             dtype=np.uint8)
    _write_folder(labels / first.case_id, on_ct, ct.affine, probability_of={"liver": 0.8})
    organs = nib.load(second.organs)
    data = np.asarray(organs.dataobj)
    # our ids as TotalSegmentator ids; an organ without a TotalSegmentator class gets a name nothing maps
    classes = {str(k): CLASS_OF.get(name, f"unmapped_{k}") for name, k in ORGAN_IDS.items()}
    save_nifti(labels / f"{second.case_id}.nii.gz", data.astype(np.uint8), organs.affine)
    (labels / "classes.json").write_text(json.dumps(classes))
    return root / "source", root / "target", labels


def test_teacher_labels_match_the_organ_maps_they_were_made_from(external):
    _, target, labels = external
    cases = load_target(target, make_preprocessing((SPACING,) * 3), progress=False)
    for case in cases:
        found, confidence = external_labels(labels, case.case_id, case.work)
        assert found.shape == confidence.shape == case.work.organs.shape
        dice = {k: v for k, v in organ_dice(found, case.work.organs).items() if v is not None}
        assert np.mean(list(dice.values())) > 0.85, dice
        assert 0.0 <= confidence.min() and confidence.max() <= 1.0
    # the liver written as probability 0.8 comes back with about that confidence
    first = cases[0]
    found, confidence = external_labels(labels, first.case_id, first.work)
    core = (found == ORGAN_IDS["liver"]) & (confidence > 0.75)
    assert core.sum() > 0 and confidence[core].max() <= 0.8 + 1e-4


def test_pseudolabel_trains_the_student_from_external_labels(external, tmp_path):
    source, target, labels = external
    report = run_pseudolabel(source, target, tmp_path / "out", build_config(overrides=TINY),
                             teacher_labels=labels)
    assert report["teacher"].startswith("external labels")
    assert report["dice"]["teacher"]["mean_dice"] > 0.85  # the teacher column is the external labels
    assert (tmp_path / "out" / "stage1.pt").is_file()
    assert report["teacher_model"] is None and not (tmp_path / "out" / "teacher.pt").exists()
    assert len(list((tmp_path / "out" / "teacher").glob("*.nii.gz"))) == len(find_cases(target))


def test_missing_or_bad_teacher_labels_are_refused(external, tmp_path):
    source, target, labels = external
    first = find_cases(target)[0].case_id
    partial = tmp_path / "partial"
    partial.mkdir()
    with pytest.raises(DataError, match=f"no teacher labels for case '{first}'"):
        run_pseudolabel(source, target, tmp_path / "out", build_config(overrides=TINY), teacher_labels=partial)
    bad = tmp_path / "bad" / first
    bad.mkdir(parents=True)
    save_nifti(bad / "liver.nii.gz", np.full((4, 4, 4), 2.0, dtype=np.float32), np.eye(4))
    cases = load_target(target, make_preprocessing((SPACING,) * 3), progress=False)
    with pytest.raises(DataError, match=r"outside \[0, 1\]"):
        external_labels(tmp_path / "bad", first, cases[0].work)
    with pytest.raises(AnatoError, match="not a folder"):
        run_pseudolabel(source, target, tmp_path / "out2", build_config(overrides=TINY),
                        teacher_labels=tmp_path / "nope")


def test_cli_missing_teacher_labels_is_one_line_error(external, tmp_path, monkeypatch, capsys):
    from anatoseg.cli import main
    source, target, _ = external
    monkeypatch.setattr(sys, "argv", ["anato", "pseudolabel", str(source), str(target), str(tmp_path / "out"),
                                      "--teacher-labels", str(tmp_path / "nope")])
    with pytest.raises(SystemExit) as exit_info:
        main()
    err = capsys.readouterr().err
    assert exit_info.value.code == 1 and err.startswith("error: ") and "not a folder" in err
    assert "Traceback" not in err and not (tmp_path / "out").exists()
