"""``anato evaluate``: autoPET metrics of predicted lesion masks against the ground truth."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from anatoseg.cli.app import app
from anatoseg.cli.options import SkipBad, skipped_note, warn_skipped


@app.command("evaluate")
def evaluate(
    pred: Annotated[Path, typer.Argument(help="Predicted mask file, or folder of <case>.nii.gz masks.")],
    gt: Annotated[Path, typer.Argument(help="Ground-truth mask file, folder of masks (same file names), "
                                       "or a dataset folder (autoPET / nnU-Net / manifest).")],
    json_out: Annotated[Path | None, typer.Option("--json", help="Write {'cases': [...], 'mean': {...}} here.")]
    = None,
    csv_out: Annotated[Path | None, typer.Option("--csv", help="Write one row per case and a 'mean' row here.")]
    = None,
    skip_bad: SkipBad = False,
) -> None:
    """Dice, FP/FN volume (ml), lesion-wise TP/FP/FN and sensitivity, HD95; means over cases.

    Every ground-truth case must be readable and have a prediction (or, with --skip-bad, unreadable
    cases are left out, each named in a warning, and counted under the table)."""
    from anatoseg.metrics.files import evaluate_files
    from anatoseg.metrics.report import format_table, write_csv, write_json

    results, skipped = evaluate_files(pred, gt, skip_bad=skip_bad)
    warn_skipped(skipped)
    typer.echo(format_table(results))
    if skipped:
        typer.echo(f"means over {len(results)} case(s){skipped_note(skipped)}")
    if json_out is not None:
        write_json(json_out, results)
    if csv_out is not None:
        write_csv(csv_out, results)
