"""Finding cases on disk in the three supported layouts, and streaming them one at a time.

**autoPET**: ``<root>/<patient>/<study>/{SUV,CTres,CT,SEG}.nii.gz`` (``.nii`` also
accepted). ``ORGANS.nii.gz`` next to them, if present, is the organ label map on
the PET grid (written by ``anato phantom``). Case id: ``<patient>_<study>``.
A single study folder is also accepted as a one-case dataset (same case id).

**nnU-Net raw**: ``<root>/imagesTr/<case>_0000.nii.gz`` is the CT,
``<case>_0001.nii.gz`` the PET (SUV); ``<root>/labelsTr/<case>.nii.gz`` the lesion
mask. ``split="test"`` reads ``imagesTs``/``labelsTs``. If ``dataset.json`` names
the channels (``{"channel_names": {"0": "CT", "1": "PET"}}``) its order wins.

**Manifest**: a JSON file (``manifest.json`` in a folder, or any ``.json`` path)::

    {"format": "anatoseg-manifest", "version": 1,
     "cases": [{"case": "phantom_s0_0000", "pet": "p/study/SUV.nii.gz",
                "ct": "p/study/CT.nii.gz", "ctres": "p/study/CTres.nii.gz",
                "lesions": "p/study/SEG.nii.gz", "organs": "p/study/ORGANS.nii.gz", ...}]}

Paths are relative to the manifest's folder (or absolute). ``case`` and ``pet``
and one of ``ct``/``ctres`` are required; other keys are kept as ``meta``.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from pathlib import Path

from anatoseg.data.atomic import read_json
from anatoseg.data.case import Case, CaseFiles, load_case
from anatoseg.data.nifti import NIFTI_SUFFIXES, strip_nifti_suffix
from anatoseg.errors import DataError

LAYOUTS = ("autopet", "nnunet", "manifest")
MANIFEST_NAME = "manifest.json"
MANIFEST_FORMAT = "anatoseg-manifest"


def _find(folder: Path, stem: str) -> Path | None:
    for suffix in NIFTI_SUFFIXES:
        candidate = folder / f"{stem}{suffix}"
        if candidate.is_file():
            return candidate
    return None


def detect_layout(source: str | os.PathLike) -> str:
    """Which layout ``source`` uses: ``"manifest"``, ``"nnunet"`` or ``"autopet"``."""
    source = Path(source)
    if not source.exists():
        raise DataError("file not found", source)
    if source.is_file():
        if source.suffix == ".json":
            return "manifest"
        raise DataError("expected a dataset folder or a manifest .json", source)
    if (source / MANIFEST_NAME).is_file():
        return "manifest"
    if (source / "imagesTr").is_dir() or (source / "imagesTs").is_dir():
        return "nnunet"
    return "autopet"


def _autopet_study(study: Path, case_id: str) -> CaseFiles | None:
    pet = _find(study, "SUV")
    if pet is None:
        return None
    return CaseFiles(case_id=case_id, pet=pet, ct=_find(study, "CT"), ctres=_find(study, "CTres"),
                     lesions=_find(study, "SEG"), organs=_find(study, "ORGANS"))


def find_autopet(root: str | os.PathLike) -> list[CaseFiles]:
    """Cases of an autoPET tree (or of one study folder), sorted by case id."""
    root = Path(root)
    single = _autopet_study(root, f"{root.resolve().parent.name}_{root.name}")
    if single is not None:
        return [single]
    cases = []
    for patient in sorted(p for p in root.iterdir() if p.is_dir()):
        for study in sorted(s for s in patient.iterdir() if s.is_dir()):
            found = _autopet_study(study, f"{patient.name}_{study.name}")
            if found is not None:
                cases.append(found)
    if not cases:
        raise DataError("no autoPET cases found (expected <patient>/<study>/SUV.nii.gz)", root)
    return cases


def _nnunet_channels(root: Path) -> tuple[str, str]:
    """(CT channel suffix, PET channel suffix), e.g. ("0000", "0001")."""
    dataset_json = root / "dataset.json"
    ct, pet = "0000", "0001"
    if dataset_json.is_file():
        try:
            names = json.loads(dataset_json.read_text()).get("channel_names", {})
        except (json.JSONDecodeError, AttributeError) as exc:
            raise DataError(f"not valid JSON ({exc})", dataset_json) from None
        for index, name in names.items():
            upper = str(name).upper()
            if "PET" in upper or "SUV" in upper:
                pet = f"{int(index):04d}"
            elif "CT" in upper:
                ct = f"{int(index):04d}"
    return ct, pet


def find_nnunet(root: str | os.PathLike, split: str = "train") -> list[CaseFiles]:
    """Cases of an nnU-Net raw dataset folder; ``split`` ``"train"`` (imagesTr) or ``"test"`` (imagesTs)."""
    root = Path(root)
    tag = {"train": "Tr", "test": "Ts"}.get(split)
    if tag is None:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    images, labels = root / f"images{tag}", root / f"labels{tag}"
    if not images.is_dir():
        raise DataError(f"no images{tag} folder", root)
    ct_channel, pet_channel = _nnunet_channels(root)
    stems = (re.fullmatch(r"(.+)_(\d{4})", strip_nifti_suffix(p.name)) for p in images.iterdir()
             if p.name.endswith(NIFTI_SUFFIXES))
    case_ids = sorted({m.group(1) for m in stems if m})
    cases = []
    for case_id in case_ids:
        pet = _find(images, f"{case_id}_{pet_channel}")
        ct = _find(images, f"{case_id}_{ct_channel}")
        if pet is None or ct is None:
            missing = images / f"{case_id}_{pet_channel if pet is None else ct_channel}.nii.gz"
            raise DataError("file not found (every nnU-Net case needs a CT and a PET channel)", missing)
        lesions = _find(labels, case_id) if labels.is_dir() else None
        cases.append(CaseFiles(case_id=case_id, pet=pet, ctres=ct, lesions=lesions))
    if not cases:
        raise DataError(f"no cases in images{tag}", root)
    return cases


def find_manifest(path: str | os.PathLike) -> list[CaseFiles]:
    """Cases listed in a manifest file (or in ``<folder>/manifest.json``)."""
    path = Path(path)
    if path.is_dir():
        path = path / MANIFEST_NAME
    manifest = read_json(path)
    entries = manifest.get("cases") if isinstance(manifest, dict) else None
    if not isinstance(entries, list):
        raise DataError('manifest has no "cases" list', path)
    base = path.parent
    cases = []
    for n, entry in enumerate(entries):
        if not isinstance(entry, dict) or "case" not in entry or "pet" not in entry:
            raise DataError(f'manifest entry {n} needs "case" and "pet"', path)
        files = {key: (base / entry[key]) if entry.get(key) else None
                 for key in ("pet", "ct", "ctres", "lesions", "organs")}
        if files["ct"] is None and files["ctres"] is None:
            raise DataError(f'manifest entry {n} ({entry["case"]}) needs "ct" or "ctres"', path)
        meta = {k: v for k, v in entry.items() if k not in files and k != "case"}
        cases.append(CaseFiles(case_id=str(entry["case"]), meta=meta, **files))
    return cases


def find_cases(source: str | os.PathLike, *, layout: str | None = None, split: str = "train") -> list[CaseFiles]:
    """The cases of a dataset, without reading any image. ``layout``: one of :data:`LAYOUTS` or None (detect)."""
    layout = layout or detect_layout(source)
    if layout == "manifest":
        return find_manifest(source)
    if layout == "nnunet":
        return find_nnunet(source, split)
    if layout == "autopet":
        return find_autopet(source)
    raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")


def iter_cases(source: str | os.PathLike, *, layout: str | None = None, split: str = "train",
               canonical: bool = True, mmap: bool = True) -> Iterator[Case]:
    """Stream the cases of a dataset one at a time (only one case is in memory at once).

    See :func:`anatoseg.data.case.load_case` for what each :class:`Case` holds.
    """
    for files in find_cases(source, layout=layout, split=split):
        yield load_case(files, canonical=canonical, mmap=mmap)
