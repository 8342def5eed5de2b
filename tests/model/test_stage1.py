"""Stage 1 (``anato pseudolabel``): losses, EMA, channel expansion, data inputs, end to end, bad input."""

from __future__ import annotations

import json
import shutil
import sys

import nibabel as nib
import numpy as np
import pytest
import torch

from anatoseg.checkpoint import load_checkpoint
from anatoseg.data.case import load_case
from anatoseg.data.labels import ORGAN_IDS, ORGAN_LABEL_VALUES, ORGANS
from anatoseg.data.layouts import find_cases
from anatoseg.data.nifti import save_nifti
from anatoseg.data.phantom import generate_case, generate_cohort
from anatoseg.data.resample import resample_to_grid
from anatoseg.data.volumes import with_organs_from
from anatoseg.errors import AnatoError
from anatoseg.stage1 import build_config, load_organ_model, predict_organs, run_pseudolabel
from anatoseg.stage1.augment import random_affine, remove_contrast, strong_intensity
from anatoseg.stage1.data import load_source, make_preprocessing
from anatoseg.stage1.filtering import class_thresholds, trusted_voxels
from anatoseg.stage1.inputs import body_coordinates, network_input
from anatoseg.stage1.loop import Pool, _batch
from anatoseg.stage1.losses import consistency_loss, ema_update, masked_ce_dice
from anatoseg.stage1.net import OrganUNet, expand_input_channels
from anatoseg.stage1.report import organ_dice, summarise

SPACING = 12.0  # mm: tiny phantom cases (about 50 x 30 x 85 voxels)
TINY = ["widths=4,8,8,8", "data.spacing=12,12,12", "data.patch_size=16,16,16", "data.slab=24",
        "data.overlap=0.25", "teacher.steps=3", "student.steps=3", "student.threshold=0.05"]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def cohorts(tmp_path_factory):
    """(source: 2 diagnostic-CT cases, target: 2 PET-CT cases), written by the phantom generator."""
    root = tmp_path_factory.mktemp("stage1")
    generate_cohort(root / "source", cases=2, seed=11, spacing=SPACING, domain="diagnostic", progress=False)
    generate_cohort(root / "target", cases=2, seed=12, spacing=SPACING, domain="petct", progress=False)
    return root / "source", root / "target"


@pytest.fixture(scope="module")
def stage1_run(cohorts, tmp_path_factory):
    """One tiny end-to-end run: (output folder, report)."""
    source, target = cohorts
    out = tmp_path_factory.mktemp("run") / "organs"
    torch.set_num_threads(1)
    report = run_pseudolabel(source, target, out, build_config(overrides=TINY))
    return out, report


# ---------------------------------------------------------------------------------------------- units


def test_global_threshold_is_inclusive():
    labels = np.zeros(5, dtype=np.uint8)
    conf = np.array([0.2, 0.5, 0.89, 0.9, 1.0])
    thresholds = class_thresholds([labels], [conf], 3, threshold=0.9, class_fraction=0.0)
    assert thresholds.tolist() == [0.9, 0.9, 0.9]
    assert trusted_voxels(labels, conf, thresholds).tolist() == [False, False, False, True, True]


def test_class_thresholds_keep_the_most_confident_share_of_every_class():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, (30, 30, 30))
    conf = rng.random((30, 30, 30)) * np.where(labels == 2, 0.5, 1.0)  # class 2: never above 0.5
    thresholds = class_thresholds([labels[:15], labels[15:]], [conf[:15], conf[15:]], 4, threshold=0.9,
                                  class_fraction=0.3)
    assert thresholds[3] == 0.9  # absent class
    assert thresholds[0] == pytest.approx(0.7, abs=0.01) and thresholds[2] == pytest.approx(0.35, abs=0.01)
    trusted = trusted_voxels(labels, conf, thresholds)
    for k in range(3):
        assert trusted[labels == k].mean() == pytest.approx(0.3, abs=0.01)
    # the cap: with class_fraction 1 no class needs more than threshold, and everything is kept
    assert class_thresholds([labels], [conf], 3, threshold=0.9, class_fraction=1.0).max() == 0.0


