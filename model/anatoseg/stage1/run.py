"""Stage 1 end to end (``anato pseudolabel``): teacher, pseudo-labels, student, organ maps, Dice report.

:func:`run_pseudolabel` writes, into ``OUT`` (all at once: the folder appears
complete or not at all):

- ``<case_id>.nii.gz``: uint8 organ ids of :data:`anatoseg.data.labels.ORGANS`
  by the student (with ``student.cross_fit`` K: by the student trained without the
  case's fold, :func:`fold_of`) on the case's PET grid exactly as stored in its SUV file (shape and affine), the
  layout ``anato train --organs OUT`` / ``anato predict --organs OUT`` read;
- ``<case_id>.json``: per-organ confidence of that map,
  ``{"case", "organs": {name: {"id", "voxels", "volume_ml", "confidence"}}}``
  where ``confidence`` is the mean softmax probability of the organ over the
  voxels labelled with it (None for an organ with no voxel);
- ``report.json``: organ Dice of the teacher and of the student against the
  ground-truth organs where the target cases have them (``dice``,
  ``dice_per_case``), the student's gain (``student_gain``, mean organ Dice),
  pseudo-label statistics (per-class thresholds, share kept, accuracy of kept
  and dropped voxels), timings, the config;
- ``stage1.pt``: the student (see :mod:`anatoseg.stage1.model`), unless another
  path is given;
- ``teacher/<case_id>.nii.gz``: the teacher's organ map of each target case (the
  unfiltered pseudo-labels the first student round learned from; with external teacher
  labels, those), on the same PET grid: ``anato train --organs OUT/teacher`` trains
  stage 3 on teacher-only prompts;
- ``teacher.pt``: the CT-only teacher in the same checkpoint format (not written with
  external teacher labels), which labels new cases for such a model.

"The student" is always the mean-teacher (EMA) weights of the student network:
they are what is evaluated, written and saved.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from anatoseg.data.atomic import atomic_dir
from anatoseg.data.labels import ORGAN_NAMES
from anatoseg.data.nifti import save_nifti, spacing_of
from anatoseg.data.paths import inside
from anatoseg.data.resample import resample_to_grid
from anatoseg.errors import AnatoError
from anatoseg.stage1.config import Stage1Config
from anatoseg.stage1.data import Stage1Case, load_source, load_target, make_preprocessing
from anatoseg.stage1.external import external_labels
from anatoseg.stage1.filtering import class_thresholds, trusted_voxels
from anatoseg.stage1.infer import organ_confidence, segment
from anatoseg.stage1.loop import NUM_CLASSES, PseudoLabels, inputs_of, train_student, train_teacher
from anatoseg.stage1.model import save_organ_model
from anatoseg.stage1.net import OrganUNet
from anatoseg.stage1.report import format_table, organ_dice, summarise
from anatoseg.training.device import choose_device
from anatoseg.training.run_folder import RUN_FILES, hold

MODEL_NAME = "stage1.pt"
REPORT_NAME = "report.json"
TEACHER_DIR = "teacher"  # the teacher's organ maps of the target cases
TEACHER_MODEL = "teacher.pt"
MODELS = ("teacher", "student")


def _check_out(out: Path, inputs: list[Path], overwrite: bool) -> None:
    resolved = out.resolve()
    for path in inputs:
        if resolved == path.resolve() or resolved in path.resolve().parents:
            raise AnatoError("output folder would contain the input data; choose another folder", out)
    if out.exists() and not out.is_dir():
        raise AnatoError("exists and is not a folder", out)
    if out.exists() and any(p.name not in RUN_FILES for p in out.iterdir()) and not overwrite:
        raise AnatoError("exists and is not empty; pass --overwrite to replace it", out)


def _segment(net: OrganUNet, image: np.ndarray, config: Stage1Config, device) -> tuple[np.ndarray, np.ndarray]:
    return segment(net, image, patch=config.data.patch_size, overlap=config.data.overlap, slab=config.data.slab,
                   device=device)


def _pseudo_label_stats(cases: list[Stage1Case], pseudo: list[PseudoLabels], thresholds: np.ndarray) -> dict:
    """Per-class thresholds, share of working-grid voxels kept, and (with ground truth) the voxel
    accuracy of the kept and of the dropped pseudo-labels."""
    kept = total = 0
    right = {"kept": 0, "dropped": 0}
    seen = {"kept": 0, "dropped": 0}
    for case, p in zip(cases, pseudo, strict=True):
        mask = p.trusted
        kept += int(mask.sum())
        total += mask.size
        if case.work.organs is not None:
            correct = p.labels == case.work.organs
            for name, part in (("kept", mask), ("dropped", ~mask)):
                right[name] += int(correct[part].sum())
                seen[name] += int(part.sum())
    return {"thresholds": {ORGAN_NAMES[k]: round(float(t), 3) for k, t in enumerate(thresholds)},
            "kept_fraction": kept / max(total, 1),
            **{f"accuracy_{name}": (right[name] / seen[name] if seen[name] else None) for name in seen}}


class _Clock:
    """Seconds per phase of the run (``lap``) and in all (``total``)."""

    def __init__(self):
        self.timings: dict[str, float] = {}
        self.start = self.last = time.perf_counter()

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.timings[name] = round(now - self.last, 2)
        self.last = now

    def total(self) -> dict[str, float]:
        return {**self.timings, "total": round(time.perf_counter() - self.start, 2)}


def run_pseudolabel(source: str | os.PathLike, target: str | os.PathLike, out: str | os.PathLike,
                    config: Stage1Config, *, model_path: str | os.PathLike | None = None,
                    overwrite: bool = False, device: str | torch.device | None = None,
                    teacher_labels: str | os.PathLike | None = None) -> dict:
    """Run stage 1 (see the module docstring for what is written); returns the report dict.

    ``source``: the labelled CT organ set (:func:`~anatoseg.stage1.data.load_source`);
    ``target``: the PET-CT set to label. ``teacher_labels``: a folder of organ predictions made
    elsewhere on the target CTs (:mod:`anatoseg.stage1.external`), used as the teacher's output: no
    teacher is trained and the student starts from scratch (the source set still fills
    ``student.source_fraction`` of its batches). ``model_path``: where the model goes
    (default ``OUT/stage1.pt``). ``device``: as :func:`anatoseg.training.device.choose_device`
    (default: CUDA when available). Raises AnatoError for missing inputs, a source
    without organ labels, missing teacher labels, or a non-empty ``out`` without ``overwrite``.
    """
    out, source, target, device = Path(out), Path(source), Path(target), choose_device(device)
    inputs = [source, target] + ([] if teacher_labels is None else [Path(teacher_labels)])
    _check_out(out, inputs, overwrite)
    if teacher_labels is not None and not Path(teacher_labels).is_dir():
        raise AnatoError("not a folder (expected the teacher labels, one entry per target case)", teacher_labels)
    with hold(out):
        return _run(source, target, out, config, model_path, device, teacher_labels)


def _run(source: Path, target: Path, out: Path, config: Stage1Config, model_path: str | os.PathLike | None,
         device: torch.device, teacher_labels: str | os.PathLike | None) -> dict:
    """:func:`run_pseudolabel` once ``out`` is checked and held."""
    clock = _Clock()
    params = make_preprocessing(config.data.spacing)
    source_cases = load_source(source, params)
    clock.lap("load_source")
    teacher = None if teacher_labels is not None else train_teacher(source_cases, config, device)
    clock.lap("teacher")
    target_cases = load_target(target, params)
    if config.student.cross_fit > len(target_cases):
        raise AnatoError(f"student.cross_fit={config.student.cross_fit} folds need as many target cases, "
                         f"got {len(target_cases)}", target)
    clock.lap("load_target")
    if teacher is None:
        raw = [external_labels(teacher_labels, c.case_id, c.work) for c in target_cases]
    else:
        raw = _segment_all(teacher, target_cases, config, device, use_pet=False, desc="pseudo-labels")
    pseudo, thresholds = _filter(raw, config)
    clock.lap("pseudo_labels")
    student, rounds = _train_rounds(target_cases, pseudo, thresholds, teacher, config, device, source_cases)
    clock.lap("student")
    writers = [student] * len(target_cases)
    if config.student.cross_fit:
        writers = _fold_students(target_cases, pseudo, thresholds, teacher, config, device, source_cases)
        clock.lap("cross_fit")
    del source_cases
    model = out / MODEL_NAME if model_path is None else Path(model_path)
    with atomic_dir(out) as tmp:
        per_case = _write_labels(tmp, writers, target_cases, pseudo, config, device)
        clock.lap("predict_write")
        dice = ({name: summarise(per_case[name]) for name in MODELS} if per_case["teacher"] else None)
        report = {
            "source": str(source), "target": str(target), "n_target_cases": len(target_cases),
            "teacher": "trained" if teacher_labels is None else f"external labels from {teacher_labels}",
            "dice": dice,
            "student_gain": None if dice is None else dice["student"]["mean_dice"] - dice["teacher"]["mean_dice"],
            "dice_per_case": per_case if dice is not None else None,
            "pseudo_labels": rounds[0], "pseudo_label_rounds": rounds, "cross_fit": config.student.cross_fit,
            "config": config.to_dict(),
        }
        summary = None if dice is None else {name: dice[name]["mean_dice"] for name in MODELS}
        save_organ_model(tmp / MODEL_NAME if model_path is None else model, student, config, params, summary)
        report["model"] = str(model)
        report["teacher_labels"] = str(out / TEACHER_DIR)
        report["teacher_model"] = None
        if teacher is not None:
            save_organ_model(tmp / TEACHER_MODEL, teacher, config, params,
                             None if summary is None else {"teacher": summary["teacher"]})
            report["teacher_model"] = str(out / TEACHER_MODEL)
        report["seconds"] = clock.total()
        (tmp / REPORT_NAME).write_text(json.dumps(report, indent=2) + "\n")
    return report


def _train_rounds(cases: list[Stage1Case], pseudo: list[PseudoLabels], thresholds: np.ndarray,
                  start: OrganUNet | None, config: Stage1Config, device, source_cases: list[Stage1Case],
                  desc: str = "") -> tuple[OrganUNet, list[dict]]:
    """The student after ``config.student.rounds`` rounds on ``cases`` (from ``start``, the teacher, or from
    scratch when None), each later round relabelling ``cases`` with the previous student; with the
    pseudo-label statistics of every round."""
    student, rounds = start, []
    for round_index in range(config.student.rounds):
        if round_index:
            raw = _segment_all(student, cases, config, device, use_pet=config.student.use_pet,
                               desc=f"relabel {round_index}{desc}")
            pseudo, thresholds = _filter(raw, config)
        student = train_student(cases, pseudo, student, config, device, source=source_cases)
        rounds.append(_pseudo_label_stats(cases, pseudo, thresholds))
    return student, rounds


def fold_of(index: int, folds: int) -> int:
    """The cross-fitting fold of the ``index``-th target case (cases in their loading order)."""
    return index % folds


def _fold_students(cases: list[Stage1Case], pseudo: list[PseudoLabels], thresholds: np.ndarray,
                   start: OrganUNet | None, config: Stage1Config, device, source_cases: list[Stage1Case]
                   ) -> list[OrganUNet]:
    """Per target case, the student trained without the case's fold (``config.student.cross_fit`` folds)."""
    folds = config.student.cross_fit
    writers: list[OrganUNet | None] = [None] * len(cases)
    for fold in range(folds):
        keep = [i for i in range(len(cases)) if fold_of(i, folds) != fold]
        net, _ = _train_rounds([cases[i] for i in keep], [pseudo[i] for i in keep], thresholds, start, config,
                               device, source_cases, desc=f" (fold {fold + 1}/{folds})")
        writers = [w if fold_of(i, folds) != fold else net for i, w in enumerate(writers)]
    return writers


