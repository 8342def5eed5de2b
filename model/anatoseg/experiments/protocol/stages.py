"""What every unit shares, made once per run folder and skipped when it exists: the phantom cohorts,
stage 1 (organ pseudo-labels and the stage-1 model) and stage 2 (pretrained encoders).

Layout under the run folder ``OUT``: ``data/<cohort>/manifest.json`` (:data:`.config.COHORT_SEEDS`),
``stage1/`` (:func:`anatoseg.stage1.run_pseudolabel`), ``stage2/`` (:func:`anatoseg.stage2.run.run_pretrain`),
``stage2-<settings>/`` (the stage 2 of each variant ``stage2_set`` in use, :func:`stage2_folder`),
``stage1_test/<case_id>.nii.gz`` (the stage-1 model's organ maps of the test cases, the prompts of
the pseudo-label variants at test), ``stage1_test_teacher/`` (the stage-1 teacher's maps of them, whenever
stage 1 kept its teacher) and ``stage1_test_dice.json`` (both scored, :mod:`.organ_scores`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from anatoseg.experiments.protocol import organ_scores
from anatoseg.experiments.protocol.config import COHORT_SEEDS, Scale
from anatoseg.experiments.protocol.timing import Times
from anatoseg.experiments.protocol.variants import overrides


@dataclass(frozen=True)
class OrganInputs:
    """Where the organ maps of one stage-1 model come from: the training cases' maps (an ``--organs``
    folder), the model that labels other cases, and its maps of the test cases."""

    train_dir: Path
    model: Path
    test_dir: Path


@dataclass(frozen=True)
class Shared:
    """Paths every unit reads: cohort manifests, the stage-1 report, encoders, fingerprint, the organ
    maps of each stage-1 model in use by variant ``prompts`` value (``"pseudo"``: the student,
    ``"teacher"``: the teacher), and the encoders of each variant ``stage2_set`` in use (by :func:`stage2_key`)."""

    manifests: dict[str, Path]
    stage1: dict
    encoders: Path
    fingerprint: Path
    organs: dict[str, OrganInputs]
    own_encoders: dict[str, Path] = field(default_factory=dict)

    def encoders_for(self, spec: Mapping) -> Path:
        """The stage-2 encoders a variant with ``init`` ``"stage2"`` starts from: its own stage 2's when it
        has a ``stage2_set``, else the shared ones."""
        settings = spec.get("stage2_set")
        return self.own_encoders[stage2_key(settings)] if settings else self.encoders


def cohorts(scale: Scale, data: Path, times: Times, progress: bool = True,
            seeds: dict[str, int] = COHORT_SEEDS) -> dict[str, Path]:
    """The manifests of the cohorts ``seeds`` names (``data/<name>/manifest.json``, each name one of
    :data:`.config.COHORT_SEEDS`), each generated with its seed unless it exists."""
    from anatoseg.data.phantom import generate_cohort

    counts = {"organ_ct": (scale.organ_cases, 0.0), "train": (scale.train_cases, scale.train_negatives),
              "pretrain": (scale.pretrain_cases, 0.0), "test": (scale.test_cases, scale.test_negatives)}
    manifests = {name: data / name / "manifest.json" for name in seeds}
    for name, seed in seeds.items():
        if not manifests[name].exists():
            cases, negatives = counts[name]
            with times.measure("cohorts"):
                generate_cohort(data / name, cases=cases, seed=seed, spacing=scale.spacing, negatives=negatives,
                                domain="diagnostic" if name == "organ_ct" else "petct", overwrite=True,
                                progress=progress)
    return manifests


def stage1(scale: Scale, out: Path, manifests: dict[str, Path], device: str, times: Times) -> dict:
    """Stage 1 on (organ_ct -> train) unless its report exists; returns the report."""
    from anatoseg.stage1 import build_config, run_pseudolabel
    from anatoseg.stage1.run import REPORT_NAME

    report = out / "stage1" / REPORT_NAME
    if not report.exists():
        settings = {"teacher.steps": scale.teacher_steps, "student.steps": scale.student_steps,
                    "data.spacing": [scale.spacing] * 3,  # the phantom's own grid (stage 1's default is 4 mm)
                    **scale.stage1_set}
        with times.measure("stage1"):
            run_pseudolabel(manifests["organ_ct"].parent, manifests["train"].parent, out / "stage1",
                            build_config(overrides=overrides(settings)), overwrite=True, device=device)
    return json.loads(report.read_text())


def mask_patch(scale: Scale) -> int:
    """Stage 2's mask patch edge: the deepest stride of the scale's preset. The alignment term compares PET
    and CT tokens of that grid at positions visible in both views; a finer mask patch leaves almost no
    such token (each would need every patch it covers shown) and the term dead."""
    from anatoseg.nets.config import NetConfig

    return NetConfig.preset(scale.preset).divisor


def stage2_key(settings: Mapping) -> str:
    """A variant ``stage2_set`` as a folder-name part, e.g. ``model-net-mamba-depths-0-0-0-0``."""
    return re.sub(r"[^a-z0-9]+", "-", json.dumps(dict(settings), sort_keys=True).lower()).strip("-")


def stage2_folder(out: Path, settings: Mapping | None = None) -> Path:
    """Where stage 2 runs: ``out/stage2``, or ``out/stage2-<key>`` for a variant ``stage2_set``."""
    return out / ("stage2" if not settings else f"stage2-{stage2_key(settings)}")


def stage2(scale: Scale, out: Path, manifests: dict[str, Path], device: str, times: Times,
           progress: bool = True, variant_set: Mapping | None = None) -> Path:
    """Stage 2 on the pretraining cohort unless its encoders exist; returns the encoders checkpoint.
    ``variant_set``: a variant's ``stage2_set``, applied last, in its own folder (:func:`stage2_folder`)."""
    from anatoseg.stage2.loop import ENCODERS_NAME
    from anatoseg.stage2.run import run_pretrain

    folder = stage2_folder(out, variant_set)
    encoders = folder / ENCODERS_NAME
    if not encoders.exists():
        settings = {"train.steps": scale.pretrain_steps, "model.preset": scale.preset,
                    "crop.size": list(scale.pretrain_crop), "mask.patch_size": [mask_patch(scale)] * 3,
                    **scale.stage2_set, **(variant_set or {})}
        with times.measure("stage2"):
            encoders = Path(run_pretrain(manifests["pretrain"], folder, device=device, progress=progress,
                                         overrides=overrides(settings)).checkpoint)
    return encoders


