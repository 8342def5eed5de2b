"""Calls into the compiled order_conv1d ops; ``cpu.py`` and ``cuda.py`` bind the device suffix."""

from __future__ import annotations

import torch

from anatokernels import _checks, _extension, _memory


def forward(suffix: str, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, geometry: torch.Tensor,
            silu: bool) -> torch.Tensor:
    """x (B, K, D, L) strided, weight (K, D, W), bias (K, D) or None, geometry (K, 7) -> (B, K, D, L)."""
    out = _memory.empty(x.shape, dtype=x.dtype, device=x.device)
    _extension.op(f"order_conv1d_fwd_{suffix}")(x, weight, bias, geometry, silu, out)
    return out


def backward(suffix: str, grad: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
             geometry: torch.Tensor, silu: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """grad (B, K, D, L) contiguous -> dx (B, K, D, L), dweight (K, D, W), dbias (K, D); the last two in
    float32 (float64 for float64 inputs)."""
    acc = _checks.accumulation_dtype(x)
    dx = _memory.empty(x.shape, dtype=x.dtype, device=x.device)
    dweight = _memory.empty(weight.shape, dtype=acc, device=x.device)
    dbias = _memory.empty(weight.shape[:2], dtype=acc, device=x.device)
    _extension.op(f"order_conv1d_bwd_{suffix}")(grad, x, weight, bias, geometry, silu, dx, dweight, dbias)
    return dx, dweight, dbias
