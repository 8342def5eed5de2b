"""Test-time mirroring (nnU-Net's): the mean softmax of the network over the 8 flips of (Z, Y, X).

Each flip is applied to the image and to the organ prompts alike; a flip of X (left-right) also swaps the
left/right organ labels (:func:`anatoseg.data.labels.swap_left_right`), as the mirroring augmentation does in
training, so that the organ on the left is always named left.
"""

from __future__ import annotations

import itertools

import numpy as np
import torch

from anatoseg.data.labels import swap_left_right
from anatoseg.inference.sliding_window import Forward
from anatoseg.training.augment import X_AXIS

#: The 8 flips: every subset of the spatial axes (0, 1, 2) = (Z, Y, X), the identity first.
FLIPS: tuple[tuple[int, ...], ...] = tuple(axes for n in range(4) for axes in itertools.combinations(range(3), n))
#: ``(256,)`` int64 lookup table of :func:`swap_left_right` (organ id -> id after a left-right flip).
SWAP_LUT = torch.from_numpy(swap_left_right(np.arange(256, dtype=np.uint8)[None, None])[0, 0].astype(np.int64))


def flip_organs(organs: torch.Tensor, axes: tuple[int, ...]) -> torch.Tensor:
    """Organ ids ``(B, Z, Y, X)`` flipped along the spatial ``axes``, left/right labels swapped when X is one."""
    flipped = organs.flip([a + 1 for a in axes]) if axes else organs
    return SWAP_LUT.to(organs.device)[flipped] if X_AXIS in axes else flipped


def mirrored(forward: Forward) -> Forward:
    """``forward`` averaged over :data:`FLIPS`: ``(images (B, C, *P), organs (B, *P) | None)`` -> ``(B, 2, *P)``
    log of the mean softmax (a valid logit vector: its softmax is the mean probability)."""

    def run(images: torch.Tensor, organs: torch.Tensor | None) -> torch.Tensor:
        total = None
        for axes in FLIPS:
            dims = [a + 2 for a in axes]
            logits = forward(images.flip(dims) if axes else images,
                             None if organs is None else flip_organs(organs, axes))
            if isinstance(logits, (list, tuple)):
                logits = logits[0]
            prob = torch.softmax(logits.float(), dim=1)
            prob = prob.flip(dims) if axes else prob
            total = prob if total is None else total + prob
        return torch.log((total / len(FLIPS)).clamp_min(1e-30))

    return run
