"""The experiment protocol end to end in miniature (2 variants, 2 seeds, 4 test cases, a few steps, a 10 mm
phantom: ~27 CPU-s in all, 1 thread), interrupted after its first unit and continued: only the rest runs
(anatoseg.experiments.protocol)."""

from __future__ import annotations

import dataclasses
import json

import pytest

import anatoseg.stage1
import anatoseg.stage2.run
from anatoseg.errors import ConfigError
from anatoseg.experiments.protocol import SCALES, make_plan, run, units
from anatoseg.experiments.protocol.__main__ import main
from anatoseg.metrics.breakdown import FP_ORGAN_GROUPS

MINI = dataclasses.replace(
    SCALES["cpu"], name="mini", spacing=10.0, organ_cases=2, train_cases=3, val_cases=1, pretrain_cases=2,
    test_cases=4, test_negatives=0.5, teacher_steps=2, student_steps=2, pretrain_steps=2, pretrain_crop=(32, 32, 32),
    steps=2, patch=(32, 32, 32), val_every=2, seeds=2,
    stage1_set={"data.patch_size": [32, 32, 32], "data.batch_size": 1, "data.overlap": 0.25})


class Interrupt(BaseException):
    """Stands for Ctrl-C (BaseException, as KeyboardInterrupt: the driver does not catch it)."""


@pytest.fixture(scope="module")
def interrupted_then_finished(tmp_path_factory):
    out = tmp_path_factory.mktemp("protocol")
    plan = make_plan(MINI, ["UNet"], command="mini protocol")
    assert plan.variants == ["full method", "UNet"]
    real, calls = units.run_network_unit, []

    def stop_after_first(name, *args, **kwargs):
        if calls:
            raise Interrupt
        calls.append((name, args[1]))
        return real(name, *args, **kwargs)

    patch = pytest.MonkeyPatch()
    patch.setattr(units, "run_network_unit", stop_after_first)
    with pytest.raises(Interrupt):
        run(out, plan, device="cpu", progress=False)
    first = sorted((out / units.UNITS).glob("*.json"))
    stamps = {p: p.stat().st_mtime_ns for p in first}

    def recorded(name, *args, **kwargs):
        calls.append((name, args[1]))
        return real(name, *args, **kwargs)

    patch.setattr(units, "run_network_unit", recorded)
    patch.setattr(anatoseg.stage1, "run_pseudolabel", lambda *a, **k: pytest.fail("stage 1 ran again"))
    patch.setattr(anatoseg.stage2.run, "run_pretrain", lambda *a, **k: pytest.fail("stage 2 ran again"))
    results = run(out, plan, device="cpu", progress=False)
    patch.undo()
    return out, results, calls, stamps


def test_rerun_runs_only_the_units_left_and_keeps_the_finished_one(interrupted_then_finished):
    out, _, calls, stamps = interrupted_then_finished
    assert len(stamps) == 1  # the interrupt came after the first unit was saved
    assert calls == [("full method", 0), ("UNet", 0), ("full method", 1), ("UNet", 1)]  # seed by seed
    assert all(path.stat().st_mtime_ns == stamp for path, stamp in stamps.items())
    names = sorted(p.name for p in (out / units.UNITS).glob("*.json"))
    assert names == ["full_method__seed0.json", "full_method__seed1.json", "suv_2_5__seed0.json",
                     "suv_40_suvmax__seed0.json", "unet__seed0.json", "unet__seed1.json"]


def test_units_hold_per_case_records_and_their_provenance(interrupted_then_finished):
    out, _, _, _ = interrupted_then_finished
    unit = json.loads((out / units.UNITS / "unet__seed1.json").read_text())
    assert len(unit["commit"]) == 40 and unit["seed"] == 1 and unit["config"]["seed"] == 1
    assert unit["config"]["model"]["arch"] == "unet" and unit["config"]["train"]["steps"] == 2
    cases = unit["cases"]
    assert len(cases) == 4 and sum(c["positive"] for c in cases) == 2  # half the test cases lesion-free
    assert all(set(c["fp_by_organ"]) == {*FP_ORGAN_GROUPS, "other"} for c in cases)
    lesions = [r for c in cases for r in c["lesions"]]
    assert lesions and all("site" in r and "detected" in r for r in lesions)
    assert all(len(c["froc"]["lesion_scores"]) == c["tp"] + c["fn"] for c in cases)
    assert unit["cpu_seconds"]["train"] > 0


