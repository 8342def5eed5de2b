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
    target: ``(B, M, C·pz·py·px)`` normalised targets of the same patches
        (:func:`anatoseg.stage2.masking.normalised_targets`).
    masked: ``(B, M)`` int64 patch ids. Returns a scalar.
    """
    return F.mse_loss(masked_patch_gather(pred.float(), masked, patch), target)


def info_nce(a: torch.Tensor, b: torch.Tensor, temperature: float) -> torch.Tensor:
    """Symmetric InfoNCE between paired tokens.

    a, b: ``(N, D)``; row ``i`` of ``a`` and row ``i`` of ``b`` are the two
    modalities' projections of the same position (the positive pair); every other
    row of the other modality is a negative. Tokens are L2-normalised, so the
    logits are cosine similarities over ``temperature``. Returns a scalar: the
    mean of the a->b and b->a cross-entropies (``log N`` for uninformative tokens).
    """
    a = F.normalize(a.float(), dim=-1)
    b = F.normalize(b.float(), dim=-1)
    logits = a @ b.T / temperature
    labels = torch.arange(a.shape[0], device=a.device)
    return 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels))
