"""Triton helpers shared by several ops' kernels: the scan-order geometry and the accumulation dtype.

This is the Triton side of :mod:`anatokernels.scan_order`. A kernel gets the
(K, 7) int64 rows of :func:`anatokernels.scan_order.geometry_tensor` and loads
order k's row once with :func:`order_geometry` (as int32: positions inside one
volume are below 2^31, which ``geometry_tensor`` checks; offsets into the
tensors stay int64).

Position math is 32-bit and division-free per element. A scan step is held as
its order *digits* (c0, c1, c2) (slowest first) of the unreversed index
``s = L-1-t if reverse else t``. A program finds the digits of one start (a
chunk's first step, a tile's first native position) with a 32-bit division
once (:func:`step_digits`, :func:`position_digits`), and every element is then
reached by a small mixed-radix addition (:func:`advance`) whose carries are
quotients of small numbers, computed with an fp32 reciprocal and one exact
integer correction (:func:`small_divmod`), not an integer division.

Kernels tiled along *runs* of the fastest axis (n2 steps each, n0·n1 runs) need
less: the first native position of a run (:func:`run_start`, one division per
run and program) and the step ±stride2 between its positions. The launchers
size their grids from the geometry rows on the host (:func:`geometry_rows`).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch.utils.weak import WeakIdKeyDictionary

_ROWS = WeakIdKeyDictionary()  # geometry tensor -> its rows as host ints


def tl_dtype(dtype: torch.dtype):
    """The Triton dtype of an accumulation dtype (see :func:`anatokernels._checks.accumulation_dtype`)."""
    return tl.float64 if dtype == torch.float64 else tl.float32


def geometry_rows(geometry: torch.Tensor) -> list[list[int]]:
    """The (K, 7) geometry rows as host ints, read once per tensor (``geometry_tensor`` caches the tensor per
    (volume, orders, device), so a GPU run syncs once per volume and orders, not per call)."""
    rows = _ROWS.get(geometry)
    if rows is None:
        rows = _ROWS[geometry] = geometry.tolist()
    return rows


@triton.jit
def order_geometry(geo_ptr, k):
    """Order k's (n0, n1, n2, stride0, stride1, stride2, reverse) from the (K, 7) geometry rows, int32."""
    g = geo_ptr + k * 7
    return (tl.load(g).to(tl.int32), tl.load(g + 1).to(tl.int32), tl.load(g + 2).to(tl.int32),
            tl.load(g + 3).to(tl.int32), tl.load(g + 4).to(tl.int32), tl.load(g + 5).to(tl.int32),
            tl.load(g + 6).to(tl.int32))


@triton.jit
def reciprocal(n):
    """1/n in fp32 for :func:`small_divmod` (once per program)."""
    return 1.0 / n.to(tl.float32)


@triton.jit
def small_divmod(x, n, inv_n):
    """(floor(x / n), x - n·floor(x / n)) for int32 x (any sign) and n ≥ 1, without an integer division.

    Exact when |x / n| < 2^20 (x itself may be any int32): the fp32 estimate is then off by less
    than one, and one integer correction fixes it. Callers keep x / n small (a chunk or tile length).
    """
    q = tl.floor(x.to(tl.float32) * inv_n).to(tl.int32)
    r = x - q * n
    q = tl.where(r >= n, q + 1, tl.where(r < 0, q - 1, q))
    r = tl.where(r >= n, r - n, tl.where(r < 0, r + n, r))
    return q, r


@triton.jit
def step_digits(t, n1, n2, rev, L):
    """Digits (c0, c1, c2) of step t (int32 scalar, 0 <= t < L): the one integer division, once per program."""
    s = tl.where(rev != 0, L - 1 - t, t)
    q = s // n2
    return q // n1, q % n1, s % n2


@triton.jit
def advance(c0, c1, c2, delta, n1, n2, inv1, inv2):
    """Digits of the unreversed index s + delta from those (c0, c1, c2) of s; |delta| small (a chunk).
    c0 may leave [0, n0): that index is outside the volume."""
    q2, r2 = small_divmod(c2 + delta, n2, inv2)
    q1, r1 = small_divmod(c1 + q2, n1, inv1)
    return c0 + q1, r1, r2


@triton.jit
def step_positions(c0, c1, c2, offsets, n0, n1, n2, st0, st1, st2, rev, inv1, inv2):
    """Native positions (int32, 0 where invalid) and validity of the steps t0 + offsets, where (c0, c1, c2)
    are the digits of step t0; valid means 0 <= t0 + offset < L."""
    d0, d1, d2 = advance(c0, c1, c2, tl.where(rev != 0, -offsets, offsets), n1, n2, inv1, inv2)
    valid = (d0 >= 0) & (d0 < n0)
    return tl.where(valid, d0 * st0 + d1 * st1 + d2 * st2, 0), valid


@triton.jit
def axis_digit(p0, j, st, n):
    """Digit (p // st) % n of the native positions p = p0 + j (j small, int32) along one order axis:
    one division of the scalar p0 per program, small fp32 divisions per element."""
    a = p0 // st
    q, _r = small_divmod(p0 - a * st + j, st, reciprocal(st))
    _q, digit = small_divmod(a % n + q, n, reciprocal(n))
    return digit


@triton.jit
def position_digits(p0, j, n0, n1, n2, st0, st1, st2, rev, L):
    """Digits (c0, c1, c2) of the unreversed index of the native positions p0 + j, and the scan step t
    at which each is visited (the inverse of :func:`step_positions`)."""
    c0 = axis_digit(p0, j, st0, n0)
    c1 = axis_digit(p0, j, st1, n1)
    c2 = axis_digit(p0, j, st2, n2)
    s = (c0 * n1 + c1) * n2 + c2
    return c0, c1, c2, tl.where(rev != 0, L - 1 - s, s)


@triton.jit
def run_start(rho, n1, n2, st0, st1, st2, rev, runs):
    """First native position (int32) of run rho (int32 scalar, 0 <= rho < runs = n0·n1) in scan order: the
    run's step u is at ``run_start + u·(−stride2 if reversed else stride2)``. One 32-bit division."""
    r = tl.where(rev != 0, runs - 1 - rho, rho)
    c0 = r // n1
    return c0 * st0 + (r - c0 * n1) * st1 + tl.where(rev != 0, (n2 - 1) * st2, 0)
