"""One unit of the protocol: a (variant, seed) trained, its test cases predicted and scored, saved.

A unit is ``OUT/units/<variant slug>__seed<k>.json`` (:func:`unit_path`), written atomically once
everything of it is done; a unit whose file exists is finished and never run again. Its fields:
``format``, ``variant``, ``seed``, ``kind`` (``"network"`` or ``"sanity"``), ``spec`` (the registry
entry), ``commit`` (the git commit it ran on), ``scale``, ``config`` (the stage-3 config the model
was trained with), ``seconds`` and ``cpu_seconds`` (wall and CPU user+system time of this process
and its children, train and predict), ``val_dice`` and ``cases`` (:func:`.scoring.score_case`
records of every test case).

Training goes to ``OUT/units/<slug>__seed<k>/train`` (:func:`model_folder`) through
:func:`anatoseg.stage3.run.run_train`; an interrupted training resumes from its ``checkpoint.pt``, a
finished one (``model.pt``) is only predicted again (:mod:`.retest` predicts another folder's models on a
fresh test cohort). A variant ``trained_as`` another predicts with that
variant's model (trained in that variant's folder when missing) and its own test-time settings.
"""

from __future__ import annotations

import functools
import json
import re
import subprocess
from pathlib import Path

from anatoseg.data.atomic import read_json, write_text_atomic
from anatoseg.data.phantom.cohort import cases_with_lesions
from anatoseg.experiments.protocol.config import Scale
from anatoseg.experiments.protocol.stages import Shared
from anatoseg.experiments.protocol.timing import Clock
from anatoseg.experiments.protocol.variants import overrides, test_time

UNIT_FORMAT = 1
UNITS = "units"


@functools.cache
def git_commit() -> str | None:
    """The commit of the checkout this package runs from (None outside a git checkout), read once per process:
    a unit records the code it ran, not a commit made in the checkout while it ran."""
    try:
        found = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10,
                               cwd=Path(__file__).resolve().parent)
    except (OSError, subprocess.SubprocessError):
        return None
    return found.stdout.strip() or None if found.returncode == 0 else None


def slug(name: str) -> str:
    """A file-name form of a variant name: lower case, runs of other characters as ``_``."""
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_") or "variant"


def unit_path(out: Path, variant: str, seed: int) -> Path:
    return out / UNITS / f"{slug(variant)}__seed{seed}.json"


def model_folder(out: Path, variant: str, seed: int) -> Path:
    """Where the model of ``variant`` at ``seed`` trains: the unit's folder's ``train``."""
    return unit_path(out, variant, seed).with_suffix("") / "train"


def load_units(out: Path) -> list[dict]:
    """Every finished unit of the run folder ``out``, sorted by (variant, seed)."""
    paths = sorted((out / UNITS).glob("*.json"))
    return sorted((read_json(path) for path in paths), key=lambda u: (u["variant"], u["seed"]))


def stage3_overrides(scale: Scale, spec: dict, seed: int) -> list[str]:
    """The ``--set`` list of a variant's training: the scale's budget, then the variant's own settings."""
    z, y, x = scale.patch
    settings = {"model.arch": spec["arch"], "model.preset": scale.preset, "train.steps": scale.steps,
                "train.batch_size": scale.batch_size, "data.patch_size": [z, y, x], "seed": seed,
                "train.val_every": scale.val_every, "train.ckpt_every": scale.val_every,
                "data.val_cases": scale.val_cases, **scale.stage3_set, **spec["set"]}
    return overrides(settings)


def train_unit(spec: dict, seed: int, scale: Scale, shared: Shared, folder: Path, device: str,
               progress: bool) -> tuple[Path, float | None]:
    """Train (or resume, or reuse) one variant's model: ``(model.pt, validation Dice or None)``."""
    from anatoseg.stage3.loop import CHECKPOINT_NAME, MODEL_NAME
    from anatoseg.stage3.run import run_train

    if (folder / MODEL_NAME).exists():
        return folder / MODEL_NAME, None
    organs = shared.organs.get(spec["prompts"])  # None: true organ maps ("gt") or none at all
    # The cache's organ maps also centre the organ hard-negative patches. A variant that reads no organ map
    # gets the stage-1 student's, so that it draws the patches the "pseudo" variants draw (it does not read
    # them), instead of the dataset's true maps that the phantom would otherwise hand it.
    sampling = organs if spec["prompts"] is not None else shared.organs["pseudo"]
    result = run_train(shared.manifests["train"], folder, overrides=stage3_overrides(scale, spec, seed),
                       init=shared.encoders_for(spec) if spec["init"] == "stage2" else None,
                       organs_dir=sampling and sampling.train_dir, organ_model=organs and organs.model,
                       fingerprint=shared.fingerprint,
                       resume=(folder / CHECKPOINT_NAME).exists(), device=device, progress=progress)
    return Path(result.model), result.val_dice


