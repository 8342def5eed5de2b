"""The protocol's statistics and report on synthetic unit JSONs, the variant registry, and the lesion
tagging and FP grouping it scores with (anatoseg.experiments.protocol, anatoseg.metrics.breakdown)."""

from __future__ import annotations

import numpy as np
import pytest

from anatoseg.data.labels import ORGAN_IDS
from anatoseg.errors import ConfigError
from anatoseg.experiments.protocol import report, units, variants
from anatoseg.experiments.protocol.__main__ import scale_overrides
from anatoseg.experiments.protocol.config import CPU
from anatoseg.experiments.protocol.scoring import suppressed
from anatoseg.metrics.autopet import evaluate_case
from anatoseg.metrics.breakdown import grouped_organs, tags_by_centre
from anatoseg.metrics.froc import CaseScores, case_scores


def _case(name: str, dice, fp: int, tp: int, fn: int, site: str = "bone", fp_organ: str = "bowel") -> dict:
    lesions = [{"lesion": k + 1, "volume_ml": 2.0, "size": "1-5 ml", "detected": k < tp, "site": site, "hard": "no"}
               for k in range(tp + fn)]
    groups = {g: {"count": 0, "volume_ml": 0.0} for g in ("brain", "bowel", "other")}
    groups[fp_organ]["count"] = fp
    return {"case": name, "positive": tp + fn > 0, "dice": dice, "fpv_ml": 0.5 * fp,
            "fnv_ml": None if tp + fn == 0 else 1.0 * fn, "tp": tp, "fp": fp, "fn": fn, "fp_by_organ": groups,
            "lesions": lesions, "unmatched_lesions": 0,
            "froc": CaseScores(np.array([0.9] * tp + [-np.inf] * fn), np.array([0.6] * fp)).to_dict()}


def _unit(variant: str, seed: int, shift: float, kind: str = "network", commit: str = "abc") -> dict:
    rng = np.random.default_rng([seed, len(variant)])
    cases = [_case(f"c{i}", float(np.clip(0.5 + shift + 0.05 * rng.standard_normal(), 0, 1)), fp=i % 3, tp=1, fn=1)
             for i in range(8)]
    cases += [_case(f"n{i}", None, fp=1 + (shift < 0), tp=0, fn=0, fp_organ="brain") for i in range(4)]
    return {"variant": variant, "seed": seed, "kind": kind, "commit": commit, "cases": cases,
            "seconds": {"train": 120.0, "predict": 10.0}}


META = {"scale": {**CPU.to_dict(), "patch": [32, 64, 64]}, "cohort_seeds": {"test": 3303},
        "command": "python -m anatoseg.experiments.protocol runs/p", "machine": "x86_64 CPU, 2 cores",
        "commit": "abc", "times": {"wall": {"cohorts": 30.0, "total": 4000.0}, "cpu": {"total": 7000.0}}}


def test_report_reads_each_difference_and_flags_stale_units():
    units = [_unit("full method", s, 0.0) for s in range(3)] + [_unit("no prompts", s, -0.2) for s in range(3)]
    units += [_unit("UNet", s, 0.0, commit="old") for s in range(3)] + [_unit("SUV ≥ 2.5", 0, -0.4, kind="sanity")]
    text = report.render(units, META, n_boot=300)
    rows = {line.split(" | ")[1]: line for line in text.splitlines() if line.startswith("| Dice | ")}
    assert "reference better" in rows["no prompts"] and "[-0.2" in rows["no prompts"]
    assert "| 8 | 3 |" in rows["UNet"]  # Dice pairs the 8 cases with lesions, 3 seeds
    assert "no difference" in rows["UNet"] and rows["SUV ≥ 2.5"].split(" | ")[3] == "3"  # sanity repeated per seed
    assert "| variant | brain | bowel | other |" in text
    assert "| full method | 0.33 | 0.58 | 0.00 |" in text  # 4 brain FPs and 7 bowel FPs over 12 cases
    assert "| full method | 24 / 48 | 0.500 |" in text  # pooled over three seeds
    assert "Wall time: cohorts 30 s, total 4000 s" in text and "all threads) time: total 7000 s" in text
    assert "UNet seed 0: commit old" in text and "`python -m anatoseg.experiments.protocol runs/p`" in text
    assert "The best network" in text and "too easy" not in text
    assert "| variant | bone |" in text and "| full method | 0.50 (48) |" in text  # sensitivity by site