def test_filtered_voxels_are_ignored_by_the_loss():
    logits = torch.randn(2, 4, 6, 5, 4, requires_grad=True)
    target = torch.randint(0, 4, (2, 6, 5, 4))
    mask = torch.rand(2, 6, 5, 4) > 0.5
    loss = masked_ce_dice(logits, target, mask)
    loss.backward()
    grad = logits.grad.abs().sum(1)
    assert float(grad[~mask].max()) == 0.0
    assert float(grad[mask].min()) > 0.0
    # Changing logits and targets where the mask is off leaves the loss unchanged ...
    noise_logits = torch.where(mask[:, None], logits.detach(), torch.randn_like(logits) * 5)
    noise_target = torch.where(mask, target, torch.randint(0, 4, target.shape))
    assert torch.allclose(masked_ce_dice(noise_logits, noise_target, mask), loss.detach(), atol=1e-6)
    # ... while counting every voxel changes it.
    assert not torch.allclose(masked_ce_dice(logits.detach(), target, torch.ones_like(mask)), loss.detach())


def test_class_balanced_cross_entropy_weighs_every_present_class_alike():
    torch.manual_seed(0)
    logits = torch.randn(2, 4, 6, 5, 3, dtype=torch.float64)
    target = torch.zeros(2, 6, 5, 3, dtype=torch.long)
    target[0, :2], target[1, 0, :2] = 2, 3  # class 2: 30 voxels, class 3: 6; class 1 absent
    mask = torch.rand(2, 6, 5, 3) > 0.2
    voxel = torch.nn.functional.cross_entropy(logits, target, reduction="none")
    plain = voxel[mask].mean()
    balanced = torch.stack([voxel[mask & (target == k)].mean() for k in (0, 2, 3)]).mean()
    dice_only = masked_ce_dice(logits, target, mask) - plain
    for share in (0.0, 0.3, 1.0):
        expected = (1 - share) * plain + share * balanced + dice_only
        assert torch.allclose(masked_ce_dice(logits, target, mask, share), expected, rtol=1e-12), share
    assert not torch.allclose(balanced, plain)


def test_loss_with_no_trusted_voxel_is_zero_and_differentiable():
    logits = torch.randn(1, 3, 4, 4, 4, requires_grad=True)
    loss = masked_ce_dice(logits, torch.zeros(1, 4, 4, 4, dtype=torch.long), torch.zeros(1, 4, 4, 4, dtype=torch.bool))
    loss.backward()
    assert float(loss.detach()) == 0.0 and float(logits.grad.abs().sum()) == 0.0


def test_ema_moves_toward_the_student_by_one_minus_decay():
    student, ema = OrganUNet(2, 3, (4, 8)), OrganUNet(2, 3, (4, 8))
    before = {k: v.clone() for k, v in ema.state_dict().items()}
    target = student.state_dict()
    ema_update(ema, student, decay=0.9)
    for key, value in ema.state_dict().items():
        expected = 0.9 * before[key] + 0.1 * target[key]
        assert torch.allclose(value, expected, atol=1e-6), key
    # decay 0 copies the student exactly
    ema_update(ema, student, decay=0.0)
    assert all(torch.equal(v, target[k]) for k, v in ema.state_dict().items())


def test_consistency_loss_is_zero_for_equal_outputs_and_sends_no_gradient_to_the_target():
    a = torch.randn(2, 5, 4, 4, 4, requires_grad=True)
    b = torch.randn(2, 5, 4, 4, 4, requires_grad=True)
    assert float(consistency_loss(a, a.detach()).detach()) == 0.0
    consistency_loss(a, b).backward()
    assert a.grad is not None and b.grad is None