def pseudo_organs(model_path: Path, manifest: Path, folder: Path, device: str, times: Times) -> Path:
    """The stage-1 model's organ maps of the test cases, ``folder/<case_id>.nii.gz`` (the ``--organs``
    layout), each unless it exists: what ``anato predict`` would compute from the model the checkpoint
    names, made once for every pseudo-prompt unit instead of once per unit."""
    import dataclasses

    import nibabel as nib
    import numpy as np

    from anatoseg.data import find_cases
    from anatoseg.data.case import load_case
    from anatoseg.data.nifti import save_nifti, zyx_to_file
    from anatoseg.stage1.model import load_organ_model

    model = None
    for files in find_cases(manifest):
        target = folder / f"{files.case_id}.nii.gz"
        if target.exists():
            continue
        with times.measure("stage1 test organs"):
            model = model or load_organ_model(model_path, device)
            labels = model.predict(load_case(dataclasses.replace(files, organs=None)), device)[0]
            affine = nib.load(str(files.pet)).affine
            save_nifti(target, zyx_to_file(labels, affine), affine, dtype=np.uint8)
    return folder


def organ_inputs(report: dict, out: Path, prompts: set) -> dict[str, OrganInputs]:
    """The stage-1 models' organ inputs: the student's (``"pseudo"``) always, the teacher's whenever stage 1
    kept it (its held-out Dice is compared with the student's). ConfigError when the variants' ``prompts``
    values ask for ``"teacher"`` and stage 1 of ``out`` kept no teacher model."""
    from anatoseg.errors import ConfigError
    from anatoseg.stage1.run import TEACHER_DIR

    teacher = report.get("teacher_model")
    if "teacher" in prompts and not teacher:
        raise ConfigError("teacher-only prompts need the stage-1 teacher, which this run's stage 1 did not keep "
                          "(it ran before teachers were saved, or from external teacher labels); remove "
                          "stage1/ and stage1_test/ to rerun stage 1", out)
    inputs = {"pseudo": OrganInputs(out / "stage1", Path(report["model"]), out / "stage1_test")}
    if teacher:
        inputs["teacher"] = OrganInputs(out / "stage1" / TEACHER_DIR, Path(teacher), out / "stage1_test_teacher")
    return inputs


def prepare(scale: Scale, out: Path, device: str, times: Times, progress: bool = True,
            prompts: set = frozenset({"pseudo"}), stage2_sets: Iterable[Mapping | None] = ()) -> Shared:
    """Cohorts, stage 1, stage 2 (shared, and one per distinct variant ``stage2_set`` in ``stage2_sets``) and
    the test cases' organ maps of each stage-1 model the ``prompts`` values of the variants need, each unless
    it exists."""
    from anatoseg.training.fingerprint import FINGERPRINT_NAME

    manifests = cohorts(scale, out / "data", times, progress)
    report = stage1(scale, out, manifests, device, times)
    encoders = stage2(scale, out, manifests, device, times, progress)
    own = {stage2_key(settings): stage2(scale, out, manifests, device, times, progress, settings)
           for settings in stage2_sets if settings}
    organs = organ_inputs(report, out, set(prompts))
    for source in organs.values():
        pseudo_organs(source.model, manifests["test"], source.test_dir, device, times)
    with times.measure("stage1 test organs"):
        organ_scores.score(out, {kind: source.test_dir for kind, source in organs.items()}, manifests["test"])
    return Shared(manifests=manifests, stage1=report, encoders=encoders,
                  fingerprint=out / "stage2" / FINGERPRINT_NAME, organs=organs, own_encoders=own)
