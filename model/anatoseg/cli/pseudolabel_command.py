"""``anato pseudolabel``: stage 1, teacher-student organ pseudo-labels for a PET-CT set."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from anatoseg.cli import options as opt
from anatoseg.cli.app import app


@app.command("pseudolabel")
def pseudolabel(
    source: Annotated[Path, typer.Argument(help="Labelled CT organ set: TotalSegmentator format "
                                           "(<subject>/ct.nii.gz + segmentations/) or any dataset with organ "
                                           "label maps, e.g. `anato phantom SRC --domain diagnostic`.")],
    target: Annotated[Path, typer.Argument(help="PET-CT set to label (autoPET tree, nnU-Net raw or manifest).")],
    out: Annotated[Path, typer.Argument(help="Output folder: <case>.nii.gz organ maps on the PET grid, "
                                        "<case>.json per-organ confidence, report.json, stage1.pt.")],
    config: opt.ConfigFile = None,
    overrides: opt.Overrides = None,
    steps: opt.Steps = None,
    teacher_steps: Annotated[int | None, typer.Option("--teacher-steps", help="Teacher training steps "
                                                      "(teacher.steps).")] = None,
    student_steps: Annotated[int | None, typer.Option("--student-steps", help="Student training steps "
                                                      "(student.steps).")] = None,
    batch_size: opt.BatchSize = None,
    lr: opt.LearningRate = None,
    threshold: Annotated[float | None, typer.Option(
        "--threshold", help="Pseudo-label confidence below which voxels are ignored (student.threshold).")] = None,
    teacher_labels: Annotated[Path | None, typer.Option(
        "--teacher-labels", help="Organ predictions made elsewhere on the TARGET CTs, used instead of training a "
        "teacher: per case <case_id>/ with TotalSegmentator per-structure files (masks or probabilities) or "
        "<case_id>.nii.gz multi-label (+ classes.json).")] = None,
    rounds: Annotated[int | None, typer.Option("--rounds", help="Student rounds; each later round relabels "
                                               "TARGET with the previous student (student.rounds).")] = None,
    no_pet: Annotated[bool, typer.Option("--no-pet", help="The student reads the CT only.")] = False,
    seed: opt.Seed = None,
    model: Annotated[Path | None, typer.Option("--model", help="Where to save the model (default OUT/stage1.pt).")
                     ] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace a non-empty OUT.")] = False,
    device: opt.Device = None,
) -> None:
    """Train a CT teacher on SOURCE (or read --teacher-labels), pseudo-label TARGET, train a mean-teacher
    student on TARGET mixed with SOURCE, write organ maps."""
    from anatoseg.stage1 import Stage1Config, report_text, run_pseudolabel

    typed = [("teacher.steps", teacher_steps), ("student.steps", student_steps), ("student.threshold", threshold),
             ("student.use_pet", False if no_pet else None), ("student.rounds", rounds)]
    settings = opt.option_overrides(Stage1Config, overrides, typed, steps=steps, batch_size=batch_size, lr=lr,
                                seed=seed)
    resolved = Stage1Config.build(config, settings)
    report = run_pseudolabel(source, target, out, resolved, model_path=model, overwrite=overwrite,
                             device=device, teacher_labels=teacher_labels)
    typer.echo(report_text(report))