def test_student_starts_as_the_teacher():
    teacher = OrganUNet(4, 15, (4, 8, 8)).eval()  # 3 coordinates + CT
    student = OrganUNet(5, 15, (4, 8, 8)).eval()  # 3 coordinates + CT + PET
    expand_input_channels(teacher.state_dict(), student)
    ct, pet = torch.randn(1, 1, 8, 8, 8), torch.randn(1, 1, 8, 8, 8)
    coords = torch.from_numpy(body_coordinates((8, 8, 8)))[None]
    teacher_in = torch.from_numpy(network_input(ct[0].numpy(), True))[None]
    assert torch.equal(teacher_in, torch.cat([coords, ct], 1))
    with torch.no_grad():
        assert torch.allclose(student(torch.cat([teacher_in, pet], 1)), teacher(teacher_in), atol=1e-5)


def test_body_coordinates_run_from_minus_one_to_one_along_each_axis():
    coords = body_coordinates((3, 5, 1))
    assert coords.shape == (3, 3, 5, 1) and coords.dtype == np.float32
    assert coords[0, :, 0, 0].tolist() == [-1.0, 0.0, 1.0] and np.all(coords[0] == coords[0, :, :1, :1])
    assert coords[1, 0, :, 0].tolist() == [-1.0, -0.5, 0.0, 0.5, 1.0]
    assert np.all(coords[2] == 0)  # a single voxel along X sits at 0
    image = np.ones((2, 3, 5, 1), dtype=np.float32)
    assert network_input(image, False) is image and network_input(image, True).shape == (5, 3, 5, 1)


def test_contrast_removal_moves_enhanced_organs_only_toward_their_unenhanced_value():
    labels = torch.zeros(2, 4, 4, 4, dtype=torch.long)
    labels[:, :2] = 1  # an enhanced organ: at 0.5, unenhanced value 0.1
    labels[:, 2:, :2] = 2  # an organ at 0.3, below its unenhanced value 0.4 (listed) ...
    labels[:, 2:, 2:] = 3  # ... and one not listed
    ct = torch.where(labels == 1, 0.5, 0.3)[:, None].float() + 0.01 * torch.randn(2, 1, 4, 4, 4)
    out = remove_contrast(ct, labels, {1: 0.1, 2: 0.4}, torch.Generator().manual_seed(0), probability=1.0)
    organ = labels[:, None] == 1
    assert torch.equal(out[~organ], ct[~organ])  # organ 2 is not brightened, organ 3 untouched
    shift = (out - ct)[organ].reshape(2, -1)
    assert torch.all(shift < 0) and torch.all(shift >= -0.4 - 1e-6)
    assert torch.allclose(shift, shift[:, :1].expand_as(shift))  # one shift per organ: texture kept
    assert not torch.equal(remove_contrast(ct, labels, {1: 0.1}, torch.Generator(), probability=0.0)[organ],
                           out[organ])


def test_affine_augmentation_keeps_image_and_labels_aligned():
    labels = torch.zeros(1, 1, 16, 16, 16)
    labels[:, :, 4:12, 5:11, 6:10] = 3
    image = labels * 2.0
    generator = torch.Generator().manual_seed(0)
    out_image, out_labels = random_affine([image, labels], ["nearest", "nearest"], generator)
    assert torch.equal(out_image, out_labels * 2.0)
    assert set(out_labels.unique().tolist()) <= {0.0, 3.0}
    assert not torch.equal(out_labels, labels)  # it did move
    strong = strong_intensity(image, generator)
    assert strong.shape == image.shape and not torch.equal(strong, image)


