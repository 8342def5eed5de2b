"""Stage-2 losses: masked-patch reconstruction and cross-modal InfoNCE alignment."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from anatokernels import masked_patch_gather


def masked_reconstruction_loss(pred: torch.Tensor, target: torch.Tensor, masked: torch.Tensor,
                               patch: Sequence[int]) -> torch.Tensor:
    """Mean squared error on the masked patches only.

    pred: ``(B, C, Z, Y, X)`` dense decoder output; only its masked patches are read
        (gathered with :func:`anatokernels.masked_patch_gather`), so visible
        voxels neither add to the loss nor receive gradient.
    target: ``(B, M, C·pz·py·px)`` targets of the same patches
        (:mod:`anatoseg.stage2.targets`).
    masked: ``(B, M)`` int64 patch ids. Returns a scalar.
    """
    return F.mse_loss(masked_patch_gather(pred.float(), masked, patch), target)


def info_nce(a: torch.Tensor, b: torch.Tensor, temperature: float,
             exclude: torch.Tensor | None = None) -> torch.Tensor:
    """Symmetric InfoNCE between paired tokens.

    a, b: ``(N, D)``; row ``i`` of ``a`` and row ``i`` of ``b`` are the two
    modalities' projections of the same position (the positive pair); every other
    row of the other modality is a negative, except the pairs ``(i, j)`` where
    ``exclude`` (``(N, N)`` bool, False on the diagonal) is True. Tokens are
    L2-normalised, so the logits are cosine similarities over ``temperature``.
    Returns a scalar: the mean of the a->b and b->a cross-entropies (``log N`` for
    uninformative tokens and no exclusions).
    """
    a = F.normalize(a.float(), dim=-1)
    b = F.normalize(b.float(), dim=-1)
    logits = a @ b.T / temperature
    if exclude is not None:
        logits = logits.masked_fill(exclude, float("-inf"))
    labels = torch.arange(a.shape[0], device=a.device)
    return 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels))


def near_pairs(positions: torch.Tensor, radius: float) -> torch.Tensor:
    """Which token pairs are spatial neighbours, to keep out of the InfoNCE negatives.

    positions: ``(N, 4)`` rows ``(sample, z, y, x)`` (grid units). Returns ``(N, N)``
    bool: True for ``i != j`` of the same sample at Euclidean distance ``<= radius``.
    """
    same = positions[:, None, 0] == positions[None, :, 0]
    near = torch.cdist(positions[:, 1:].float(), positions[:, 1:].float()) <= radius
    return same & near & ~torch.eye(positions.shape[0], dtype=torch.bool, device=positions.device)
