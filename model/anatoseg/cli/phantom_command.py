"""``anato phantom``: write synthetic whole-body PET/CT cases (autoPET layout + manifest)."""

from __future__ import annotations

import math
import re
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from anatoseg.cli.app import app
from anatoseg.cli.options import Overwrite


class Domain(str, Enum):
    petct = "petct"
    diagnostic = "diagnostic"


def parse_spacing(text: str | None, option: str) -> tuple[float, float, float] | None:
    """Voxel size given as (Z, Y, X) mm -> the generator's (X, Y, Z): ``"4"`` -> (4, 4, 4); ``"3,4,4"``,
    ``"3x4x4"`` or ``"3 4 4"`` (z = 3 mm) -> (4, 4, 3); None stays None."""
    if text is None:
        return None
    try:
        values = [float(v) for v in re.split(r"\s*[,x]\s*|\s+", text.strip())]
    except ValueError:
        values = []
    if len(values) == 1:
        values *= 3
    if len(values) != 3 or not all(0 < v < math.inf for v in values):
        raise typer.BadParameter(f"expected one or three positive finite numbers in mm, got {text!r}",
                                 param_hint=option)
    return tuple(reversed(values))


@app.command("phantom")
def phantom(
    out: Annotated[Path, typer.Argument(help="Output folder (created; cases go to OUT/<case>/study/).")],
    cases: Annotated[int, typer.Option("--cases", min=1, help="Number of cases.")] = 1,
    seed: Annotated[int, typer.Option("--seed", help="Cohort seed; case i uses (seed, i).")] = 0,
    spacing: Annotated[str, typer.Option("--spacing", help="PET voxel size in mm (Z, Y, X): one number or "
                                         "Z,Y,X.")] = "4",
    ct_spacing: Annotated[str | None, typer.Option(
        "--ct-spacing", help="CT voxel size in mm (Z, Y, X): one number or Z,Y,X (default: PET spacing "
        "x 0.75 in z, x 0.5 in-plane).")] = None,
    domain: Annotated[Domain, typer.Option("--domain", help="petct: low-dose unenhanced CT; diagnostic: "
                                           "contrast-enhanced, sharper, less noise.")] = Domain.petct,
    negatives: Annotated[float, typer.Option("--negatives", min=0.0, max=1.0,
                                             help="Fraction of lesion-free cases (0 to 1); they keep every "
                                             "non-lesion uptake source.")] = 0.0,
    misregistration: Annotated[float, typer.Option(
        "--misregistration", min=0.0, help="Scale of the PET-CT misregistration: rigid shift (sd 1.5 mm) and "
        "breathing (4-12 mm cranio-caudal at the diaphragm) of the PET; 1 realistic, 0 none.")] = 1.0,
    progress: Annotated[bool, typer.Option("--progress/--no-progress", help="Show a progress bar.")] = True,
    append: Annotated[bool, typer.Option("--append", help="Add --cases cases to a cohort OUT made by `anato "
                                         "phantom` with the same settings (its manifest says which).")] = False,
    overwrite: Overwrite = False,
) -> None:
    """Generate a synthetic female whole-body PET/CT cohort with breast-cancer lesions.

    OUT must be empty or absent, unless --append or --overwrite is given."""
    import json

    from anatoseg.data.phantom import generate_cohort

    manifest = generate_cohort(out, cases=cases, seed=seed, spacing=parse_spacing(spacing, "--spacing"),
                               ct_spacing=parse_spacing(ct_spacing, "--ct-spacing"), domain=domain.value,
                               negatives=negatives, misregistration=misregistration, progress=progress,
                               append=append, overwrite=overwrite)
    entries = json.loads(manifest.read_text())["cases"][-cases:]
    n_lesions = sum(len(e["lesion_list"]) for e in entries)
    positive = sum(e["positive"] for e in entries)
    typer.echo(f"wrote {cases} cases ({positive} with lesions, {n_lesions} lesions) to {out}; "
               f"manifest {manifest}")