def test_organ_dice_and_summary():
    truth = np.zeros((4, 4, 4), dtype=np.uint8)
    truth[:2] = ORGAN_IDS["liver"]
    pred = truth.copy()
    pred[0] = 0  # half the liver missed
    pred[3, 0, 0] = ORGAN_IDS["spleen"]  # a spleen voxel where there is none
    dice = organ_dice(pred, truth)
    assert dice["liver"] == pytest.approx(2 * 16 / (16 + 32))
    assert dice["spleen"] == 0.0
    assert dice["brain"] is None
    summary = summarise({"a": dice, "b": organ_dice(truth, truth)})
    assert summary["per_organ"]["liver"] == pytest.approx((2 / 3 + 1) / 2)
    assert summary["per_organ"]["spleen"] == 0.0  # defined in case a only
    assert summary["mean_dice"] == pytest.approx((summary["per_organ"]["liver"] + 0.0) / 2)


# ---------------------------------------------------------------------------------------------- inputs


def test_totalsegmentator_source_is_read_and_mapped(tmp_path):
    case = generate_case([5, 0], spacing=SPACING, domain="diagnostic")
    subject = tmp_path / "ts" / "s0001"
    save_nifti(subject / "ct.nii.gz", case.ct, case.ct_affine)
    organs_ct = resample_to_grid(case.organs, case.pet_affine, case.ct.shape, case.ct_affine, order=0,
                                 dtype=np.uint8)
    for name in ("liver", "spleen"):
        save_nifti(subject / "segmentations" / f"{name}.nii.gz", (organs_ct == ORGAN_IDS[name]).astype(np.uint8),
                   case.ct_affine)
    save_nifti(subject / "segmentations" / "lung_upper_lobe_left.nii.gz",
               (organs_ct == ORGAN_IDS["lungs"]).astype(np.uint8), case.ct_affine)
    [loaded] = load_source(tmp_path / "ts", make_preprocessing((SPACING,) * 3))
    present = set(np.unique(loaded.work.organs).tolist())
    assert present == {0, ORGAN_IDS["liver"], ORGAN_IDS["spleen"], ORGAN_IDS["lungs"]}
    assert loaded.work.image.shape[0] == 2 and np.ptp(loaded.work.image[1]) == 0  # no PET: a constant channel


# ---------------------------------------------------------------------------------------------- end to end


def test_end_to_end_writes_labels_on_the_pet_grid(stage1_run, cohorts):
    out, report = stage1_run
    _, target = cohorts
    cases = find_cases(target)
    assert len(cases) == 2
    for files in cases:
        written = nib.load(out / f"{files.case_id}.nii.gz")
        suv = nib.load(files.pet)
        assert written.shape == suv.shape
        assert np.allclose(written.affine, suv.affine)
        labels = np.asarray(written.dataobj)
        assert labels.dtype == np.uint8 and set(np.unique(labels).tolist()) <= set(ORGAN_LABEL_VALUES)
        record = json.loads((out / f"{files.case_id}.json").read_text())
        assert set(record["organs"]) == {o.name for o in ORGANS}
        for entry in record["organs"].values():
            assert entry["voxels"] == int((labels == entry["id"]).sum())
            assert entry["confidence"] is None or 0.0 <= entry["confidence"] <= 1.0
        # the stage-3 organ-folder reader accepts the output
        case = load_case(with_organs_from(files, out))
        assert case.organs.shape == case.shape


def test_report_has_teacher_and_student_dice(stage1_run):
    out, report = stage1_run
    on_disk = json.loads((out / "report.json").read_text())
    assert on_disk["dice"] == report["dice"]
    for model in ("teacher", "student"):
        assert set(report["dice"][model]["per_organ"]) == {o.name for o in ORGANS}
        assert 0.0 <= report["dice"][model]["mean_dice"] <= 1.0
    assert report["student_gain"] == pytest.approx(
        report["dice"]["student"]["mean_dice"] - report["dice"]["teacher"]["mean_dice"])
    assert 0.0 <= report["pseudo_labels"]["kept_fraction"] <= 1.0


