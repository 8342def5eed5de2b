"""Training data: the train/validation split and a cache of preprocessed cases on disk.

Each case is preprocessed once (:func:`anatoseg.data.preprocess.preprocess_case`)
into ``<cache>/<case_id>/`` as ``image.npy`` ``(2, Z, Y, X)`` float32 [PET, CT],
``label.npy`` ``(Z, Y, X)`` uint8 and ``organs.npy`` ``(Z, Y, X)`` uint8, next to
``key.json`` (preprocessing parameters and source files with their sizes and
modification times). A case is redone when its key changes. Training reads them
as memory maps, so RAM does not grow with the dataset and DataLoader workers
share the pages.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from anatoseg.config import DataConfig
from anatoseg.data.atomic import atomic_dir
from anatoseg.data.case import CaseFiles, load_case
from anatoseg.data.paths import inside
from anatoseg.data.preprocess import Preprocessing, preprocess_case
from anatoseg.data.volumes import pet_ct_channels, with_organs_from
from anatoseg.errors import ConfigError, DataError
from anatoseg.training.sampling import TrainVolume


def split_cases(case_ids: Sequence[str], config: DataConfig, seed: int) -> tuple[list[str], list[str]]:
    """``(train_ids, val_ids)``: a seeded shuffle, the last ``val_cases`` (or ``val_fraction``) held out.

    At least one case is held out when there are two or more, and at least one is trained on.
    """
    ids = list(case_ids)
    if not ids:
        raise DataError("the dataset has no cases")
    count = config.val_cases if config.val_cases is not None else round(config.val_fraction * len(ids))
    if config.val_cases is None and len(ids) >= 2 and config.val_fraction > 0:
        count = max(count, 1)
    if count >= len(ids):
        raise ConfigError(f"{count} validation cases leave none to train on ({len(ids)} cases in all)")
    order = np.random.default_rng([seed, 7919]).permutation(len(ids))
    shuffled = [ids[i] for i in order]
    return shuffled[:len(ids) - count], shuffled[len(ids) - count:]


def _file_key(path: Path | None) -> list | None:
    if path is None:
        return None
    stat = path.stat()
    return [str(path.resolve()), stat.st_size, stat.st_mtime_ns]


def _case_key(files: CaseFiles, params: Preprocessing) -> dict:
    return {"preprocessing": json.loads(json.dumps(params.to_dict())),
            "files": {name: _file_key(getattr(files, name))
                      for name in ("pet", "ct", "ctres", "lesions", "organs")}}


def prepare_cache(files: Sequence[CaseFiles], params: Preprocessing, cache: Path, *,
                  organs_dir: str | Path | None, need_organs: bool, progress: bool) -> None:
    """Preprocess every case of ``files`` into ``cache`` unless an up-to-date copy is there.

    ``organs_dir``: take organ label maps from ``<organs_dir>/<case_id>.nii.gz``
    (stage-1 output) instead of the dataset's own. Raises DataError for a case
    without a lesion mask, or without organ labels when ``need_organs``.
    """
    for case_files in tqdm(files, desc="preprocessing", unit="case", disable=not progress, leave=False):
        if organs_dir is not None:
            case_files = with_organs_from(case_files, organs_dir)
        if case_files.lesions is None:
            raise DataError(f"training case {case_files.case_id!r} has no lesion mask", case_files.pet)
        if need_organs and case_files.organs is None:
            raise DataError(f"case {case_files.case_id!r} has no organ label map; give --organs DIR "
                            f"(stage-1 labels), or train a network that reads no organ maps (e.g. --no-prompts)",
                            case_files.pet)
        key = _case_key(case_files, params)
        folder = inside(cache, case_files.case_id)  # replaced below: never a folder outside the cache
        key_file = folder / "key.json"
        if key_file.is_file() and json.loads(key_file.read_text()) == key:
            continue
        pre = preprocess_case(load_case(case_files), params)
        with atomic_dir(folder) as tmp:
            np.save(tmp / "image.npy", np.ascontiguousarray(pet_ct_channels(pre.image)))
            np.save(tmp / "label.npy", pre.lesions)
            if pre.organs is not None:
                np.save(tmp / "organs.npy", pre.organs)
            (tmp / "key.json").write_text(json.dumps(key))


def load_volumes(case_ids: Sequence[str], cache: Path, *, use_organs: bool) -> list[TrainVolume]:
    """Memory-mapped :class:`TrainVolume` of each cached case, with its organ labels wherever the cache holds
    them (hard-negative patches are centred on organs for every network); DataError for a case without them
    when ``use_organs`` (the network reads organ prompts)."""
    volumes = []
    for case_id in case_ids:
        folder = inside(cache, case_id)
        organs = np.load(folder / "organs.npy", mmap_mode="r") if (folder / "organs.npy").is_file() else None
        if use_organs and organs is None:
            raise DataError(f"case {case_id!r} has no organ label map in the cache", folder)
        volumes.append(TrainVolume(case_id, np.load(folder / "image.npy", mmap_mode="r"),
                                   np.load(folder / "label.npy", mmap_mode="r"), organs))
    return volumes