def test_another_reference_compares_every_variant_with_it_and_uptake_organ_fps_are_compared():
    units = [_unit("full method", s, 0.0) for s in range(3)] + [_unit("no prompts", s, -0.2) for s in range(3)]
    units += [_unit("UNet", s, 0.0) for s in range(3)]
    text = report.render(units, {**META, "reference": "no prompts"}, n_boot=300)
    assert "## Paired differences against the no prompts" in text
    dice = {line.split(" | ")[1]: line for line in text.splitlines() if line.startswith("| Dice | ")}
    assert set(dice) == {"full method", "UNet"} and "variant better" in dice["full method"]
    assert "[+0.1" in dice["full method"] or "[+0.2" in dice["full method"]
    # the negatives' false positives lie in the brain (an uptake organ): 1 per case for the full method, 2 for
    # no prompts; the positives' lie in the bowel, the same for both
    uptake = [line for line in text.splitlines() if line.startswith("| FP components in uptake organs | full")]
    assert len(uptake) == 1 and "| 12 | 3 | -0.333 |" in uptake[0] and "variant better" in uptake[0]
    # the same units, rendered against the full method on request
    assert "## Paired differences against the full method" in report.render(units, META, n_boot=100)
    assert "against the UNet" in report.render(units, META, n_boot=100, reference="UNet")


def test_uptake_metrics_sum_the_uptake_groups_only():
    case = _case("c", 0.5, fp=3, tp=1, fn=0, fp_organ="other")
    assert report.case_value(case, "fp_uptake") == 0 and report.case_value(case, "fp") == 3
    case["fp_by_organ"]["bowel"] = {"count": 2, "volume_ml": 1.5}
    case["fp_by_organ"]["brain"] = {"count": 1, "volume_ml": 0.25}
    assert report.case_value(case, "fp_uptake") == 3 and report.case_value(case, "fpv_uptake_ml") == 1.75
    assert "other" not in report.UPTAKE_GROUPS and {"brain", "bladder", "kidney", "bowel"} <= set(report.UPTAKE_GROUPS)


def test_lesion_sensitivity_is_compared_per_case_and_skips_lesion_free_cases():
    assert report.case_value(_case("c", 0.5, fp=0, tp=1, fn=3, fp_organ="other"), "lesion_sensitivity") == 0.25
    assert report.case_value(_case("c", None, fp=1, tp=0, fn=0, fp_organ="other"), "lesion_sensitivity") is None
    units = [_unit(name, seed, 0.0) for name in ("full method", "no prompts") for seed in range(3)]
    for unit in units[3:]:  # no prompts finds none of the 2 lesions of each positive case, the full method 1
        for case in unit["cases"]:
            if case["positive"]:
                case["tp"], case["fn"] = 0, 2
    rows = [line for line in report.render(units, META, n_boot=100).splitlines()
            if line.startswith("| lesion sensitivity | no prompts |")]
    assert len(rows) == 1 and "| 8 | 3 | -0.500 | [-0.500, -0.500] |" in rows[0] and "reference better" in rows[0]


def test_a_variant_with_no_seed_shared_with_the_full_method_waits_instead_of_failing():
    """Several jobs can finish UNet seed 1 before the full method's seed 1: the report names it as not yet
    compared and still compares the variants that pair."""
    units = [_unit("full method", 0, 0.0), _unit("no prompts", 0, -0.2), _unit("UNet", 1, 0.0)]
    text = report.render(units, META, n_boot=100)
    assert "(not compared yet, no seed in common with the full method: UNet)" in text
    rows = [line for line in text.splitlines() if line.startswith("| Dice | ")]
    assert len(rows) == 1 and "| no prompts |" in rows[0]
    only = report.render([_unit("full method", 0, 0.0), _unit("UNet", 1, 0.0)], META, n_boot=100)
    assert "(not compared yet, no seed in common with the full method: UNet)" in only


def _scored(name: str, truth_boxes, pred_boxes) -> dict:
    """A case record with real autoPET metrics and FROC scores (FP by organ and lesion tags left empty)."""
    truth, pred = np.zeros((20, 20, 20), bool), np.zeros((20, 20, 20), bool)
    for box in truth_boxes:
        truth[box] = True
    for box in pred_boxes:
        pred[box] = True
    return {**evaluate_case(pred, truth, (2.0, 2.0, 2.0), case=name).to_dict(), "fp_by_organ": {}, "lesions": [],
            "froc": case_scores(pred.astype(np.float32), truth).to_dict()}


