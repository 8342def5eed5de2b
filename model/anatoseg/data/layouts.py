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

**Every layout** (:func:`find_cases`): case ids follow one rule
(:mod:`anatoseg.data.case_ids`: plain file names, unique); hidden and temporary
names are never data (:func:`anatoseg.data.paths.is_temporary`); the whole dataset
is checked before anything is read or written: every named file exists and has a
readable 3D NIfTI header. A case that fails (an autoPET study folder without
``SUV.nii.gz``, a missing nnU-Net channel, a missing or unreadable file) is an
error naming it, or with ``skip_bad=True`` it is left out and listed in
:attr:`CaseList.skipped`.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from pathlib import Path

from anatoseg.data.atomic import read_json
from anatoseg.data.case import Case, CaseFiles, load_case
from anatoseg.data.case_ids import autopet_case_id, check_case_id, check_unique
from anatoseg.data.nifti import NIFTI_SUFFIXES, read_header, strip_nifti_suffix
from anatoseg.data.paths import visible_entries
from anatoseg.errors import DataError

LAYOUTS = ("autopet", "nnunet", "manifest")
MANIFEST_NAME = "manifest.json"
MANIFEST_FORMAT = "anatoseg-manifest"
FILE_KEYS = ("pet", "ct", "ctres", "lesions", "organs")


class CaseList(list):
    """The cases :func:`find_cases` found (a list of :class:`CaseFiles`); ``skipped``: one line
    ``<case>: <why>`` per case left out with ``skip_bad=True``."""

    def __init__(self, cases=(), skipped=()):
        super().__init__(cases)
        self.skipped: list[str] = list(skipped)


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


def _scan_autopet(root: Path) -> tuple[list[CaseFiles], list[str]]:
    """(cases, problems): every ``<patient>/<study>`` folder holding NIfTI files is a case; one without
    SUV is a problem (folders without any NIfTI file, e.g. notes, are not studies)."""
    single = _autopet_study(root, autopet_case_id(root.resolve().parent.name, root.name))
    if single is not None:
        return [single], []
    cases, problems = [], []
    for patient in (p for p in visible_entries(root) if p.is_dir()):
        for study in (s for s in visible_entries(patient) if s.is_dir()):
            case_id = check_case_id(autopet_case_id(patient.name, study.name), study)
            found = _autopet_study(study, case_id)
            if found is None and any(p.name.endswith(NIFTI_SUFFIXES) for p in visible_entries(study)):
                problems.append(f"{case_id}: {study}: no SUV.nii.gz (or .nii) in the study folder")
            elif found is not None:
                cases.append(found)
    if not cases and not problems:
        raise DataError("no autoPET cases found (expected <patient>/<study>/SUV.nii.gz)", root)
    return cases, problems


def find_autopet(root: str | os.PathLike) -> list[CaseFiles]:
    """Cases of an autoPET tree (or of one study folder), sorted by case id (unchecked: see :func:`find_cases`)."""
    return _scan_autopet(Path(root))[0]


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


def _scan_nnunet(root: Path, split: str) -> tuple[list[CaseFiles], list[str]]:
    tag = {"train": "Tr", "test": "Ts"}.get(split)
    if tag is None:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    images, labels = root / f"images{tag}", root / f"labels{tag}"
    if not images.is_dir():
        raise DataError(f"no images{tag} folder", root)
    ct_channel, pet_channel = _nnunet_channels(root)
    stems = (re.fullmatch(r"(.+)_(\d{4})", strip_nifti_suffix(p.name)) for p in visible_entries(images)
             if p.name.endswith(NIFTI_SUFFIXES))
    cases, problems = [], []
    for case_id in sorted({m.group(1) for m in stems if m}):
        check_case_id(case_id, images)
        pet = _find(images, f"{case_id}_{pet_channel}")
        ct = _find(images, f"{case_id}_{ct_channel}")
        if pet is None or ct is None:
            missing = images / f"{case_id}_{pet_channel if pet is None else ct_channel}.nii.gz"
            problems.append(f"{case_id}: {missing}: file not found (every nnU-Net case needs a CT and a PET channel)")
            continue
        lesions = _find(labels, case_id) if labels.is_dir() else None
        cases.append(CaseFiles(case_id=case_id, pet=pet, ctres=ct, lesions=lesions))
    if not cases and not problems:
        raise DataError(f"no cases in images{tag}", root)
    return cases, problems