def test_saved_model_loads_weights_only_and_predicts_organ_prompts(stage1_run, cohorts):
    out, _ = stage1_run
    raw = torch.load(out / "stage1.pt", weights_only=True)
    assert raw["kind"] == "stage1" and raw["meta"]["in_channels"] == 5 and raw["meta"]["coordinates"]
    model = load_organ_model(out / "stage1.pt")
    case = load_case(find_cases(cohorts[1])[0])
    labels, confidence = predict_organs(model, case)
    assert labels.shape == confidence.shape == case.shape
    assert labels.dtype == np.uint8 and int(labels.max()) <= len(ORGANS)
    assert confidence.dtype == np.float32 and 0.0 <= confidence.min() and confidence.max() <= 1.0
    again, _ = predict_organs(out / "stage1.pt", case)  # from the path, same result
    assert np.array_equal(labels, again)


def test_teacher_maps_and_model_are_kept_for_teacher_only_prompts(stage1_run, cohorts):
    """The teacher's own organ maps (the unfiltered pseudo-labels) and the CT-only teacher are saved beside the
    student's, in the layouts stage 3 reads (``--organs OUT/teacher``, a stage-1 checkpoint)."""
    out, report = stage1_run
    assert report["teacher_model"] == str(out / "teacher.pt") and report["teacher_labels"] == str(out / "teacher")
    raw = torch.load(out / "teacher.pt", weights_only=True)
    assert raw["kind"] == "stage1" and raw["meta"]["in_channels"] == 4  # 3 coordinates + CT, no PET
    teacher = load_organ_model(out / "teacher.pt")
    for files in find_cases(cohorts[1]):
        written = nib.load(out / "teacher" / f"{files.case_id}.nii.gz")
        assert written.shape == nib.load(files.pet).shape
        assert set(np.unique(np.asarray(written.dataobj)).tolist()) <= set(ORGAN_LABEL_VALUES)
        truth = load_case(files).organs
        mapped = load_case(with_organs_from(files, out / "teacher")).organs  # as stage 3 reads it
        # the map is the teacher's: its Dice against the truth is the report's teacher column for this case
        expected = report["dice_per_case"]["teacher"][files.case_id]
        for organ, dice in organ_dice(mapped, truth).items():
            assert (dice is None) == (expected[organ] is None)
            assert dice is None or dice == pytest.approx(expected[organ], abs=0.02)
    predicted, _ = predict_organs(teacher, load_case(find_cases(cohorts[1])[0]))
    assert predicted.dtype == np.uint8


def test_cross_fitted_maps_come_from_students_that_never_saw_the_case(cohorts, tmp_path, monkeypatch):
    """``student.cross_fit=2`` on 2 target cases: each written map is by the student of the other fold, the saved
    model is the student of both cases, and too many folds are refused before any training."""
    import anatoseg.stage1.run as stage1_run_module

    real_train, real_write, seen = stage1_run_module.train_student, stage1_run_module._write_labels, {}

    def train(cases, *args, **kwargs):
        net = real_train(cases, *args, **kwargs)
        seen[id(net)] = sorted(c.case_id for c in cases)
        return net

    def write(tmp, students, cases, *args, **kwargs):
        seen["writers"] = [(c.case_id, seen[id(s)]) for s, c in zip(students, cases, strict=True)]
        return real_write(tmp, students, cases, *args, **kwargs)

    monkeypatch.setattr(stage1_run_module, "train_student", train)
    monkeypatch.setattr(stage1_run_module, "_write_labels", write)
    source, target = cohorts
    report = run_pseudolabel(source, target, tmp_path / "out", build_config(overrides=[*TINY, "student.cross_fit=2"]))
    ids = sorted(files.case_id for files in find_cases(target))
    # the student of all cases, then fold 0 (trained without case 0), fold 1
    assert [ids, [ids[1]], [ids[0]]] == [v for k, v in seen.items() if k != "writers"]
    assert all(case not in trained_on and len(trained_on) == 1 for case, trained_on in seen["writers"])
    assert report["cross_fit"] == 2 and set(report["seconds"]) >= {"student", "cross_fit"}
    with pytest.raises(AnatoError, match="cross_fit=3 folds need as many target cases, got 2"):
        run_pseudolabel(source, target, tmp_path / "out3", build_config(overrides=[*TINY, "student.cross_fit=3"]))
    with pytest.raises(AnatoError, match="student.cross_fit must be 0"):
        build_config(overrides=["student.cross_fit=1"])