def test_main_table_means_each_column_over_the_cases_where_it_applies():
    lesion_a, lesion_b = np.s_[2:6, 2:6, 2:6], np.s_[12:16, 12:16, 12:16]
    cases = [_scored("hit", [lesion_a, lesion_b], [lesion_a]),  # Dice 2/3, one of two lesions found
             _scored("perfect", [lesion_a], [lesion_a]),
             _scored("negative", [], [lesion_b])]  # no lesion: only its false-positive volume counts
    unit = {"variant": "full method", "seed": 0, "kind": "network", "cases": cases, "seconds": {"train": 90.0}}
    row = report.main_table(report.by_variant([unit]))[2].split(" | ")
    fpv = 64 * 8 / 1000 / 3  # the negative case's 64 voxels of 8 mm³, in ml, over 3 cases
    assert row[2] == f"{(2 / 3 + 1) / 2:.3f} ± 0.000"  # Dice over the 2 cases with lesions; sd over 1 seed
    assert row[3] == f"{fpv:.3f} ± 0.000" and row[5] == f"{1 / 3:.3f} ± 0.000"  # FPV, FP components: all 3
    assert row[6] == f"{2 / 3:.3f} ± 0.000"  # pooled: 2 of 3 lesions over all cases
    assert row[-1] == "1.5 |"  # training minutes
    two = report.main_table(report.by_variant([unit, {**unit, "seed": 1, "cases": cases[1:]}]))[2].split(" | ")
    assert two[2] == f"{((2 / 3 + 1) / 2 + 1) / 2:.3f} ± {np.std([(2 / 3 + 1) / 2, 1], ddof=1):.3f}"  # over seeds


def test_sanity_row_that_rivals_the_networks_says_the_phantom_is_too_easy():
    units = [_unit("full method", s, 0.0) for s in range(2)] + [_unit("SUV ≥ 2.5", 0, -0.02, kind="sanity")]
    assert "The phantom is too easy" in report.sanity_reading(report.by_variant(units))


def test_froc_of_a_unit_reads_the_stored_candidates():
    at = report.froc_at(_unit("full method", 0, 0.0))
    # 8 lesions detected at 0.9 of 16; FPs at 0.6 come after: at 0.5 FP/case only the 0.9 point qualifies
    assert at[0.5] == pytest.approx(0.5) and at[4.0] == pytest.approx(0.5)


def test_registry_resolves_groups_and_always_keeps_the_reference():
    assert variants.resolve(["UNet"]) == ["full method", "UNet"]
    assert variants.resolve(["ablations"]) == variants.GROUPS["ablations"]
    assert variants.resolve(None) == variants.GROUPS[variants.DEFAULT_GROUP]
    # a scale names its own default group: the CPU table leaves SwinUNETR and SegResNet out (config.py: budget)
    from anatoseg.experiments.protocol.config import CPU, GPU
    from anatoseg.experiments.protocol.run import make_plan

    assert make_plan(GPU).variants == variants.GROUPS["table"]
    assert make_plan(CPU).variants == [v for v in variants.GROUPS["table"] if v not in ("SwinUNETR", "SegResNet")]
    assert make_plan(CPU, ["SwinUNETR"]).variants == ["full method", "SwinUNETR"]
    with pytest.raises(ConfigError, match="unknown variant or group 'nope'"):
        variants.resolve(["nope"])
    with pytest.raises(ConfigError, match="unknown reference variant 'nope'"):
        make_plan(CPU, ["UNet"], reference="nope")
    plan = make_plan(CPU, ["prompting"], reference="no prompts")
    assert plan.reference == "no prompts" and plan.variants == variants.GROUPS["prompting"]
    assert make_plan(CPU, ["UNet"], reference="no prompts").variants == ["no prompts", "UNet"]
    with pytest.raises(ConfigError, match="prompts must be one of"):
        variants.check_variant("x", {"arch": "unet", "prompts": "organs", "init": None, "set": {}})
    for stage2_set, init in (([0, 0], "stage2"), (variants.NO_MAMBA, None)):
        with pytest.raises(ConfigError, match="stage2_set must be a mapping"):
            variants.check_variant("x", {"arch": "anatoseg", "prompts": None, "init": init, "set": {},
                                         "stage2_set": stage2_set})
    assert variants.overrides({"model.net.use_prompts": False, "data.patch_size": [32, 64, 64]}) == [
        "model.net.use_prompts=false", "data.patch_size=[32, 64, 64]"]


