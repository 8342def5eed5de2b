"""The saved stage-1 organ model: checkpoint format, loading, and organ prompts for any case.

Checkpoint (``torch.load(path, weights_only=True)`` reads it; written atomically)::

    {"format": "anatoseg", "version": 1, "kind": "stage1",
     "meta": {"axes": "zyx",                     # every size below is (Z, Y, X); required on load
              "in_channels": 5,                  # network inputs: [3 coordinates +] CT [+ PET]
              "coordinates": True,               # body-frame coordinate channels first (stage1/inputs.py)
              "window": [-0.53, 0.8, 3],         # soft-tissue CT window (low, high, CT channel) or None
              "num_classes": 15,                 # background + the organ label set
              "widths": [8, 16, 32, 64],         # OrganUNet levels
              "organs": {"1": "brain", ...},     # anatoseg.data.labels.organ_table()
              "preprocessing": "{...}",          # Preprocessing.to_dict() as JSON
              "patch_size": [48, 48, 48],        # inference windows = training patches (Z, Y, X)
              "overlap": 0.5, "slab": 96,        # window overlap; Z slab length (working voxels)
              "config": "{...}",                 # the Stage1Config as JSON
              "dice": {...} | None},             # the run's Dice summary, when ground truth existed
     "model": state_dict}                        # the student (its mean-teacher / EMA weights)

:func:`predict_organs` turns it into organ prompts for a
:class:`~anatoseg.data.case.Case`; stage 3 calls it when no ``--organs`` folder is given.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from anatoseg.checkpoint import FORMAT, VERSION, load_checkpoint, load_state_strict, save_checkpoint
from anatoseg.data.axes import AXES
from anatoseg.data.case import Case
from anatoseg.data.labels import organ_table
from anatoseg.data.preprocess import Preprocessing, preprocess_case
from anatoseg.errors import ConfigError
from anatoseg.stage1.config import Stage1Config
from anatoseg.stage1.infer import segment
from anatoseg.stage1.inputs import image_channels, network_input
from anatoseg.stage1.net import OrganUNet

KIND = "stage1"


@dataclass
class OrganModel:
    """A loaded stage-1 network with its preprocessing. ``in_channels``: network inputs (3 coordinate
    channels first when ``coordinates``, then CT, or CT and PET)."""

    net: OrganUNet
    preprocessing: Preprocessing
    in_channels: int
    coordinates: bool
    patch_size: tuple[int, int, int]
    overlap: float
    slab: int
    meta: dict[str, Any]

    def predict(self, case: Case, device: str | torch.device = "cpu") -> tuple[np.ndarray, np.ndarray]:
        """See :func:`predict_organs`."""
        work = preprocess_case(case, self.preprocessing)
        image = work.image[: image_channels(self.in_channels, self.coordinates)]
        labels, confidence = segment(self.net.to(device), network_input(image, self.coordinates), patch=self.patch_size,
                                     overlap=self.overlap, slab=self.slab, device=device)
        return (work.restore(labels, order=0, fill=0, dtype=np.uint8),
                np.clip(work.restore(confidence, order=1, fill=1.0, dtype=np.float32), 0.0, 1.0))


def save_organ_model(path: str | os.PathLike, net: OrganUNet, config: Stage1Config, preprocessing: Preprocessing,
                     dice: dict | None = None) -> Path:
    """Write ``net`` (CT or CT + PET input) as a stage-1 checkpoint (format in the module docstring)."""
    in_channels = net.stem.conv1.in_channels - (net.window is not None)
    if image_channels(in_channels, config.coordinates) not in (1, 2):
        raise ValueError(f"save_organ_model: a network with {in_channels} inputs is neither CT nor CT + PET"
                         f"{' after the 3 coordinate channels (config.coordinates)' if config.coordinates else ''}")
    meta = {"axes": AXES, "in_channels": in_channels, "coordinates": bool(config.coordinates),
            "window": None if net.window is None else list(net.window),
            "num_classes": net.head.out_channels,
            "widths": list(config.widths), "organs": organ_table(),
            "preprocessing": json.dumps(preprocessing.to_dict()), "patch_size": list(config.data.patch_size),
            "overlap": config.data.overlap, "slab": config.data.slab,
            "config": json.dumps(config.to_dict()), "dice": dice}
    state = {k: v.detach().cpu() for k, v in net.state_dict().items()}
    return save_checkpoint(path, {"format": FORMAT, "version": VERSION, "kind": KIND, "meta": meta, "model": state})


def load_organ_model(path: str | os.PathLike, device: str | torch.device = "cpu") -> OrganModel:
    """Read a stage-1 checkpoint. ConfigError if it is another kind of checkpoint or was
    trained with another organ label set; AnatoError if it is missing or unreadable."""
    checkpoint = load_checkpoint(path, kind=KIND)
    meta = checkpoint["meta"]
    if meta.get("organs") != organ_table():
        raise ConfigError("stage-1 model was trained with another organ label set", path)
    net = OrganUNet(int(meta["in_channels"]), int(meta["num_classes"]), meta["widths"], meta.get("window"))
    load_state_strict(net, checkpoint["model"], path, what="stage-1 model")
    preprocessing = Preprocessing.from_dict(json.loads(meta["preprocessing"]))
    return OrganModel(net=net.to(device).eval(), preprocessing=preprocessing, in_channels=int(meta["in_channels"]),
                      coordinates=bool(meta.get("coordinates", False)),
                      patch_size=tuple(int(p) for p in meta["patch_size"]), overlap=float(meta["overlap"]),
                      slab=int(meta["slab"]), meta=meta)


def predict_organs(model: OrganModel | str | os.PathLike, case: Case,
                   device: str | torch.device = "cpu") -> tuple[np.ndarray, np.ndarray]:
    """Organ labels and voxel confidence for ``case`` from a stage-1 model (object or checkpoint path).

    Returns ``labels`` ``(Z, Y, X)`` uint8 organ ids of :data:`anatoseg.data.labels.ORGANS`
    and ``confidence`` ``(Z, Y, X)`` float32 in [0, 1] (softmax probability of the
    chosen label; 1 outside the body crop, where the label is background), both on
    the case's own grid (``case.shape``, ``case.affine``), i.e. in the layout of
    ``case.organs``. Pass an :class:`OrganModel` from :func:`load_organ_model` to
    avoid re-reading the checkpoint for every case.
    """
    if not isinstance(model, OrganModel):
        model = load_organ_model(model, device)
    return model.predict(case, device)
