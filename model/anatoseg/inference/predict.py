"""Whole-body inference: ``anato predict MODEL INPUT OUT``.

For each case (:func:`predict_cases`):

1. read it (:func:`anatoseg.data.case.load_case`, ``(Z, Y, X)`` reoriented to RAS) with
   organ prompts from ``--organs``, the checkpoint's stage-1 ``organ_model`` or the
   dataset's own organ maps (:class:`OrganSource`);
2. preprocess exactly as in training (the checkpoint's ``preprocessing``: body
   crop, resampling, normalisation);
3. sliding-window lesion probability in bounded memory
   (:func:`~anatoseg.inference.sliding_window.sliding_window_probability`), by default the mean over the
   8 mirrorings of each window (``infer.mirror``, :mod:`~anatoseg.inference.mirror`);
4. map it back onto the original PET grid: the probability, quantised to
   uint8, is resampled trilinearly onto the source grid a slab at a time and
   thresholded at 0.5;
5. optionally remove the components lying mostly inside chosen organs (``infer.suppress_organs``,
   :mod:`~anatoseg.inference.postprocess`; the case's organ map is needed then), then undo the loader's
   reorientation (:func:`~anatoseg.data.nifti.zyx_to_file`);
6. write a uint8 {0, 1} NIfTI with the PET file's own shape and affine.

Before any case is read the whole run is planned (:func:`plan_predictions`): the
dataset is checked whole (:func:`anatoseg.data.layouts.find_cases`), every output
path stays inside OUT, no output is one of the run's inputs (case files, organ maps,
the model files; compared as the file system does, symlinks and hard links
included), and existing outputs are refused unless ``overwrite``.

Peak memory beyond the case's own arrays: the preprocessed image, 2 bytes per
preprocessed voxel (float16 probability), 1 byte per voxel for the quantised
probability and for the output mask, and O(window).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from anatoseg.checkpoint import load_checkpoint, load_state_strict
from anatoseg.config import organ_names
from anatoseg.configbase import apply_overrides
from anatoseg.data.case import Case, CaseFiles, load_case
from anatoseg.data.labels import ORGAN_IDS
from anatoseg.data.layouts import FILE_KEYS, find_cases
from anatoseg.data.nifti import is_nifti, save_nifti, zyx_to_file
from anatoseg.data.paths import inside
from anatoseg.data.preprocess import PreprocessedCase, Preprocessing, preprocess_case
from anatoseg.data.resample import resample_to_grid
from anatoseg.data.volumes import pet_ct_channels, with_organs_from
from anatoseg.errors import AnatoError, ConfigError
from anatoseg.inference.mirror import mirrored
from anatoseg.inference.postprocess import suppress_in_organs
from anatoseg.inference.sliding_window import sliding_window_probability
from anatoseg.stage3.config import Config
from anatoseg.training.device import choose_device

_SLAB_VOXELS = 1 << 22  # output voxels resampled per call when mapping back to the PET grid


@dataclass
class Predictor:
    """A stage-3 network ready for whole-volume prediction (see :meth:`from_checkpoint`)."""

    net: nn.Module
    meta: dict[str, Any]
    preprocessing: Preprocessing
    patch_size: tuple[int, int, int]
    overlap: float
    sigma_scale: float
    batch_size: int
    device: torch.device
    amp: bool
    path: Path | None = None  # the checkpoint it came from
    mirror: bool = False  # test-time mirroring (8 flips)
    suppress: tuple[int, ...] = ()  # organ ids whose components are removed (post-processing)
    suppress_fraction: float = 0.5

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike, *, device: str | None = None, overlap: float | None = None,
                        batch_size: int | None = None, amp: bool = True, mirror: bool | None = None,
                        suppress_organs: str | None = None) -> Predictor:
        """Load a ``model.pt``/``checkpoint.pt`` of ``anato train``; rebuild and check its network.

        ``overlap``, ``batch_size``, ``mirror``, ``suppress_organs`` (comma-separated organ names, ``""``
        for none): override the stored ``infer`` settings (None keeps them); validated with the config.
        Raises ConfigError for a bad value, a checkpoint of another kind, or one whose weights do
        not fit the architecture and config its metadata names.
        """
        from anatoseg.nets import NetConfig, build_network

        checkpoint = load_checkpoint(path, kind="stage3")
        meta = checkpoint["meta"]
        for key in ("arch", "net", "patch_size", "config", "preprocessing"):
            if key not in meta:
                raise ConfigError(f"stage-3 checkpoint metadata lacks {key!r}", path)
        net = build_network(meta["arch"], NetConfig.from_dict(meta["net"]), meta["patch_size"])
        load_state_strict(net, checkpoint["model"], path, what=f"{meta['arch']} checkpoint")
        given = (("overlap", overlap), ("batch_size", batch_size), ("mirror", mirror))
        options = [f"infer.{key}={value}" for key, value in given if value is not None]
        if suppress_organs is not None:
            options.append(f"infer.suppress_organs='{suppress_organs}'")
        infer = apply_overrides(Config.from_dict(meta["config"]), options).validate().infer
        dev = choose_device(device)
        suppress = tuple(ORGAN_IDS[name] for name in organ_names(infer.suppress_organs, "infer.suppress_organs"))
        return cls(net=net.to(dev).eval(), meta=meta, preprocessing=Preprocessing.from_dict(meta["preprocessing"]),
                   patch_size=tuple(meta["patch_size"]), overlap=infer.overlap, sigma_scale=infer.sigma_scale,
                   batch_size=infer.batch_size, device=dev, amp=amp, path=Path(path), mirror=infer.mirror,
                   suppress=suppress, suppress_fraction=infer.suppress_fraction)

    @property
    def uses_prompts(self) -> bool:
        return bool(self.net.uses_prompts)

    @property
    def needs_organs(self) -> bool:
        """Whether each case needs its organ map: for the network's prompts or the post-processing."""
        return self.uses_prompts or bool(self.suppress)

    def probability(self, image: np.ndarray, organs: np.ndarray | None = None, *, progress: bool = False,
                    description: str = "windows") -> torch.Tensor:
        """Lesion probability ``(Z, Y, X)`` float16 of a network-order image ``(2, Z, Y, X)`` [PET, CT]."""
        return sliding_window_probability(
            mirrored(self.net) if self.mirror else self.net, image, self.patch_size,
            organs=organs if self.uses_prompts else None, overlap=self.overlap,
            sigma_scale=self.sigma_scale, batch_size=self.batch_size, device=self.device, amp=self.amp,
            progress=progress, description=description)

    def predict_case(self, case: Case, *, progress: bool = False) -> np.ndarray:
        """Lesion mask ``(Z, Y, X)`` uint8 {0, 1} on ``case``'s own grid (``case.shape``, ``case.affine``).

        ``case.organs`` must be set when the network uses prompts or the post-processing removes components
        inside organs.
        """
        if self.needs_organs and case.organs is None:
            why = "the model uses organ prompts" if self.uses_prompts else "--suppress-organs needs organ maps"
            raise AnatoError(f"case {case.case_id}: {why} but the case has no organ labels")
        pre = preprocess_case(case, self.preprocessing)
        image, pre.image = pre.image, None  # let the preprocessed image go once the windows are done
        prob = self.probability(pet_ct_channels(image), pre.organs, progress=progress, description=case.case_id)
        del image
        mask = restore_mask(quantise(prob), pre)
        return suppress_in_organs(mask, case.organs, self.suppress, self.suppress_fraction) if self.suppress else mask