def _segment_all(net: OrganUNet, cases: list[Stage1Case], config: Stage1Config, device, *, use_pet: bool,
                 desc: str) -> list[tuple[np.ndarray, np.ndarray]]:
    """``(labels, confidence)`` of ``net`` on every case's working grid (CT, or CT + PET with ``use_pet``)."""
    return [_segment(net, inputs_of(c.work.image, use_pet, config), config, device)
            for c in tqdm(cases, desc=desc, unit="case")]


def _filter(raw: list[tuple[np.ndarray, np.ndarray]], config: Stage1Config
            ) -> tuple[list[PseudoLabels], np.ndarray]:
    """Pseudo-labels with the voxels trusted under the per-class thresholds (:mod:`.filtering`)."""
    thresholds = class_thresholds([r[0] for r in raw], [r[1] for r in raw], NUM_CLASSES,
                                  config.student.threshold, config.student.class_fraction)
    return [PseudoLabels(labels, conf, trusted_voxels(labels, conf, thresholds)) for labels, conf in raw], thresholds


def _write_labels(tmp: Path, students: list[OrganUNet], cases: list[Stage1Case], pseudo: list[PseudoLabels],
                  config: Stage1Config, device) -> dict[str, dict]:
    """Each case's organ map (by its entry of ``students``) and confidence JSON into ``tmp``, and the
    teacher's first pseudo-labels into ``tmp/teacher``; the organ Dice of teacher and student per case
    where there is ground truth (``{model: {case_id: dice}}``)."""
    per_case = {name: {} for name in MODELS}
    for case, p, student in zip(tqdm(cases, desc="writing", unit="case"), pseudo, students, strict=True):
        labels, confidence = _segment(student, inputs_of(case.work.image, config.student.use_pet, config),
                                      config, device)
        if case.truth is not None:
            for name, pred in (("teacher", p.labels), ("student", labels)):
                per_case[name][case.case_id] = organ_dice(case.work.restore(pred, order=0), case.truth)
        final = resample_to_grid(labels, case.work.affine, case.output_shape, case.output_affine, order=0,
                                 dtype=np.uint8)
        taught = resample_to_grid(p.labels, case.work.affine, case.output_shape, case.output_affine, order=0,
                                  dtype=np.uint8)
        save_nifti(inside(tmp / TEACHER_DIR, f"{case.case_id}.nii.gz"), taught, case.output_affine, dtype=np.uint8)
        final_conf = resample_to_grid(confidence, case.work.affine, case.output_shape, case.output_affine,
                                      order=0, fill=1.0)
        save_nifti(inside(tmp, f"{case.case_id}.nii.gz"), final, case.output_affine, dtype=np.uint8)
        voxel_ml = float(np.prod(spacing_of(case.output_affine))) / 1000.0
        record = {"case": case.case_id, "organs": organ_confidence(final, final_conf, voxel_ml)}
        inside(tmp, f"{case.case_id}.json").write_text(json.dumps(record, indent=2) + "\n")
    return per_case


def report_text(report: dict) -> str:
    """The report as terminal text: the Dice table (when there was ground truth) and the gains."""
    lines = []
    stats = report["pseudo_labels"]
    kept = (f"pseudo-labels: {100 * stats['kept_fraction']:.1f}% of voxels kept (per-class confidence thresholds "
            f"{min(stats['thresholds'].values()):.2f}..{max(stats['thresholds'].values()):.2f})")
    if stats["accuracy_kept"] is not None:
        kept += (f" (voxel accuracy {stats['accuracy_kept']:.3f} kept vs "
                 f"{_fmt(stats['accuracy_dropped'])} dropped)")
    if report["dice"] is None:
        lines.append("no ground-truth organs in the target set: Dice not measured")
    else:
        lines.append(f"organ Dice on the target domain ({report['n_target_cases']} cases):")
        lines.append(format_table(report["dice"]))
        lines.append(f"student gain over the teacher: {report['student_gain']:+.3f} mean organ Dice")
    lines.append(kept)
    lines.append(f"student model: {report['model']}; {report['seconds']['total']:.1f} s in all")
    return "\n".join(lines)


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"