def probabilities(model: Path, manifest: Path, organs_dir: Path | None, device: str, options: dict | None = None,
                  case_ids: set[str] | None = None):
    """``(predictor, iterator of (CaseFiles, lesion list, (Z, Y, X) lesion probability))`` over the manifest's cases
    (only ``case_ids`` when given), predicted with ``model``.

    Prompts as ``anato predict --organs organs_dir`` takes them (:class:`anatoseg.inference.predict.OrganSource`);
    without ``organs_dir`` the stage-1 model the checkpoint names, else the dataset's own (true) organ maps.
    ``options``: test-time arguments of :meth:`~anatoseg.inference.predict.Predictor.from_checkpoint`
    (:func:`.variants.test_time`)."""
    from anatoseg.experiments.protocol.scoring import network_probability
    from anatoseg.inference.predict import OrganSource, Predictor

    predictor = Predictor.from_checkpoint(model, device=device, **(options or {}))
    source = OrganSource(predictor, organs_dir)
    cases = ((files, lesions, network_probability(predictor, source.for_case(source.files_for(files))))
             for files, lesions in cases_with_lesions(manifest) if case_ids is None or files.case_id in case_ids)
    return predictor, cases


def predict_unit(model: Path, manifest: Path, organs_dir: Path | None, device: str,
                 options: dict | None = None) -> tuple[list[dict], dict]:
    """Score every test case with ``model`` (:func:`probabilities`): ``(case records, the model's stage-3
    config)``."""
    from anatoseg.data.case import load_case
    from anatoseg.experiments.protocol.scoring import score_case

    predictor, cases = probabilities(model, manifest, organs_dir, device, options)
    records = [score_case(prob, load_case(files), lesion_list) for files, lesion_list, prob in cases]
    return records, predictor.meta["config"]


def run_network_unit(name: str, spec: dict, seed: int, scale: Scale, shared: Shared, out: Path, device: str,
                     progress: bool = True, source: dict | None = None, models: Path | None = None,
                     record: dict | None = None) -> dict:
    """Train, predict, score and save one network unit (module docstring); returns it. ``source``: the
    spec of the variant ``spec["trained_as"]`` names (required then); ``models``: the run folder whose
    models are trained or reused (default ``out``); ``record``: fields that replace the saved unit's."""
    clock = Clock()
    trained_as = spec.get("trained_as")
    if trained_as is not None and source is None:
        raise ValueError(f"variant {name!r} uses the model of {trained_as!r}: pass that variant's spec as source")
    model, val_dice = train_unit(source or spec, seed, scale, shared, model_folder(models or out, trained_as or name,
                                                                                   seed), device, progress)
    train_s, train_cpu = clock.lap()
    organs = shared.organs.get(spec["prompts"])
    options = test_time(spec)
    cases, config = predict_unit(model, shared.manifests["test"], organs and organs.test_dir, device, options)
    if options:  # the config this unit's predictions followed: the source's, with this variant's test time
        config = {**config, "infer": {**config["infer"], **{key.split(".", 1)[1]: value
                                                             for key, value in spec["set"].items()}}}
    total_s, total_cpu = clock.lap()
    return save_unit(out, {"variant": name, "seed": seed, "kind": "network", "spec": spec, "scale": scale.name,
                           "config": config, "val_dice": val_dice, "cases": cases,
                           "seconds": {"train": train_s, "predict": total_s - train_s},
                           "cpu_seconds": {"train": train_cpu, "predict": total_cpu - train_cpu}, **(record or {})})


def run_sanity_unit(name: str, options: dict, scale: Scale, shared: Shared, out: Path) -> dict:
    """Score the no-learning baseline ``options`` on every test case and save it (seed 0)."""
    from anatoseg.data.case import load_case
    from anatoseg.experiments.protocol.scoring import sanity_case

    clock = Clock()
    cases = [sanity_case(options, load_case(files), lesions)
             for files, lesions in cases_with_lesions(shared.manifests["test"])]
    wall, cpu = clock.lap()
    return save_unit(out, {"variant": name, "seed": 0, "kind": "sanity", "spec": options, "scale": scale.name,
                           "config": None, "val_dice": None, "cases": cases, "seconds": {"predict": wall},
                           "cpu_seconds": {"predict": cpu}})


def save_unit(out: Path, unit: dict) -> dict:
    """Write ``unit`` (with ``format`` and ``commit`` added) atomically to its :func:`unit_path`."""
    unit = {"format": UNIT_FORMAT, "commit": git_commit(), **unit}
    write_text_atomic(unit_path(out, unit["variant"], unit["seed"]), json.dumps(unit, indent=None) + "\n")
    return unit
