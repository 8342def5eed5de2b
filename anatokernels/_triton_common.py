"""Triton helpers shared by several ops' kernels: the scan-order geometry and the accumulation dtype.

This is the Triton side of :mod:`anatokernels.scan_order`: a kernel gets the
(K, 7) int64 rows of :func:`anatokernels.scan_order.geometry_tensor`, loads
order k's row once with :func:`order_geometry`, then maps scan steps to native
positions with :func:`native_position` and back with :func:`scan_step`.
Imported only by the ops' ``triton.py`` modules (lazily, on first use).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl


def tl_dtype(dtype: torch.dtype):
    """The Triton dtype of an accumulation dtype (see :func:`anatokernels._checks.accumulation_dtype`)."""
    return tl.float64 if dtype == torch.float64 else tl.float32


@triton.jit
def order_geometry(geo_ptr, k):
    """Order k's (n0, n1, n2, stride0, stride1, stride2, reverse) from the (K, 7) geometry rows."""
    g = geo_ptr + k * 7
    return (tl.load(g), tl.load(g + 1), tl.load(g + 2), tl.load(g + 3), tl.load(g + 4), tl.load(g + 5),
            tl.load(g + 6))


@triton.jit
def native_position(t, n1, n2, st0, st1, st2, rev, L):
    """Native position visited at scan step t (t clamped into [0, L) so that masked lanes stay in bounds)."""
    t = tl.minimum(tl.maximum(t, 0), L - 1)
    s = tl.where(rev != 0, L - 1 - t, t)
    return (s // (n1 * n2)) * st0 + ((s // n2) % n1) * st1 + (s % n2) * st2


@triton.jit
def scan_step(p, n0, n1, n2, st0, st1, st2, rev, L):
    """Scan step at which native position p is visited (the inverse of :func:`native_position`)."""
    s = ((p // st0) % n0) * (n1 * n2) + ((p // st1) % n1) * n2 + (p // st2) % n2
    return tl.where(rev != 0, L - 1 - s, s)