@pytest.mark.parametrize("name", list(variants.VARIANTS))
def test_every_variant_is_a_valid_stage3_config_of_a_buildable_network(name):
    from anatoseg.nets import build_network
    from anatoseg.stage3.config import Config
    from anatoseg.training.network import net_config

    spec = variants.VARIANTS[name]
    config = Config.build(None, units.stage3_overrides(CPU, spec, 0))
    assert config.model.arch == spec["arch"] and list(config.data.patch_size) == list(CPU.patch)
    if spec["arch"].startswith("anatoseg"):  # the MONAI baselines take the protocol's settings only
        build_network(spec["arch"], net_config(config.model), CPU.patch)
    if "infer.suppress_organs" in spec["set"]:
        assert all(o in ORGAN_IDS for o in config.infer.suppress_organs.split(","))


def test_groups_name_registered_variants_and_the_default_stays_the_budgeted_table():
    assert all(n in variants.VARIANTS for group in variants.GROUPS.values() for n in group)
    assert variants.resolve(None) == ["full method", "no prompts", "no pretraining", "GT organs", "UNet",
                                      "SegResNet", "SwinUNETR", "UNETR"]
    assert "organ-mask post-processing" in variants.resolve(["anatomy"])


def test_suppressed_zeroes_the_components_the_postprocessing_removes():
    prob = np.zeros((8, 8, 8), np.float32)
    prob[1:4, 1:4, 1:4], prob[0, 1:4, 1:4] = 0.9, 0.3  # a component in the brain, with a rim below 0.5
    prob[5:7, 5:7, 5:7] = 0.8  # one outside every organ
    organs = np.zeros((8, 8, 8), np.uint8)
    organs[1:4, 1:4, 1:3] = ORGAN_IDS["brain"]  # 2/3 of the first component's voxels
    out = suppressed(prob, organs, (ORGAN_IDS["brain"],))
    assert (out[1:4, 1:4, 1:4] == 0).all() and (out[0, 1:4, 1:4] == np.float32(0.3)).all()
    assert (out[5:7, 5:7, 5:7] == np.float32(0.8)).all() and (prob[1:4, 1:4, 1:4] == np.float32(0.9)).all()
    assert (suppressed(prob, organs, (ORGAN_IDS["brain"],), fraction=0.7) == prob).all()  # 2/3 is not > 0.7
    assert suppressed(prob, None, ()) is prob
    with pytest.raises(ValueError, match="needs the case's organ map"):
        suppressed(prob, None, (ORGAN_IDS["brain"],))


def test_scale_overrides_change_fields_and_refuse_unknown_ones():
    assert scale_overrides(CPU, ["steps=7", "patch=[32, 32, 32]"]).patch == (32, 32, 32)
    with pytest.raises(ConfigError, match="expected field=value"):
        scale_overrides(CPU, ["stepz=7"])


def test_tags_follow_each_lesion_centre_and_count_merged_and_missing_lesions():
    gt = np.zeros((10, 10, 10), np.uint8)
    gt[1:3, 1:3, 1:3] = 1
    gt[6:9, 6:9, 6:9] = 1
    lesions = [{"site": "liver", "hard": None, "centre_zyx": [7, 7, 7]},
               {"site": "bone", "hard": "small", "centre_zyx": [3, 3, 3]},  # next to component 1: the 3x3x3 block
               {"site": "lung", "hard": True, "centre_zyx": [8, 8, 8]},  # same component as the first
               {"site": "breast", "centre_zyx": [0, 9, 0]}]  # nothing there
    tags, unmatched = tags_by_centre(gt, lesions)
    assert tags == {2: {"site": "liver", "hard": "no", "merged": 1}, 1: {"site": "bone", "hard": "small"}}
    assert unmatched == 1
    affine = np.array([[0, 0, 2.0, 0], [0, 2.0, 0, 0], [2.0, 0, 0, 0], [0, 0, 0, 1]])  # (z, y, x) -> world (x, y, z)
    tags, _ = tags_by_centre(gt, [{"site": "bone", "centre_mm": [14.0, 14.0, 16.0]}], affine)  # voxel (8, 7, 7)
    assert tags == {2: {"site": "bone"}}


