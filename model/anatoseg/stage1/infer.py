"""Whole-volume organ segmentation with a stage-1 network, and per-organ confidence.

The volume is cut into slabs along Z (``slab`` voxels, plus ``margin`` voxels of
context on each side that are computed and thrown away), so memory is bounded by
one slab of activations whatever the body length, and only the label and its
softmax probability are kept per voxel (no full-volume class probabilities).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from anatoseg.data.labels import ORGANS


def _pad_to(x: torch.Tensor, divisor: int) -> torch.Tensor:
    """Replicate-pad ``x`` (B, C, X, Y, Z) at the end of each spatial axis up to a multiple of ``divisor``."""
    pad = []
    for n in reversed(x.shape[2:]):
        pad += [0, (-n) % divisor]
    return F.pad(x, pad, mode="replicate") if any(pad) else x


@torch.no_grad()
def segment(net: nn.Module, image: np.ndarray, *, divisor: int, slab: int = 64, margin: int = 16,
            device: str | torch.device = "cpu") -> tuple[np.ndarray, np.ndarray]:
    """Organ labels and their confidence for a whole volume.

    ``image``: ``(C, X, Y, Z)`` float32, normalised, with the network's channels.
    ``divisor``: the network's total downsampling. Returns ``labels`` ``(X, Y, Z)``
    uint8 (argmax class) and ``confidence`` ``(X, Y, Z)`` float32, the softmax
    probability of that class, in [0, 1].
    """
    was_training = net.training
    net.eval()
    size_z = image.shape[-1]
    labels = np.empty(image.shape[1:], dtype=np.uint8)
    confidence = np.empty(image.shape[1:], dtype=np.float32)
    for z0 in range(0, size_z, slab):
        z1 = min(z0 + slab, size_z)
        lo, hi = max(0, z0 - margin), min(size_z, z1 + margin)
        x = torch.from_numpy(np.ascontiguousarray(image[..., lo:hi], dtype=np.float32))[None].to(device)
        probs = net(_pad_to(x, divisor)).float().softmax(1)[0, :, : image.shape[1], : image.shape[2], z0 - lo:z1 - lo]
        best, arg = probs.max(0)
        labels[..., z0:z1] = arg.to(torch.uint8).cpu().numpy()
        confidence[..., z0:z1] = best.cpu().numpy()
    net.train(was_training)
    return labels, confidence


def organ_confidence(labels: np.ndarray, confidence: np.ndarray, voxel_ml: float) -> dict[str, dict]:
    """Per organ of the label set: voxels, volume and mean confidence over the voxels labelled with it.

    ``labels``, ``confidence``: ``(X, Y, Z)``. Returns ``{name: {"id", "voxels",
    "volume_ml", "confidence"}}``; ``confidence`` is None for an organ with no voxel.
    """
    flat = labels.ravel()
    counts = np.bincount(flat, minlength=len(ORGANS) + 1)
    sums = np.bincount(flat, weights=confidence.ravel(), minlength=len(ORGANS) + 1)
    return {organ.name: {"id": organ.id, "voxels": int(counts[organ.id]),
                         "volume_ml": float(counts[organ.id] * voxel_ml),
                         "confidence": float(sums[organ.id] / counts[organ.id]) if counts[organ.id] else None}
            for organ in ORGANS}