# ---------------------------------------------------------------------------------------------- bad input


def _cli(monkeypatch, capsys, *args) -> tuple[int, str]:
    from anatoseg.cli import main
    monkeypatch.setattr(sys, "argv", ["anato", "pseudolabel", *map(str, args)])
    with pytest.raises(SystemExit) as exit_info:
        main()
    return exit_info.value.code, capsys.readouterr().err


def test_missing_source_folder_is_one_line_error(tmp_path, cohorts, monkeypatch, capsys):
    code, err = _cli(monkeypatch, capsys, tmp_path / "nope", cohorts[1], tmp_path / "out")
    assert code == 1
    assert err.startswith("error: ") and "nope" in err and "file not found" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_source_without_organ_labels_is_refused(tmp_path, cohorts):
    unlabelled = tmp_path / "unlabelled"
    for files in find_cases(cohorts[0]):
        study = unlabelled / files.case_id / "study"
        study.mkdir(parents=True)
        for path in files.pet.parent.iterdir():
            if path.name != "ORGANS.nii.gz":
                shutil.copy(path, study / path.name)
    with pytest.raises(AnatoError, match="no labelled cases"):
        run_pseudolabel(unlabelled, cohorts[1], tmp_path / "out", build_config(overrides=TINY))
    assert not (tmp_path / "out").exists()


def test_non_empty_output_folder_needs_overwrite(tmp_path, cohorts):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(AnatoError, match="--overwrite"):
        run_pseudolabel(cohorts[0], cohorts[1], out, build_config(overrides=TINY))
    with pytest.raises(AnatoError, match="input data"):
        run_pseudolabel(cohorts[0], cohorts[1], cohorts[1].parent, build_config(overrides=TINY), overwrite=True)
    assert (out / "keep.txt").read_text() == "mine"


def test_bad_settings_are_config_errors():
    with pytest.raises(AnatoError, match="patch_size"):
        build_config(overrides=["data.patch_size=12,16,16"])
    with pytest.raises(AnatoError, match="threshold"):
        build_config(overrides=["student.threshold=1.5"])
    with pytest.raises(AnatoError, match="teacher.class_balance"):
        build_config(overrides=["teacher.class_balance=-0.1"])
    with pytest.raises(AnatoError, match="unknown config key"):
        build_config(overrides=["student.nope=1"])


def test_checkpoint_of_another_kind_is_refused(tmp_path, stage1_run):
    out, _ = stage1_run
    checkpoint = load_checkpoint(out / "stage1.pt")
    checkpoint["kind"] = "encoders"
    torch.save(checkpoint, tmp_path / "other.pt")
    with pytest.raises(AnatoError, match="expected 'stage1'"):
        load_organ_model(tmp_path / "other.pt")


def test_student_batches_mix_source_and_target_in_the_configured_share():
    config = build_config(overrides=["data.patch_size=8,8,8", "data.batch_size=1", "widths=4,8,8,8"])
    target = Pool.of([np.zeros((1, 8, 8, 8), np.float32)] * 3, [np.zeros((8, 8, 8), np.uint8)] * 3, share=0.25)
    source = Pool.of([np.ones((1, 8, 8, 8), np.float32)], [np.ones((8, 8, 8), np.uint8)], share=0.75)
    pool = target + source
    assert pool.weights.sum() == pytest.approx(1.0) and len(pool.labels) == 4
    rng, generator = np.random.default_rng(0), torch.Generator().manual_seed(0)
    from_source = [float(_batch(pool, config, rng, generator, "cpu")[0].mean()) > 0.5 for _ in range(400)]
    assert np.mean(from_source) == pytest.approx(0.75, abs=0.06)
