"""Writing phantom cases to disk in the autoPET layout, with a manifest.

``<out>/<case_id>/study/{SUV,CT,CTres,SEG,ORGANS}.nii.gz`` and ``<out>/manifest.json``
(format of :mod:`anatoseg.data.layouts`). SUV is float32, CT and CTres int16 HU,
SEG and ORGANS uint8; SEG, ORGANS, SUV and CTres share the PET grid, CT has its
own. Each case folder appears complete or not at all (written to a temporary
folder, then renamed); the manifest is written last.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from tqdm import tqdm

from anatoseg import __version__
from anatoseg.data.atomic import atomic_dir, write_text_atomic
from anatoseg.data.labels import organ_table
from anatoseg.data.layouts import MANIFEST_FORMAT, MANIFEST_NAME
from anatoseg.data.nifti import save_nifti
from anatoseg.data.phantom.generate import DEFAULT_SPACING, STEPS, PhantomCase, generate_case
from anatoseg.errors import DataError

STUDY = "study"
FILES = {"pet": "SUV.nii.gz", "ct": "CT.nii.gz", "ctres": "CTres.nii.gz", "lesions": "SEG.nii.gz",
         "organs": "ORGANS.nii.gz"}


def write_phantom_case(case: PhantomCase, root: str | os.PathLike) -> dict:
    """Write ``case`` under ``root/<case_id>/study/``; returns its manifest entry (paths relative to ``root``)."""
    root = Path(root)
    relative = Path(case.case_id) / STUDY
    with atomic_dir(root / case.case_id) as tmp:
        study = tmp / STUDY
        save_nifti(study / FILES["pet"], case.pet, case.pet_affine, dtype=np.float32)
        save_nifti(study / FILES["ct"], case.ct, case.ct_affine, dtype=np.int16)
        save_nifti(study / FILES["ctres"], np.rint(case.ctres), case.pet_affine, dtype=np.int16)
        save_nifti(study / FILES["lesions"], case.lesions, case.pet_affine, dtype=np.uint8)
        save_nifti(study / FILES["organs"], case.organs, case.pet_affine, dtype=np.uint8)
    entry = {"case": case.case_id, **{key: str(relative / name) for key, name in FILES.items()}}
    entry.update({"domain": case.params["domain"], "positive": bool(case.lesion_info),
                  "lesion_list": case.lesion_info, "phantom": case.params})
    return entry


def negative_indices(cases: int, negatives: float, seed: int) -> set[int]:
    """Which of ``cases`` case indices are lesion-free: ``round(negatives * cases)`` of them, fixed by ``seed``."""
    count = int(round(negatives * cases))
    order = np.random.default_rng([seed, 1 << 20]).permutation(cases)
    return {int(i) for i in order[:count]}


def _check_out(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise DataError("exists and is not a folder", out)
    if out.is_dir() and any(out.iterdir()) and not (out / MANIFEST_NAME).is_file():
        raise DataError(f"is not empty and holds no {MANIFEST_NAME}; refusing to write phantom cases into it", out)


def generate_cohort(out: str | os.PathLike, *, cases: int = 1, seed: int = 0, spacing: Sequence[float] | float =
                    DEFAULT_SPACING, ct_spacing=None, domain: str = "petct", negatives: float = 0.0,
                    progress: bool = True) -> Path:
    """Generate and write ``cases`` phantom cases and their manifest; returns the manifest path.

    Case ``i`` is ``generate_case([seed, i], ...)`` named ``phantom_s<seed>_<i:04d>``, so a
    case does not depend on how many others are made. ``negatives``: fraction of
    lesion-free cases (0 to 1). ``progress``: show a tqdm bar on stderr.
    """
    out = Path(out)
    if cases < 1:
        raise ValueError("cases must be at least 1")
    if not 0.0 <= negatives <= 1.0:
        raise ValueError("negatives must be between 0 and 1")
    _check_out(out)
    negative = negative_indices(cases, negatives, seed)
    entries = []
    with tqdm(total=cases * (len(STEPS) + 1), desc="phantom", unit="step", disable=not progress) as bar:
        for i in range(cases):
            bar.set_postfix_str(f"case {i + 1}/{cases}")
            case = generate_case([seed, i], spacing=spacing, ct_spacing=ct_spacing, domain=domain,
                                 positive=i not in negative, case_id=f"phantom_s{seed}_{i:04d}",
                                 on_step=lambda _: bar.update(1))
            entries.append(write_phantom_case(case, out))
            bar.update(1)
    manifest = {"format": MANIFEST_FORMAT, "version": 1,
                "generator": {"tool": "anato phantom", "anatoseg": __version__, "seed": seed, "cases": cases,
                              "spacing": list(np.broadcast_to(spacing, 3).astype(float)),
                              "ct_spacing": None if ct_spacing is None else list(np.broadcast_to(ct_spacing, 3)
                                                                                   .astype(float)),
                              "domain": domain, "negatives": negatives},
                "organ_labels": organ_table(), "cases": entries}
    path = out / MANIFEST_NAME
    write_text_atomic(path, json.dumps(manifest, indent=1) + "\n")
    return path