def find_nnunet(root: str | os.PathLike, split: str = "train") -> list[CaseFiles]:
    """Cases of an nnU-Net raw dataset folder; ``split`` ``"train"`` (imagesTr) or ``"test"`` (imagesTs).
    A case missing a channel is an error (see :func:`find_cases` for the whole check)."""
    cases, problems = _scan_nnunet(Path(root), split)
    if problems:
        raise DataError(problems[0])
    return cases


def _manifest_entry(entry: object, n: int, base: Path, path: Path) -> CaseFiles:
    if not isinstance(entry, dict) or "case" not in entry or "pet" not in entry:
        raise DataError(f'manifest entry {n} needs "case" and "pet"', path)
    case_id = check_case_id(entry["case"], path, f"manifest entry {n}: case id")
    files = {}
    for key in FILE_KEYS:
        value = entry.get(key)
        if value is not None and not (isinstance(value, str) and value):
            raise DataError(f'manifest entry {n} ({case_id}): "{key}" must be a file path, got {value!r}', path)
        files[key] = base / value if value else None
    if files["ct"] is None and files["ctres"] is None:
        raise DataError(f'manifest entry {n} ({case_id}) needs "ct" or "ctres"', path)
    meta = {k: v for k, v in entry.items() if k not in files and k != "case"}
    return CaseFiles(case_id=case_id, meta=meta, **files)


def find_manifest(path: str | os.PathLike) -> list[CaseFiles]:
    """Cases listed in a manifest file (or in ``<folder>/manifest.json``), ids checked (files: :func:`find_cases`)."""
    path = Path(path)
    if path.is_dir():
        path = path / MANIFEST_NAME
    manifest = read_json(path)
    entries = manifest.get("cases") if isinstance(manifest, dict) else None
    if not isinstance(entries, list):
        raise DataError('manifest has no "cases" list', path)
    cases = [_manifest_entry(entry, n, path.parent, path) for n, entry in enumerate(entries)]
    check_unique((c.case_id for c in cases), path)
    return cases


def file_problem(files: CaseFiles) -> str | None:
    """``<case>: <file>: <why>`` for the first file of ``files`` that is missing or not a readable 3D
    NIfTI header, or None. Reads headers only."""
    for key in FILE_KEYS:
        path = getattr(files, key)
        if path is not None:
            try:
                read_header(path)
            except DataError as exc:
                return f"{files.case_id}: {exc}"
    return None


def _scan(source: str | os.PathLike, layout: str | None, split: str) -> tuple[list[CaseFiles], list[str]]:
    layout = layout or detect_layout(source)
    if layout == "manifest":
        return find_manifest(source), []
    if layout == "nnunet":
        return _scan_nnunet(Path(source), split)
    if layout == "autopet":
        return _scan_autopet(Path(source))
    raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")


def find_cases(source: str | os.PathLike, *, layout: str | None = None, split: str = "train",
               skip_bad: bool = False) -> CaseList:
    """The cases of a dataset, checked whole before any is read. ``layout``: one of :data:`LAYOUTS` or None
    (detect).

    Ids are checked (one rule, unique: DataError). Every file a case names must exist with a readable
    header; a case that fails is a DataError listing every such case, or with ``skip_bad`` it is left
    out and listed in the result's ``skipped``.
    """
    cases, problems = _scan(source, layout, split)
    check_unique((c.case_id for c in cases), source)
    good = []
    for files in cases:
        problem = file_problem(files)
        if problem is None:
            good.append(files)
        else:
            problems.append(problem)
    if problems and not skip_bad:
        shown = "; ".join(problems[:5]) + (f"; and {len(problems) - 5} more" if len(problems) > 5 else "")
        raise DataError(f"{len(problems)} case(s) cannot be read (fix them, or pass --skip-bad to leave them "
                        f"out): {shown}", source)
    if not good:
        raise DataError(f"no readable cases ({len(problems)} skipped)", source)
    return CaseList(good, problems)


def iter_cases(source: str | os.PathLike, *, layout: str | None = None, split: str = "train",
               canonical: bool = True, mmap: bool = True) -> Iterator[Case]:
    """Stream the cases of a dataset one at a time (only one case is in memory at once).

    The dataset is checked whole first (:func:`find_cases`); see
    :func:`anatoseg.data.case.load_case` for what each :class:`Case` holds.
    """
    for files in find_cases(source, layout=layout, split=split):
        yield load_case(files, canonical=canonical, mmap=mmap)