def quantise(prob: torch.Tensor) -> np.ndarray:
    """``(Z, Y, X)`` probability in [0, 1] -> ``(Z, Y, X)`` uint8 ``round(255 p)``."""
    out = np.empty(prob.shape, dtype=np.uint8)
    for z in range(0, prob.shape[0], 16):
        out[z:z + 16] = torch.round(prob[z:z + 16].float() * 255).to(torch.uint8).numpy()
    return out


def restore_mask(prob_u8: np.ndarray, pre: PreprocessedCase) -> np.ndarray:
    """Threshold-at-0.5 mask ``(Z, Y, X)`` uint8 on the source grid of ``pre`` from ``prob_u8`` on its grid.

    ``prob_u8``: ``(Z, Y, X)`` uint8 ``round(255 p)`` on ``pre.affine``. Resampled
    trilinearly in world coordinates, slabs of the output along Z at a time, so the
    only float temporary is one slab. Outside the body crop the mask is 0.
    """
    shape = pre.source_shape
    out = np.empty(shape, dtype=np.uint8)
    per = max(1, _SLAB_VOXELS // (shape[1] * shape[2]))
    for z0 in range(0, shape[0], per):
        z1 = min(shape[0], z0 + per)
        shift = np.eye(4)
        shift[0, 3] = z0
        slab = resample_to_grid(prob_u8, pre.affine, (z1 - z0, shape[1], shape[2]), pre.source_affine @ shift,
                                order=1, fill=0.0, dtype=np.float32)
        out[z0:z1] = slab >= 127.5
    return out


class OrganSource:
    """Where the organ prompts of each case come from: the organ labels ``anato train`` used.

    In this order: ``--organs DIR`` (``<case_id>.nii.gz``); the stage-1 model the checkpoint
    names (training ran on its maps, ``--organs`` with ``--organ-model``); else the case's own
    organ map in the dataset layout (``ORGANS.nii.gz``, a manifest's ``organs``), which is what
    ``anato train`` reads without ``--organs``. :attr:`description` names the one in use.
    ``for_case(files)`` returns the :class:`Case` to predict, with ``organs`` set when the
    network needs prompts. AnatoError when it needs them and none is available.
    """

    def __init__(self, predictor: Predictor, organs_dir: str | os.PathLike | None):
        self.needed = predictor.needs_organs
        self.prompts = predictor.uses_prompts
        self.organs_dir = organs_dir
        self.device = predictor.device
        self.organ_model = None
        self.organ_model_path: Path | None = None
        path = predictor.meta.get("organ_model")
        if not self.needed:
            self.description = "none (the model uses no organ prompts, no --suppress-organs)"
        elif organs_dir is not None:
            self.description = f"--organs {organs_dir}"
        elif path:
            self._load_model(Path(path))
            self.description = f"stage-1 model {path} (named in the checkpoint)"
        else:
            self.description = "the dataset's own organ maps (ORGANS.nii.gz / manifest 'organs')"

    def _load_model(self, path: Path) -> None:
        if not path.is_file():
            raise AnatoError("stage-1 organ model named in the checkpoint not found; give --organs DIR", path)
        from anatoseg.stage1.model import load_organ_model

        self.organ_model = load_organ_model(path, self.device)
        self.organ_model_path = path

    def files_for(self, files: CaseFiles) -> CaseFiles:
        """``files`` with the organ map this run reads (``--organs`` or the dataset's own), or none."""
        if not self.needed or self.organ_model is not None:
            return dataclasses.replace(files, organs=None)
        if self.organs_dir is not None:
            return with_organs_from(files, self.organs_dir)
        if files.organs is None:
            why = "the model uses organ prompts" if self.prompts else "--suppress-organs needs organ maps"
            raise AnatoError(f"{why} but case {files.case_id} has no organ map in the "
                             "dataset: give --organs DIR (organ label maps <case_id>.nii.gz on the PET grid), or "
                             "train with --organ-model so that the checkpoint names a stage-1 model")
        return files

    def for_case(self, files: CaseFiles) -> Case:
        """The case to predict (``files`` as :meth:`files_for` gave them), with organs when needed."""
        case = load_case(files)
        if self.needed and self.organ_model is not None:
            case.organs = self.organ_model.predict(case, self.device)[0]
        return case


def output_paths(cases: Sequence[CaseFiles], out: str | os.PathLike) -> list[Path]:
    """``out`` itself for one case when it ends in .nii/.nii.gz, else ``out/<case_id>.nii.gz`` (inside ``out``)."""
    out = Path(out)
    if is_nifti(out):
        if len(cases) != 1:
            raise AnatoError(f"OUT is a file name but INPUT holds {len(cases)} cases; give a folder", out)
        return [out]
    if out.exists() and not out.is_dir():
        raise AnatoError("exists and is not a folder (OUT is a folder, or a .nii.gz file for one case)", out)
    return [inside(out, f"{case.case_id}.nii.gz") for case in cases]


@dataclass
class PredictionPlan:
    """What a run reads and writes, checked before anything is: ``cases`` (organ maps resolved),
    ``targets`` (one output per case), ``skipped`` (``<case>: <why>`` per case left out by ``skip_bad``)."""

    cases: list[CaseFiles]
    targets: list[Path]
    skipped: list[str]


def _identities(paths) -> set:
    """Resolved paths and (device, inode) of the existing ones: what an output must not be."""
    found = set()
    for path in paths:
        found.add(Path(path).resolve())
        if Path(path).exists():
            stat = Path(path).stat()
            found.add((stat.st_dev, stat.st_ino))
    return found


def _check_targets(targets: Sequence[Path], inputs: set, overwrite: bool) -> None:
    existing = []
    for target in targets:
        if target.resolve() in inputs or (target.exists() and (target.stat().st_dev, target.stat().st_ino) in inputs):
            raise AnatoError("refusing to write a prediction onto an input of this run (a case's image or "
                             "mask, an organ map or the model); choose another OUT", target)
        if target.exists() or target.is_symlink():
            existing.append(target)
    if existing and not overwrite:
        raise AnatoError(f"{len(existing)} prediction(s) exist already (e.g. {existing[0].name}); pass "
                         f"--overwrite to replace them, or choose another OUT", existing[0].parent)


def plan_predictions(predictor: Predictor, organs: OrganSource, source: str | os.PathLike,
                     out: str | os.PathLike, *, layout: str | None = None, split: str = "test",
                     overwrite: bool = False, skip_bad: bool = False) -> PredictionPlan:
    """Check the whole run before any case is read (module docstring); AnatoError/DataError naming the problem."""
    found = find_cases(source, layout=layout, split=split, skip_bad=skip_bad)
    cases = [organs.files_for(files) for files in found]
    targets = output_paths(cases, out)
    inputs = [getattr(c, key) for c in cases for key in FILE_KEYS if getattr(c, key) is not None]
    inputs += [p for p in (predictor.path, organs.organ_model_path, Path(source)) if p is not None]
    _check_targets(targets, _identities(inputs), overwrite)
    return PredictionPlan(cases, targets, list(found.skipped))


def write_predictions(predictor: Predictor, organs: OrganSource, plan: PredictionPlan, *,
                      progress: bool = True) -> Iterator[Path]:
    """Predict and write every case of ``plan``, yielding each output path."""
    for files, target in tqdm(list(zip(plan.cases, plan.targets, strict=True)), desc="cases", unit="case",
                              disable=not progress or len(plan.cases) == 1):
        case = organs.for_case(files)
        mask = predictor.predict_case(case, progress=progress)
        header = nib.load(str(files.pet))
        yield save_nifti(target, zyx_to_file(mask, header.affine), header.affine, dtype=np.uint8)


def predict_cases(predictor: Predictor, source: str | os.PathLike, out: str | os.PathLike, *,
                  organs_dir: str | os.PathLike | None = None, layout: str | None = None, split: str = "test",
                  progress: bool = True, overwrite: bool = False, skip_bad: bool = False) -> Iterator[Path]:
    """Predict every case of ``source`` (a case folder, dataset folder or manifest), yielding output paths.

    ``split``: which part of an nnU-Net dataset to read (``test`` = imagesTs). The run is checked
    whole first (:func:`plan_predictions`).
    """
    organs = OrganSource(predictor, organs_dir)
    plan = plan_predictions(predictor, organs, source, out, layout=layout, split=split, overwrite=overwrite,
                            skip_bad=skip_bad)
    yield from write_predictions(predictor, organs, plan, progress=progress)