def test_results_md_has_every_section(interrupted_then_finished):
    out, results, _, _ = interrupted_then_finished
    text = results.read_text()
    for heading in ("Paired differences against the full method", "Lesion sensitivity", "by organ",
                    "Sensitivity by lesion site", "Stage 1 on the test cases", "Sanity baseline",
                    "Commands, in the order they ran:", "1. `mini protocol` (commit ", "2. `mini protocol`"):
        assert heading in text
    assert "| UNet | 2 |" in text and "| SUV ≥ 2.5 | 1 |" in text
    assert text.index("| full method | 2 |") < text.index("| UNet | 2 |") < text.index("| SUV ≥ 2.5 | 1 |")
    assert len(list((out / "stage1_test").glob("*.nii.gz"))) == 4  # the pseudo-prompt units' test organ maps
    assert len(list((out / "stage1_test_teacher").glob("*.nii.gz"))) == 4  # and the teacher's, for its Dice
    scored = json.loads((out / "stage1_test_dice.json").read_text())
    assert set(scored) == {"student", "teacher"} and all(len(v) == 4 for v in scored.values())
    assert "| mean organ Dice |" in text and "student − teacher" in text


def test_regenerate_renders_the_folders_report_again_and_against_another_reference(interrupted_then_finished,
                                                                                   tmp_path, capsys):
    from anatoseg.experiments.protocol.regenerate import main as regenerate

    out, results, _, _ = interrupted_then_finished
    runs = json.loads((out / "protocol.json").read_text())["runs"]
    assert [run["command"] for run in runs] == ["mini protocol"] * 2 and all(len(r["commit"]) == 40 for r in runs)
    again = tmp_path / "again.md"
    assert regenerate([str(out), "--output", str(again)]) == 0
    assert again.read_text() == results.read_text()  # the same units, the same report, byte for byte
    assert regenerate([str(out), "--reference", "UNet", "--output", str(again)]) == 0
    assert "## Paired differences against the UNet" in again.read_text()
    capsys.readouterr()
    for argv, why in (([str(tmp_path)], "no protocol.json here"),
                      ([str(out), "--reference", "no prompts"], "no unit of the reference variant 'no prompts'")):
        assert regenerate(argv) == 1
        err = capsys.readouterr().err
        assert why in err and err.count("\n") == 1


def test_prompt_strength_reads_a_trained_full_method_model(interrupted_then_finished, capsys):
    from anatoseg.experiments.prompt_strength import main as prompt_strength

    out, _, _, _ = interrupted_then_finished
    model = units.model_folder(out, "full method", 0) / "model.pt"
    capsys.readouterr()
    assert prompt_strength([str(model), "--data", str(out / "data" / "test" / "manifest.json"),
                            "--organs", str(out / "stage1_test"), "--cases", "1"]) == 0
    rows = capsys.readouterr().out.splitlines()
    assert len(rows) == 3 and rows[2].startswith(f"| {model} | 1 | ") and "nan" not in rows[2]


