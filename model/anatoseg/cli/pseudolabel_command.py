"""``anato pseudolabel``: stage 1, teacher-student organ pseudo-labels for a PET-CT set."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from anatoseg.cli.app import app


@app.command("pseudolabel")
def pseudolabel(
    source: Annotated[Path, typer.Argument(help="Labelled CT organ set: TotalSegmentator format "
                                           "(<subject>/ct.nii.gz + segmentations/) or any dataset with organ "
                                           "label maps, e.g. `anato phantom SRC --domain diagnostic`.")],
    target: Annotated[Path, typer.Argument(help="PET-CT set to label (autoPET tree, nnU-Net raw or manifest).")],
    out: Annotated[Path, typer.Argument(help="Output folder: <case>.nii.gz organ maps on the PET grid, "
                                        "<case>.json per-organ confidence, report.json, stage1.pt.")],
    teacher_steps: Annotated[int | None, typer.Option("--teacher-steps", help="Teacher training steps.")] = None,
    student_steps: Annotated[int | None, typer.Option("--student-steps", help="Student training steps.")] = None,
    threshold: Annotated[float | None, typer.Option(
        "--threshold", help="Pseudo-label confidence below which voxels are ignored.")] = None,
    no_pet: Annotated[bool, typer.Option("--no-pet", help="The student reads the CT only.")] = False,
    seed: Annotated[int | None, typer.Option("--seed", help="Random seed.")] = None,
    config_file: Annotated[Path | None, typer.Option("--config", help="YAML/JSON file of stage-1 settings.")] = None,
    overrides: Annotated[list[str] | None, typer.Option(
        "--set", help="Override one setting: section.key=value (e.g. data.patch_size=32,32,32). "
        "Repeatable.")] = None,
    model: Annotated[Path | None, typer.Option("--model", help="Where to save the model (default OUT/stage1.pt).")
                     ] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace a non-empty OUT.")] = False,
    device: Annotated[str, typer.Option("--device", help="Torch device; auto: cuda when available, else cpu.")
                      ] = "auto",
) -> None:
    """Train a CT teacher on SOURCE, pseudo-label TARGET, train a mean-teacher student, write organ maps."""
    import torch

    from anatoseg.stage1 import build_config, report_text, run_pseudolabel

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"

    values: dict = {}
    if teacher_steps is not None:
        values.setdefault("teacher", {})["steps"] = teacher_steps
    if student_steps is not None:
        values.setdefault("student", {})["steps"] = student_steps
    if threshold is not None:
        values.setdefault("student", {})["threshold"] = threshold
    if no_pet:
        values.setdefault("student", {})["use_pet"] = False
    if seed is not None:
        values["seed"] = seed
    config = build_config(config_file, overrides or (), values)
    report = run_pseudolabel(source, target, out, config, model_path=model, overwrite=overwrite, device=device)
    typer.echo(report_text(report))
