"""``anato view``: a PNG of one case (PET MIPs, lesion overlays, CT slice, organ outlines)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from anatoseg.cli.app import app


def _study_of_case_folder(path: Path) -> Path:
    """``path`` itself, or its one study when ``path`` is an autoPET case (patient) folder ``CASE/<study>/SUV``."""
    from anatoseg.data.nifti import NIFTI_SUFFIXES
    from anatoseg.data.paths import visible_entries
    from anatoseg.errors import DataError

    def has_suv(folder: Path) -> bool:
        return any((folder / f"SUV{suffix}").is_file() for suffix in NIFTI_SUFFIXES)

    if not path.is_dir() or has_suv(path):
        return path
    studies = [s for s in visible_entries(path) if s.is_dir() and has_suv(s)]
    if len(studies) > 1:
        names = ", ".join(s.name for s in studies)
        raise DataError(f"case folder holds {len(studies)} studies ({names}); pass one of them", path)
    return studies[0] if len(studies) == 1 else path


def load_view_input(path: Path):
    """A Case for a case folder (``CASE`` or ``CASE/<study>``) / dataset with one case / a case's SUV file,
    else (PET Volume (Z, Y, X), id)."""
    from anatoseg.data.case import load_case
    from anatoseg.data.layouts import find_cases
    from anatoseg.data.nifti import Volume, file_to_zyx, is_nifti, load_nifti, strip_nifti_suffix
    from anatoseg.errors import DataError

    if not path.exists():
        raise DataError("file not found", path)
    if path.is_file() and is_nifti(path):
        stem = strip_nifti_suffix(path.name)
        has_ct = any((path.parent / f"{name}{suffix}").is_file()
                     for name in ("CT", "CTres") for suffix in (".nii.gz", ".nii"))
        if stem != "SUV" or not has_ct:
            pet = load_nifti(path)
            data, affine = file_to_zyx(pet.data, pet.affine)
            return Volume(data=data, affine=affine, path=path), stem
        path = path.parent
    cases = find_cases(_study_of_case_folder(path))
    if len(cases) != 1:
        raise DataError(f"holds {len(cases)} cases; pass one case folder or a case's SUV file", path)
    return load_case(cases[0]), cases[0].case_id


@app.command("view")
def view(
    case: Annotated[Path, typer.Argument(help="A case folder (autoPET CASE or CASE/<study>), a "
                                         "one-case dataset, or a PET/SUV file.")],
    pred: Annotated[Path | None, typer.Option("--pred", help="Predicted lesion mask on the PET grid, "
                                              "outlined in magenta.")] = None,
    out: Annotated[Path | None, typer.Option("--out", help="PNG to write (default: ./<case>.png).")] = None,
) -> None:
    """Render PET MIPs (coronal, sagittal), a CT slice, lesion and organ overlays to a PNG."""
    import numpy as np

    from anatoseg.data.case import Case
    from anatoseg.data.labels import LESION_LABEL_VALUES
    from anatoseg.data.nifti import file_to_zyx, load_label_nifti, same_grid
    from anatoseg.errors import DataError
    from anatoseg.viz.mip import render_case, render_png

    loaded, case_id = load_view_input(case)
    pet_shape, pet_affine = loaded.shape, loaded.affine
    pred_data = None
    if pred is not None:
        volume = load_label_nifti(pred, LESION_LABEL_VALUES, what="lesion mask")
        pred_data, pred_affine = file_to_zyx(volume.data, volume.affine)
        if not same_grid(pred_data.shape, pred_affine, pet_shape, pet_affine):
            raise DataError(f"prediction is not on the PET grid of {case} (shape {volume.shape} vs {pet_shape}, "
                            "or affine differs)", pred)
        pred_data = np.asarray(pred_data)
    out = out if out is not None else Path.cwd() / f"{case_id}.png"
    if isinstance(loaded, Case):
        render_case(loaded, out, pred=pred_data)
    else:
        render_png(out, loaded.data, loaded.affine, pred=pred_data, title=case_id)
    typer.echo(f"wrote {out}")