def test_another_design_in_the_same_folder_is_refused(interrupted_then_finished, capsys):
    out, _, _, _ = interrupted_then_finished
    with pytest.raises(ConfigError, match="another design .*steps"):
        run(out, make_plan(dataclasses.replace(MINI, steps=3)), device="cpu", progress=False)
    assert main([str(out), "--variants", "nope"]) == 1
    assert capsys.readouterr().err.startswith("error: unknown variant or group 'nope'")
    assert main([str(out), "--variants", "UNet", "--reference", "nope"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: unknown reference variant 'nope'") and err.count("\n") == 1


def test_units_in_two_worker_processes_match_the_units_run_in_process(interrupted_then_finished, tmp_path):
    """Two units rerun with ``jobs=2`` (spawned workers; the trained models are kept, so only prediction
    and scoring run again) come back with the same per-case records as when run in this process."""
    import shutil

    out, _, _, _ = interrupted_then_finished
    copy = tmp_path / "parallel"
    shutil.copytree(out, copy)
    plan = make_plan(MINI, ["UNet"], command="mini protocol")
    redo = [units.unit_path(copy, "full method", 1), units.unit_path(copy, "UNet", 0)]
    before = {path.name: json.loads(path.read_text()) for path in redo}
    for path in redo:
        path.unlink()
    wall_before = json.loads((copy / "protocol.json").read_text())["times"]["wall"]["units"]
    run(copy, plan, device="cpu", progress=False, jobs=2)
    for path in redo:
        unit = json.loads(path.read_text())
        assert unit["cases"] == before[path.name]["cases"], path.name
        assert unit["cpu_seconds"]["predict"] > 0
    assert json.loads((copy / "protocol.json").read_text())["times"]["wall"]["units"] > wall_before


def test_the_post_processing_unit_predicts_the_no_prompt_model_once_it_is_trained(interrupted_then_finished, tmp_path):
    """With two workers, "no prompts" trains first and "organ-mask post-processing" then predicts that very model
    (no training folder of its own): its components are the no-prompt network's minus the suppressed ones."""
    import shutil

    out, _, _, _ = interrupted_then_finished
    copy = tmp_path / "reuse"
    shutil.copytree(out, copy)
    post = "organ-mask post-processing"
    plan = make_plan(dataclasses.replace(MINI, seeds=1), [post], reference="no prompts", sanity=False)
    assert plan.variants == ["no prompts", post]
    run(copy, plan, device="cpu", progress=False, jobs=2)
    assert not units.model_folder(copy, post, 0).exists()
    plain, suppressed = (json.loads(units.unit_path(copy, name, 0).read_text()) for name in ("no prompts", post))
    assert suppressed["spec"]["trained_as"] == "no prompts" and suppressed["cpu_seconds"]["train"] < 1.0
    assert suppressed["config"]["infer"]["suppress_organs"] and not plain["config"]["infer"]["suppress_organs"]
    for a, b in zip(plain["cases"], suppressed["cases"], strict=True):
        assert b["fp"] <= a["fp"] and b["tp"] <= a["tp"] and b["fpv_ml"] <= a["fpv_ml"] + 1e-9


def test_a_variant_with_its_own_stage_2_is_pretrained_in_its_own_folder(interrupted_then_finished, tmp_path):
    """"no Mamba blocks" pretrains Mamba-free encoders in ``stage2-<settings>/`` (the shared ones hold Mamba
    weights and would not load), trains from them, and leaves the shared stage 2 as it was."""
    import shutil

    import torch

    from anatoseg.experiments.protocol import stages
    from anatoseg.experiments.protocol.variants import VARIANTS
    from anatoseg.stage2.loop import ENCODERS_NAME

    out, _, _, _ = interrupted_then_finished
    copy = tmp_path / "own"
    shutil.copytree(out, copy)
    shared = (copy / "stage2" / ENCODERS_NAME).read_bytes()
    name = "no Mamba blocks"
    run(copy, make_plan(dataclasses.replace(MINI, seeds=1), [name], sanity=False), device="cpu", progress=False)
    own = stages.stage2_folder(copy, VARIANTS[name]["stage2_set"])
    assert own.name == "stage2-model-net-mamba-depths-0-0-0-0" and (own / ENCODERS_NAME).exists()
    assert (copy / "stage2" / ENCODERS_NAME).read_bytes() == shared
    model = torch.load(units.model_folder(copy, name, 0) / "model.pt", weights_only=True, map_location="cpu")
    assert model["meta"]["net"]["mamba_depths"] == [0, 0, 0, 0]
    assert model["meta"]["init"] == str((own / ENCODERS_NAME).resolve())
    assert not any("mamba" in key for key in model["model"]) and any("ct_encoder" in key for key in model["model"])
    full = torch.load(units.model_folder(copy, "full method", 0) / "model.pt", weights_only=True, map_location="cpu")
    assert full["meta"]["init"].endswith(f"/stage2/{ENCODERS_NAME}")  # trained in the fixture's folder
    assert any("mamba" in key for key in full["model"])
    unit = json.loads(units.unit_path(copy, name, 0).read_text())
    assert len(unit["cases"]) == MINI.test_cases


def test_pictures_draw_the_chosen_cases_with_the_trained_models(interrupted_then_finished, tmp_path, capsys):
    from anatoseg.experiments.protocol import pictures

    out, _, _, _ = interrupted_then_finished
    assert pictures.main([str(out), str(tmp_path / "pics"), "--without", "UNet"]) == 0
    record = json.loads((tmp_path / "pics" / "pictures.json").read_text())
    assert set(record["outcomes"]) == set(pictures.OUTCOMES) and record["without"] == "UNet"
    printed = capsys.readouterr().out
    for outcome, entry in record["outcomes"].items():
        for name in entry["picture"] or ():
            assert (tmp_path / "pics" / name).read_bytes()[:4] == b"\x89PNG"
        assert f"{outcome}: " in printed
    assert any(entry["picture"] for entry in record["outcomes"].values())
    assert pictures.main([str(out), str(tmp_path / "x"), "--seed", "7"]) == 1
    assert capsys.readouterr().err.startswith("error: ") and not (tmp_path / "x").exists()


def test_retest_scores_the_trained_models_on_a_fresh_cohort_without_training(interrupted_then_finished, tmp_path,
                                                                              capsys):
    """``retest``: the source's models (not retrained, not touched) score a new test cohort in another folder,
    seed 0 of UNet and of the reference plus the sanity rows; a rerun skips finished units; bad requests are
    one line and exit 1."""
    from anatoseg.experiments.protocol.regenerate import render_folder
    from anatoseg.experiments.protocol.retest import main as retest

    out, _, _, _ = interrupted_then_finished
    models = {p: p.stat().st_mtime_ns for p in (out / units.UNITS).glob("*/train/model.pt")}
    fresh = tmp_path / "fresh"
    argv = [str(out), str(fresh), "--test-seed", "9", "--variants", "UNet", "--seeds", "1", "--no-progress"]
    assert retest(argv) == 0
    names = sorted(p.name for p in (fresh / units.UNITS).glob("*.json"))
    assert names == ["full_method__seed0.json", "suv_2_5__seed0.json", "suv_40_suvmax__seed0.json",
                     "unet__seed0.json"]
    assert not list((fresh / units.UNITS).glob("*/train"))  # nothing trained here
    assert {p: p.stat().st_mtime_ns for p in (out / units.UNITS).glob("*/train/model.pt")} == models
    old_cases = {c["case"] for c in json.loads(units.unit_path(out, "UNet", 0).read_text())["cases"]}
    unit = json.loads(units.unit_path(fresh, "UNet", 0).read_text())
    new_cases = {c["case"] for c in unit["cases"]}
    assert len(new_cases) == 4 and not new_cases & old_cases and all("_s9_" in case for case in new_cases)
    assert unit["trained"]["folder"] == str(out) and unit["cpu_seconds"]["train"] < 1.0
    organ_maps = sorted(p.name.split(".")[0] for p in (fresh / "stage1_test").glob("*.nii.gz"))
    assert organ_maps == sorted(new_cases) and (fresh / "stage1_test_dice.json").is_file()
    meta = json.loads((fresh / "protocol.json").read_text())
    assert meta["retest_of"]["test_seed"] == 9 and meta["cohort_seeds"]["test"] == 9
    text = (fresh / "results.md").read_text()
    assert "**Retest:** nothing was trained here" in text and "| UNet | 1 |" in text
    assert render_folder(fresh) == text
    stamps = {p: p.stat().st_mtime_ns for p in (fresh / units.UNITS).glob("*.json")}
    assert retest(argv) == 0 and {p: p.stat().st_mtime_ns for p in (fresh / units.UNITS).glob("*.json")} == stamps
    capsys.readouterr()
    source_seed = str(json.loads((out / "protocol.json").read_text())["cohort_seeds"]["test"])
    for bad, why in ((["--test-seed", source_seed], "a retest needs a fresh cohort"),
                     (["--test-seed", "9", "--variants", "nope"], "no finished unit of 'nope'"),
                     (["--test-seed", "10"], "holds another run"),
                     (["--test-seed", "9", "--seeds", "0"], "--seeds must be a whole number")):
        assert retest([str(out), str(fresh), *bad, "--no-progress"]) == 1, bad
        err = capsys.readouterr().err
        assert why in err and err.count("\n") == 1, (bad, err)
    assert retest([str(fresh), str(tmp_path / "again"), "--test-seed", "11"]) == 1
    assert "is itself a retest" in capsys.readouterr().err


@pytest.mark.parametrize("jobs", [0, -1, 1.5, True])
def test_bad_jobs_are_refused_before_any_work(tmp_path, jobs):
    with pytest.raises(ConfigError, match="--jobs must be a whole number of at least 1"):
        run(tmp_path / "out", make_plan(MINI, ["UNet"]), device="cpu", progress=False, jobs=jobs)
    assert not (tmp_path / "out").exists()
