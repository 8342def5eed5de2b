"""Calls into the compiled masked-patch ops; ``cpu.py`` and ``cuda.py`` bind the device suffix."""

from __future__ import annotations

import torch

from anatokernels import _extension, _memory


def gather(suffix: str, x: torch.Tensor, index: torch.Tensor, patch: tuple[int, int, int]) -> torch.Tensor:
    """(B, C, D, H, W) strided, (B, M) int64 -> (B, M, C·pd·ph·pw)."""
    b, c = x.shape[:2]
    out = _memory.empty((b, index.shape[1], c * patch[0] * patch[1] * patch[2]), dtype=x.dtype, device=x.device)
    _extension.op(f"masked_patch_gather_{suffix}")(x, index.contiguous(), out, list(patch))
    return out


def scatter(suffix: str, patches: torch.Tensor, index: torch.Tensor, patch: tuple[int, int, int],
            out: torch.Tensor, accumulate: bool) -> None:
    """Write (or add: ``out`` is then float32/float64) (B, M, P) patches into ``out`` (B, C, D, H, W) in place."""
    _extension.op(f"masked_patch_scatter_{suffix}")(patches.contiguous(), index.contiguous(), out, list(patch),
                                                    accumulate)