def test_grouped_organs_pools_left_and_right_and_skips_absent_names():
    organs = np.array([[[ORGAN_IDS["kidney_left"], ORGAN_IDS["kidney_right"], ORGAN_IDS["liver"], 0]]])
    groups, names = grouped_organs(organs, {"kidney": ("kidney_left", "kidney_right"), "gone": ("no_such_organ",)})
    assert names == {1: "kidney", 2: "gone"} and groups.tolist() == [[[1, 1, 0, 0]]]


def test_teacher_only_prompts_read_the_stage1_teacher_and_are_refused_without_one(tmp_path):
    from anatoseg.experiments.protocol.stages import organ_inputs

    report = {"model": str(tmp_path / "stage1" / "stage1.pt"), "teacher_model": str(tmp_path / "stage1" / "teacher.pt")}
    inputs = organ_inputs(report, tmp_path, {"pseudo", "teacher", None})
    assert inputs["pseudo"].train_dir == tmp_path / "stage1" and inputs["pseudo"].test_dir == tmp_path / "stage1_test"
    assert inputs["teacher"].train_dir == tmp_path / "stage1" / "teacher"
    assert inputs["teacher"].model == tmp_path / "stage1" / "teacher.pt"
    assert inputs["teacher"].test_dir == tmp_path / "stage1_test_teacher"
    assert set(organ_inputs(report, tmp_path, {None, "gt"})) == {"pseudo", "teacher"}  # kept for its Dice
    assert set(organ_inputs({**report, "teacher_model": None}, tmp_path, {None, "pseudo"})) == {"pseudo"}
    with pytest.raises(ConfigError, match="teacher-only prompts need the stage-1 teacher"):
        organ_inputs({"model": report["model"], "teacher_model": None}, tmp_path, {"teacher"})
    assert variants.VARIANTS["teacher-only prompts"]["prompts"] == "teacher"
    assert "teacher-only prompts" in variants.GROUPS["ablations"]


def test_pending_units_go_seed_by_seed_so_an_early_stop_still_pairs_every_variant(tmp_path):
    from anatoseg.experiments.protocol.run import make_plan, pending

    plan = make_plan(CPU, ["full method", "UNet"], seeds=2, sanity=False)
    assert pending(tmp_path, plan) == [("full method", 0), ("UNet", 0), ("full method", 1), ("UNet", 1)]
    done = units.unit_path(tmp_path, "UNet", 0)
    done.parent.mkdir(parents=True, exist_ok=True)
    done.write_text("{}")
    assert pending(tmp_path, plan) == [("full method", 0), ("full method", 1), ("UNet", 1)]


def test_stage1_section_pairs_student_and_teacher_per_organ_over_the_test_cases():
    from anatoseg.data.labels import ORGANS
    from anatoseg.experiments.protocol import organ_scores

    rng = np.random.default_rng(0)
    teacher, student = {}, {}
    for i in range(12):
        base = {o.name: None for o in ORGANS}
        base["brain"], base["liver"] = 0.9 + 0.02 * rng.standard_normal(), 0.5 + 0.05 * rng.standard_normal()
        teacher[f"c{i}"] = dict(base)
        student[f"c{i}"] = {**base, "liver": base["liver"] + 0.2}  # the student gains 0.2 on the liver only
    lines = organ_scores.section({"teacher": teacher, "student": student}, n_boot=500)
    rows = {line.split(" | ")[0].lstrip("| "): line for line in lines if line.startswith("| ")}
    assert "+0.200" in rows["liver"] and "student better" in rows["liver"]
    assert "+0.000" in rows["brain"] and "no difference" in rows["brain"]
    assert rows["spleen"].count("–") == 4  # in neither map of any case
    assert "12 held-out test cases" in lines[0]
    only = organ_scores.section({"student": student})
    assert "student − teacher" not in only[2] and organ_scores.section({}) == [
        "(no stage-1 organ maps of the test cases scored yet)"]


