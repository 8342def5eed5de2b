"""``order_conv1d`` through the external ``causal-conv1d`` package (``backend="causal_conv1d"``).

Only the native raster order fits that package: every order must be ``"zyx"``, so that scan step t
is native position t and the op is a plain causal depthwise conv over L. The K orders then fold into
channels (each (k, d) has its own weight row):

    x (B, K, D, L) -> (B, K·D, L),  weight (K, D, W) -> (K·D, W),  bias (K, D) -> (K·D,)

and ``causal_conv1d_fn(x, weight, bias, activation)`` (= ``F.conv1d(x, w.unsqueeze(1), b,
padding=W-1, groups=K·D)[..., :L]``, then silu) gives the result; its own autograd gives every
gradient. The package is imported on first use, never with :mod:`anatokernels`.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence

import torch

OP = "order_conv1d"
NATIVE = "zyx"
DTYPES = (torch.float16, torch.bfloat16, torch.float32)


def check_supported(orders: Sequence[str], dtype: torch.dtype) -> None:
    """ValueError unless every order is the native raster order and the dtype is one the package has."""
    others = sorted({o for o in orders if o != NATIVE})
    if others:
        raise ValueError(f"{OP}: backend='causal_conv1d' runs the native raster order {NATIVE!r} only (every "
                         f"one of the K orders must be {NATIVE!r}), got {others}; use another backend")
    if dtype not in DTYPES:
        raise ValueError(f"{OP}: backend='causal_conv1d' takes float16/bfloat16/float32 inputs, got {dtype}")


def order_conv1d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                 spatial: tuple[int, int, int], orders: Sequence[str], activation: str | None) -> torch.Tensor:
    """x (B, K, D, L), weight (K, D, W), bias (K, D) or None -> (B, K, D, L); orders all ``"zyx"``."""
    check_supported(orders, x.dtype)
    fn = importlib.import_module("causal_conv1d").causal_conv1d_fn
    b, k, d, length = x.shape
    folded = x.reshape(b, k * d, length)
    out = fn(folded, weight.reshape(k * d, weight.shape[-1]), None if bias is None else bias.reshape(k * d),
             activation=activation)
    return out.view(b, k, d, length)
