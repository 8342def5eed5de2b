"""Writing phantom cases to disk in the autoPET layout, with a manifest.

``<out>/<patient>/study/{SUV,CT,CTres,SEG,ORGANS}.nii.gz`` and ``<out>/manifest.json``
(format of :mod:`anatoseg.data.layouts`). SUV is float32, CT and CTres int16 HU,
SEG and ORGANS uint8; SEG, ORGANS, SUV and CTres share the PET grid, CT has its
own. Each case folder appears complete or not at all (written to a temporary
folder, then renamed); the manifest is written last. The case id is the autoPET one,
``<patient>_study`` (:func:`anatoseg.data.case_ids.autopet_case_id`), so a case has the
same id whether it is read through the manifest or as a folder.

A non-empty OUT is refused unless told: ``append`` adds cases to a cohort that
``anato phantom`` made with the same settings (recorded in its manifest), leaving the
existing ones alone; ``overwrite`` replaces the cohort's case folders and manifest.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from tqdm import tqdm

from anatoseg import __version__
from anatoseg.data.atomic import atomic_dir, read_json, write_text_atomic
from anatoseg.data.case_ids import autopet_case_id
from anatoseg.data.labels import organ_table
from anatoseg.data.layouts import MANIFEST_FORMAT, MANIFEST_NAME, find_cases
from anatoseg.data.nifti import save_nifti
from anatoseg.data.paths import inside, visible_entries
from anatoseg.data.phantom.generate import DEFAULT_SPACING, STEPS, PhantomCase, generate_case
from anatoseg.errors import ConfigError, DataError

TOOL = "anato phantom"
SETTINGS = ("seed", "spacing", "ct_spacing", "domain", "negatives", "misregistration")
"""The generator settings an ``append`` must repeat (recorded in the manifest's ``generator``)."""

STUDY = "study"
FILES = {"pet": "SUV.nii.gz", "ct": "CT.nii.gz", "ctres": "CTres.nii.gz", "lesions": "SEG.nii.gz",
         "organs": "ORGANS.nii.gz"}


def case_folder(seed: int, index: int) -> str:
    """The patient folder of case ``index`` of the cohort ``seed``: ``phantom_s<seed>_<index:04d>``."""
    return f"phantom_s{seed}_{index:04d}"


def write_phantom_case(case: PhantomCase, root: str | os.PathLike, folder: str | None = None) -> dict:
    """Write ``case`` under ``root/<folder>/study/`` (``folder``: default the case id); returns its manifest
    entry (paths relative to ``root``)."""
    root = Path(root)
    folder = case.case_id if folder is None else folder
    relative = Path(folder) / STUDY
    with atomic_dir(inside(root, folder)) as tmp:
        study = tmp / STUDY
        save_nifti(study / FILES["pet"], case.pet, case.pet_affine, dtype=np.float32)
        save_nifti(study / FILES["ct"], case.ct, case.ct_affine, dtype=np.int16)
        save_nifti(study / FILES["ctres"], np.rint(case.ctres), case.pet_affine, dtype=np.int16)
        save_nifti(study / FILES["lesions"], case.lesions, case.pet_affine, dtype=np.uint8)
        save_nifti(study / FILES["organs"], case.organs, case.pet_affine, dtype=np.uint8)
    entry = {"case": case.case_id, **{key: str(relative / name) for key, name in FILES.items()}}
    entry.update({"domain": case.params["domain"], "positive": bool(case.lesion_info),
                  "lesion_list": case.lesion_info, "uptake_sources": case.uptake_sources, "phantom": case.params})
    return entry


def cases_with_lesions(manifest: str | os.PathLike) -> list[tuple]:
    """``[(CaseFiles, lesion list)]`` of a phantom manifest, in manifest order; a case without a
    ``lesion_list`` (or another layout's entry) gets ``[]``."""
    lists = {entry["case"]: entry.get("lesion_list") or [] for entry in read_json(Path(manifest))["cases"]}
    return [(files, lists.get(files.case_id, [])) for files in find_cases(manifest)]


def negative_indices(cases: int, negatives: float, seed: int) -> set[int]:
    """Which of ``cases`` case indices are lesion-free: ``round(negatives * cases)`` of them, fixed by ``seed``."""
    count = int(round(negatives * cases))
    order = np.random.default_rng([seed, 1 << 20]).permutation(cases)
    return {int(i) for i in order[:count]}


def _existing_entries(out: Path, settings: dict, append: bool, overwrite: bool) -> list[dict]:
    """The manifest entries to keep: none for an empty (or absent) OUT or with ``overwrite``, the cohort's
    own with ``append``; ConfigError/DataError for a non-empty OUT otherwise or other settings."""
    if out.exists() and not out.is_dir():
        raise DataError("exists and is not a folder", out)
    if not out.is_dir() or not visible_entries(out) or overwrite:
        return []
    if not append:
        raise DataError("is not empty; refusing to write phantom cases into it (pass --append to add cases to "
                        "a cohort made with the same settings, or --overwrite to replace it)", out)
    manifest = read_json(out / MANIFEST_NAME) if (out / MANIFEST_NAME).is_file() else {}
    generator = manifest.get("generator") if isinstance(manifest, dict) else None
    if not isinstance(generator, dict) or generator.get("tool") != TOOL:
        raise DataError(f"--append: holds no {MANIFEST_NAME} written by `{TOOL}`", out)
    differ = [f"{key} {generator.get(key)!r} (asked {settings[key]!r})" for key in SETTINGS
              if generator.get(key) != settings[key]]
    if differ:
        raise ConfigError(f"--append: the cohort was made with other settings: {'; '.join(differ)}", out)
    return list(manifest["cases"])


def _settings(seed: int, spacing, ct_spacing, domain: str, negatives: float, misregistration: float) -> dict:
    for name, value in (("spacing", spacing), ("ct_spacing", ct_spacing)):
        if value is not None and not (np.isfinite(value).all() and (np.asarray(value) > 0).all()):
            raise ConfigError(f"{name} must be positive finite sizes in mm, got {value}")
    if not 0.0 <= negatives <= 1.0:
        raise ConfigError(f"negatives must be between 0 and 1, got {negatives}")
    if not (np.isfinite(misregistration) and misregistration >= 0):
        raise ConfigError(f"misregistration must be a finite scale >= 0 (1 realistic, 0 none), got {misregistration}")
    return {"seed": seed, "spacing": [float(v) for v in np.broadcast_to(spacing, 3)],
            "ct_spacing": None if ct_spacing is None else [float(v) for v in np.broadcast_to(ct_spacing, 3)],
            "domain": domain, "negatives": negatives, "misregistration": float(misregistration)}


def generate_cohort(out: str | os.PathLike, *, cases: int = 1, seed: int = 0, spacing: Sequence[float] | float =
                    DEFAULT_SPACING, ct_spacing=None, domain: str = "petct", negatives: float = 0.0,
                    progress: bool = True, append: bool = False, overwrite: bool = False,
                    misregistration: float = 1.0) -> Path:
    """Generate and write ``cases`` phantom cases and their manifest; returns the manifest path.

    Case ``i`` is ``generate_case([seed, i], ...)`` in the folder ``phantom_s<seed>_<i:04d>``, so a
    case does not depend on how many others are made. ``negatives``: fraction of lesion-free cases
    (0 to 1; they keep every non-lesion uptake source). ``misregistration``: scale of the PET–CT
    misregistration (1 realistic, 0 none; :mod:`.misregister`). ``progress``: show a tqdm bar on
    stderr. A non-empty ``out`` needs ``append`` (``cases`` more, same settings) or ``overwrite``
    (module docstring).
    """
    out = Path(out)
    if cases < 1:
        raise ConfigError(f"cases must be at least 1, got {cases}")
    settings = _settings(seed, spacing, ct_spacing, domain, negatives, misregistration)
    entries = _existing_entries(out, settings, append, overwrite)
    first, total = len(entries), len(entries) + cases
    if append and any((out / case_folder(seed, i)).exists() for i in range(first, total)):
        raise DataError("--append: a folder for a new case exists already; refusing to replace it", out)
    negative = negative_indices(total, negatives, seed)
    with tqdm(total=cases * (len(STEPS) + 1), desc="phantom", unit="step", disable=not progress) as bar:
        for i in range(first, total):
            bar.set_postfix_str(f"case {i + 1 - first}/{cases}")
            folder = case_folder(seed, i)
            case = generate_case([seed, i], spacing=spacing, ct_spacing=ct_spacing, domain=domain,
                                 positive=i not in negative, misregistration=misregistration,
                                 case_id=autopet_case_id(folder, STUDY), on_step=lambda _: bar.update(1))
            entries.append(write_phantom_case(case, out, folder))
            bar.update(1)
    manifest = {"format": MANIFEST_FORMAT, "version": 1,
                "generator": {"tool": TOOL, "anatoseg": __version__, "cases": total, **settings},
                "organ_labels": organ_table(), "cases": entries}
    path = out / MANIFEST_NAME
    write_text_atomic(path, json.dumps(manifest, indent=1) + "\n")
    return path