def test_every_variant_samples_its_hard_negatives_around_the_stage1_maps_unless_it_reads_others(monkeypatch, tmp_path):
    """One patch stream for the variants that read no organ map and those that read the stage-1 student's: the
    cache's organ maps centre the organ hard negatives, so a no-prompt network gets the student's maps too (it
    does not read them: no organ model is recorded), never the dataset's true maps; "gt" keeps the true ones."""
    import anatoseg.stage3.run
    from anatoseg.experiments.protocol.stages import OrganInputs, Shared

    calls = {}

    def fake_run_train(manifest, folder, **kwargs):
        calls[folder.name] = (kwargs["organs_dir"], kwargs["organ_model"])
        raise StopIteration  # nothing to train here

    monkeypatch.setattr(anatoseg.stage3.run, "run_train", fake_run_train)
    pseudo = OrganInputs(tmp_path / "stage1", tmp_path / "stage1.pt", tmp_path / "stage1_test")
    teacher = OrganInputs(tmp_path / "teacher", tmp_path / "teacher.pt", tmp_path / "teacher_test")
    shared = Shared(manifests={"train": tmp_path / "m.json"}, stage1={}, encoders=tmp_path / "e.pt",
                    fingerprint=tmp_path / "f.json", organs={"pseudo": pseudo, "teacher": teacher})
    for name in ("no prompts", "UNet", "full method", "teacher-only prompts", "GT organs"):
        with pytest.raises(StopIteration):
            units.train_unit(variants.VARIANTS[name], 0, CPU, shared, tmp_path / units.slug(name), "cpu", False)
    assert calls[units.slug("no prompts")] == (pseudo.train_dir, None)
    assert calls[units.slug("UNet")] == (pseudo.train_dir, None)
    assert calls[units.slug("full method")] == (pseudo.train_dir, pseudo.model)
    assert calls[units.slug("teacher-only prompts")] == (teacher.train_dir, teacher.model)
    assert calls[units.slug("GT organs")] == (None, None)


def test_a_trained_as_variant_predicts_the_source_model_with_its_own_test_time_settings(monkeypatch, tmp_path):
    """The organ-mask post-processing trains nothing of its own: it predicts the no-prompt network's model
    (trained in that variant's folder when missing, with that variant's spec) with ``suppress_organs``,
    its organ maps, and records the config its predictions followed."""
    import anatoseg.stage3.run
    from anatoseg.experiments.protocol.stages import OrganInputs, Shared

    trained, predicted = [], []

    def fake_run_train(manifest, folder, **kwargs):
        trained.append((folder, kwargs["overrides"]))
        return type("Result", (), {"model": folder / "model.pt", "val_dice": 0.5})()

    def fake_predict(model, manifest, organs_dir, device, options=None):
        predicted.append((model, organs_dir, options))
        return [], {"infer": {"suppress_organs": "", "mirror": False}, "model": {}}

    monkeypatch.setattr(anatoseg.stage3.run, "run_train", fake_run_train)
    monkeypatch.setattr(units, "predict_unit", fake_predict)
    pseudo = OrganInputs(tmp_path / "stage1", tmp_path / "stage1.pt", tmp_path / "stage1_test")
    shared = Shared(manifests={"train": tmp_path / "m.json", "test": tmp_path / "t.json"}, stage1={},
                    encoders=tmp_path / "e.pt", fingerprint=tmp_path / "f.json", organs={"pseudo": pseudo})
    name, source = "organ-mask post-processing", "no prompts"
    spec = variants.VARIANTS[name]
    assert spec["trained_as"] == source
    with pytest.raises(ValueError, match="pass that variant's spec as source"):
        units.run_network_unit(name, spec, 1, CPU, shared, tmp_path, "cpu", False)
    unit = units.run_network_unit(name, spec, 1, CPU, shared, tmp_path, "cpu", False,
                                  source=variants.VARIANTS[source])
    folder = units.model_folder(tmp_path, source, 1)
    assert trained == [(folder, units.stage3_overrides(CPU, variants.VARIANTS[source], 1))]
    assert predicted == [(folder / "model.pt", pseudo.test_dir, {"suppress_organs": variants.SUPPRESSED_ORGANS})]
    assert unit["config"]["infer"] == {"suppress_organs": variants.SUPPRESSED_ORGANS, "mirror": False}
    assert units.load_units(tmp_path)[0]["spec"]["trained_as"] == source
    # with true organs it reads the dataset's maps (organs_dir None) and still uses the no-prompt model
    units.run_network_unit(name + variants.TRUE_ORGANS, variants.VARIANTS[name + variants.TRUE_ORGANS], 1, CPU,
                           shared, tmp_path, "cpu", False, source=variants.VARIANTS[source])
    assert predicted[-1] == (folder / "model.pt", None, {"suppress_organs": variants.SUPPRESSED_ORGANS})


