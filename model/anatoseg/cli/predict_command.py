"""``anato predict MODEL INPUT OUT``: whole-body lesion masks on the original PET grid."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from anatoseg.cli.app import app
from anatoseg.cli.options import Device, Layout, NoProgress, Overwrite, SkipBad, skipped_note, warn_skipped
from anatoseg.config import SUPPRESS_ORGANS


@app.command("predict")
def predict(
    model: Annotated[Path, typer.Argument(help="model.pt or checkpoint.pt written by `anato train`.")],
    source: Annotated[Path, typer.Argument(
        metavar="INPUT", help="One case folder (SUV + CTres/CT), a dataset folder (autoPET or nnU-Net) or a "
        "manifest .json.")],
    out: Annotated[Path, typer.Argument(help="Output folder (<case_id>.nii.gz per case), or a .nii.gz file "
                                        "for a single case.")],
    organs: Annotated[Path | None, typer.Option(
        "--organs", help="Folder of organ label maps <case_id>.nii.gz (default: the stage-1 model named in the "
        "checkpoint, else each case's own organ map in the dataset, as `anato train` uses).")] = None,
    overlap: Annotated[float | None, typer.Option(
        "--overlap", help="Window overlap in [0, 1) (default: the training config's infer.overlap).")] = None,
    batch_size: Annotated[int | None, typer.Option(
        "--batch-size", help="Windows per forward pass, >= 1 (infer.batch_size).")] = None,
    mirror: Annotated[bool | None, typer.Option(
        "--mirror/--no-mirror", help="Test-time mirroring: mean softmax over the 8 flips of each window, 8 times "
        "the work (default: the training config's infer.mirror, on unless the run turned it off).")] = None,
    suppress_organs: Annotated[str | None, typer.Option(
        "--suppress-organs", metavar="ORGANS", help="Remove predicted lesion components lying mostly (more than "
        "infer.suppress_fraction of their voxels) inside these organs, comma-separated organ names, e.g. "
        f"{SUPPRESS_ORGANS}; needs each case's organ map (see --organs). \"\" turns it off (default: the "
        "training config's infer.suppress_organs, off).")] = None,
    device: Device = None,
    layout: Layout = None,
    split: Annotated[str, typer.Option("--split", help="nnU-Net part to read: test (imagesTs) or train.")
                     ] = "test",
    no_progress: NoProgress = False,
    overwrite: Overwrite = False,
    skip_bad: SkipBad = False,
) -> None:
    """Predict lesion masks with sliding-window inference in bounded memory.

    The run is checked whole before anything is written: every case readable, no output onto an
    input of the run, no existing prediction replaced without --overwrite."""
    from anatoseg.inference.predict import OrganSource, Predictor, plan_predictions, write_predictions

    predictor = Predictor.from_checkpoint(model, device=device, overlap=overlap, batch_size=batch_size,
                                          mirror=mirror, suppress_organs=suppress_organs)
    organ_source = OrganSource(predictor, organs)
    typer.echo(f"organ maps from: {organ_source.description}; test-time mirroring "
               f"{'on' if predictor.mirror else 'off'}")
    plan = plan_predictions(predictor, organ_source, source, out, layout=layout, split=split,
                            overwrite=overwrite, skip_bad=skip_bad)
    warn_skipped(plan.skipped)
    written = 0
    for path in write_predictions(predictor, organ_source, plan, progress=not no_progress):
        typer.echo(f"wrote {path}")
        written += 1
    typer.echo(f"predicted {written} case(s){skipped_note(plan.skipped)}")
