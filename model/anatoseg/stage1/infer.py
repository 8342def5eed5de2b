"""Whole-volume organ segmentation with a stage-1 network, and per-organ confidence.

The networks normalise with GroupNorm, whose statistics depend on the extent of
the input, so inference runs on windows of exactly the training patch size
(sliding window with Gaussian blending, as nnU-Net does); a forward pass over
a whole volume would see other statistics than training did. Windows are run
one Z slab at a time (along the first axis: ``slab`` voxels plus half a patch of context on each side,
computed and thrown away), so memory is bounded by one slab of class scores
whatever the body length, and only the label and its probability are kept per voxel.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from monai.inferers import sliding_window_inference
from torch import nn

from anatoseg.data.labels import ORGANS


@torch.no_grad()
def segment(net: nn.Module, image: np.ndarray, *, patch: Sequence[int], overlap: float = 0.5, slab: int = 96,
            device: str | torch.device = "cpu") -> tuple[np.ndarray, np.ndarray]:
    """Organ labels and their confidence for a whole volume.

    ``image``: ``(C, Z, Y, X)`` float32, normalised, with the network's channels.
    ``patch``: the training patch ``(Z, Y, X)``, used as the window; ``overlap``:
    window overlap per axis. Volumes smaller than a window are edge-padded, as in
    training. Returns ``labels`` ``(Z, Y, X)`` uint8 (argmax class) and
    ``confidence`` ``(Z, Y, X)`` float32, the blended softmax probability of that class, in [0, 1].
    """
    was_training = net.training
    net.eval()
    patch = [int(p) for p in patch]
    margin = patch[0] // 2
    size_z = image.shape[1]
    labels = np.empty(image.shape[1:], dtype=np.uint8)
    confidence = np.empty(image.shape[1:], dtype=np.float32)
    for z0 in range(0, size_z, slab):
        z1 = min(z0 + slab, size_z)
        lo, hi = max(0, z0 - margin), min(size_z, z1 + margin)
        x = torch.from_numpy(np.ascontiguousarray(image[:, lo:hi], dtype=np.float32))[None].to(device)
        logits = sliding_window_inference(x, patch, 2, net, overlap=overlap, mode="gaussian",
                                          padding_mode="replicate")
        best, arg = logits[0, :, z0 - lo:z1 - lo].float().softmax(0).max(0)
        labels[z0:z1] = arg.to(torch.uint8).cpu().numpy()
        confidence[z0:z1] = best.cpu().numpy()
    net.train(was_training)
    return labels, confidence


def organ_confidence(labels: np.ndarray, confidence: np.ndarray, voxel_ml: float) -> dict[str, dict]:
    """Per organ of the label set: voxels, volume and mean confidence over the voxels labelled with it.

    ``labels``, ``confidence``: ``(Z, Y, X)``. Returns ``{name: {"id", "voxels",
    "volume_ml", "confidence"}}``; ``confidence`` is None for an organ with no voxel.
    """
    flat = labels.ravel()
    counts = np.bincount(flat, minlength=len(ORGANS) + 1)
    sums = np.bincount(flat, weights=confidence.ravel(), minlength=len(ORGANS) + 1)
    return {organ.name: {"id": organ.id, "voxels": int(counts[organ.id]),
                         "volume_ml": float(counts[organ.id] * voxel_ml),
                         "confidence": float(sums[organ.id] / counts[organ.id]) if counts[organ.id] else None}
            for organ in ORGANS}