def test_trained_as_variants_are_checked_and_run_after_the_unit_that_trains_their_model():
    from anatoseg.experiments.protocol.run import phases

    registry = dict(variants.VARIANTS)
    base = {"arch": "anatoseg", "prompts": "pseudo", "init": "stage2"}
    bad = {"chain": {**base, "set": {}, "trained_as": "organ-mask post-processing"},
           "missing": {**base, "set": {}, "trained_as": "nope"},
           "other arch": {**base, "arch": "unet", "set": {}, "trained_as": "no prompts"},
           "trains": {**base, "set": {"train.steps": 5}, "trained_as": "no prompts"}}
    for name, why in (("chain", "trains its own model"), ("missing", "trains its own model"),
                      ("other arch", "arch and init must be"), ("trains", "can set only")):
        with pytest.raises(ConfigError, match=why):
            variants.check_variant(name, bad[name], registry)
    assert variants.test_time(variants.VARIANTS["no prompts"]) == {}
    post, post_gt = "organ-mask post-processing", "organ-mask post-processing" + variants.TRUE_ORGANS
    todo = [("no prompts", 0), (post, 0), (post_gt, 0), (post, 1), (post_gt, 1), ("full method", 1), ("x", None)]
    registry["x"] = {}
    # seed 0: no prompts trains, both post-processings wait for it; seed 1: the first trains it, the second waits
    assert phases(todo, registry) == ([("no prompts", 0), (post, 1), ("full method", 1), ("x", None)],
                                      [(post, 0), (post_gt, 0), (post_gt, 1)])


def test_every_switch_and_anatomy_baseline_has_a_true_organ_form():
    for name in variants.GROUPS["prompting"]:
        if name in ("full method", "no prompts", "GT organs"):
            continue
        gt = variants.VARIANTS[name + variants.TRUE_ORGANS]
        assert gt == {**variants.VARIANTS[name], "prompts": "gt"}
        assert name + variants.TRUE_ORGANS in variants.GROUPS["prompting-gt"]


def test_the_commit_units_record_is_read_once_per_process(monkeypatch):
    """A commit made in the checkout while a run goes on does not relabel its later units (it did: a retest's
    units recorded the commits made during it)."""
    units.git_commit.cache_clear()
    first = units.git_commit()
    assert first is not None and len(first) == 40
    monkeypatch.setattr(units.subprocess, "run", lambda *a, **k: pytest.fail("git was asked again"))
    assert units.git_commit() == first


def test_cost_table_counts_the_stored_configs_parameters_and_means_the_units_times():
    from anatoseg.experiments.protocol import cost
    from anatoseg.stage3.config import Config

    configs = {name: Config.build(None, units.stage3_overrides(CPU, variants.VARIANTS[name], 0)).to_dict()
               for name in ("full method", "no prompts", "no Mamba blocks")}
    counts = {name: cost.parameters(config) for name, config in configs.items()}
    assert counts["no Mamba blocks"] < counts["full method"] and counts["no prompts"] < counts["full method"]
    assert cost.parameters(None) is None and cost.parameters({}) is None
    seeds = {seed: {**_unit("full method", seed, 0.0), "config": configs["full method"],
                    "seconds": {"train": 60.0 * (seed + 1), "predict": 30.0},
                    "cpu_seconds": {"train": 120.0, "predict": 30.0}} for seed in (0, 1)}
    lines = cost.section({"full method": seeds, "old": {0: _unit("old", 0, 0.0)},
                          "SUV ≥ 2.5": {0: _unit("SUV ≥ 2.5", 0, 0.0, kind="sanity")}})
    assert lines[2] == f"| full method | {counts['full method'] / 1e6:.2f} M | 1.5 | 2.0 | 0.5 | 0.5 |"
    assert lines[3] == "| old | – | 2.0 | – | 0.2 | – |" and len(lines) == 4
    assert "## Cost per variant" in report.render([_unit("full method", 0, 0.0)], META)
