"""Triton kernels for the order-aware causal depthwise conv, forward and backward.

Tiles along runs. Order k visits its R = n0·n1 runs of the fastest axis one after the other, n2 steps
each. A tile is BLOCK_T consecutive steps u of BLOCK_R consecutive runs ρ (BLOCK_R = 1 on a GPU; the
interpreter, slow per operation rather than per element, takes blocks of runs); one program walks TILES
consecutive tiles of one (b, k) for BLOCK_D channels, with the taps and bias loaded once. The scan step
is t = ρ·n2 + u and the native position ``run_start(ρ) + u·us`` with us = ±stride2 (− for a reversed
order). Positions are int32 with no per-element division: one 32-bit division per tile finds ρ, one per
run its start (:func:`anatokernels._triton_common.run_start`).
Row bases (b, k, d) and, for an x whose position stride is not 1, x's offsets are int64: a whole-body
volume times D exceeds 2^31 elements. (Above 2^30 positions a run's anchor, below, can leave the int32
range; the sum anchor + e·us wraps back to the position, which is below 2^31.)

Halo. The conv at step t reads x at t−1 … t−(W−1) (the backward also needs t+1 … t+W−1): at the start
(end) of a run those steps lie in the previous (next) runs *in scan order*. Each shifted step takes its
run's start by a select on e = u + shift: the neighbouring run when e leaves [0, n2), up to W−1 runs away
when runs are shorter than W−1 steps (``RUNS_AWAY``, a launch constant, 1 otherwise). Steps before 0 or
past L−1 read as 0. Each shift is its own load: along a unit-stride run it reads the lines the tile
already reads (cache hits); along a strided run (z fastest) each lane reads its own line, which the
programs of the neighbouring runs share through the caches. Under the launch's grid, orders with fewer
tiles than the largest leave programs that mask everything and write zero partials.

Backward in one pass: the pre-activation gradient gp(t+i) = g(t+i)·act'(pre(t+i)) for i = 0 … W−1 is
computed from x at the 2W−1 steps t−(W−1) … t+W−1 and g at t … t+W−1, then
dx(t) = Σ_j v_j·gp(t+j) with v_j = weight[W−1−j] the tap at lag j; dweight[W−1−j] = Σ_t gp(t)·x(t−j) and
dbias = Σ_t gp(t) are summed elementwise over the program's tiles, reduced over the tile once at the end
and written once per program into a partial buffer that ``torch.sum`` reduces (deterministic, no
atomics). Accumulation is fp32 (fp64 for fp64 inputs).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from anatokernels import _checks, _memory
from anatokernels._triton_common import geometry_rows, order_geometry, run_start, tl_dtype

# Launch shapes: (runs per tile, steps per tile, channels × tile elements, tiles per program). A GPU takes one
# run of a 64³ volume per tile. The interpreter is slow per operation, not per element: it takes blocks of 8
# runs, cut into tiles of 4 steps (the tests' runs of 1-11 steps then span several tiles, unevenly), and walks
# 3 tiles per program (not a divisor of the tile counts either).
_INTERPRETER_LAUNCH = (8, 4, 1 << 12, 3)
_GPU_LAUNCH = {"forward": (1, 64, 1024, 4), "backward": (1, 64, 512, 8)}


@triton.jit
def _order(geo_ptr, K, pid_bk):
    """b (int64) and k of the flat (b, k) index, and the geometry tuple (n1, n2, stride0, stride1, stride2,
    reverse, runs) of order k."""
    k = pid_bk % K
    n0, n1, n2, st0, st1, st2, rev = order_geometry(geo_ptr, k)
    return (pid_bk // K).to(tl.int64), k, (n1, n2, st0, st1, st2, rev, n0 * n1)


@triton.jit
def _tile(tile, geo, BLOCK_R: tl.constexpr, BLOCK_T: tl.constexpr, RUNS_AWAY: tl.constexpr, AHEAD: tl.constexpr):
    """Tile ``tile``: BLOCK_T steps u of BLOCK_R consecutive runs ρ, (BLOCK_R·BLOCK_T,) run-major (tiles numbered
    run block after run block in scan order; past the order's last tile everything is masked). ρ is a scalar
    when BLOCK_R = 1 (every GPU launch); the interpreter's many-run tiles take a per-element run start.

    Returns the tuple (u, mask, us, n2, lo, hi, a0, back, ahead) that :func:`_shifted` reads: the step us =
    ±stride2, the bounds lo = −ρ·n2 and hi = (runs − ρ)·n2 of a valid shifted step e = u + shift, and the
    anchors a_q = run_start(ρ − q) + q·n2·us (a0; back q = 1..3, ahead q = −1..−3, those beyond RUNS_AWAY or
    ahead without AHEAD left 0), so that step e of the run q away is at a_q + e·us."""
    n1, n2, st0, st1, st2, rev, runs = geo
    tiles = (n2 + BLOCK_T - 1) // BLOCK_T
    group = tile // tiles
    j = tl.arange(0, BLOCK_R * BLOCK_T)
    if BLOCK_R == 1:
        rho = group
        u = (tile - group * tiles) * BLOCK_T + j
    else:
        rho = group * BLOCK_R + j // BLOCK_T
        u = (tile - group * tiles) * BLOCK_T + j % BLOCK_T
    mask = u < tl.where(rho < runs, n2, 0)
    rho = tl.minimum(rho, runs - 1)
    us = tl.where(rev != 0, -st2, st2)
    a0 = run_start(rho, n1, n2, st0, st1, st2, rev, runs)
    back = _anchors(rho, geo, us, -1, RUNS_AWAY)
    ahead = (0, 0, 0)
    if AHEAD:
        ahead = _anchors(rho, geo, us, 1, RUNS_AWAY)
    return u, mask, us, n2, -rho * n2, (runs - rho) * n2, a0, back, ahead


@triton.jit
def _anchors(rho, geo, us, SIGN: tl.constexpr, RUNS_AWAY: tl.constexpr):
    """The anchors of the runs q = 1..RUNS_AWAY away from ρ in direction SIGN (−1 back, +1 ahead), run
    indices clamped to the order's runs; 0 beyond RUNS_AWAY."""
    n1, n2, st0, st1, st2, rev, runs = geo
    a1 = run_start(tl.minimum(tl.maximum(rho + SIGN, 0), runs - 1), n1, n2, st0, st1, st2, rev, runs) - SIGN * n2 * us
    a2 = 0
    a3 = 0
    if RUNS_AWAY > 1:
        a2 = run_start(tl.minimum(tl.maximum(rho + 2 * SIGN, 0), runs - 1), n1, n2, st0, st1, st2, rev,
                       runs) - 2 * SIGN * n2 * us
    if RUNS_AWAY > 2:
        a3 = run_start(tl.minimum(tl.maximum(rho + 3 * SIGN, 0), runs - 1), n1, n2, st0, st1, st2, rev,
                       runs) - 3 * SIGN * n2 * us
    return a1, a2, a3


@triton.jit
def _channels(D, BLOCK_D: tl.constexpr):
    """This program's channels d (BLOCK_D,) int64 and d < D (grid axis 1)."""
    d = tl.program_id(1).to(tl.int64) * BLOCK_D + tl.arange(0, BLOCK_D).to(tl.int64)
    return d, d < D


@triton.jit
def _shifted(t, SHIFT: tl.constexpr, RUNS_AWAY: tl.constexpr):
    """Native positions (int32) of the steps s + SHIFT of the tile ``t``'s steps s (|SHIFT| <= 3), and where
    they are loaded: s in the tile and 0 <= s + SHIFT < L."""
    u, mask, us, n2, lo, hi, a0, back, ahead = t
    e = u + SHIFT
    if SHIFT < 0:
        b1, b2, b3 = back
        base = tl.where(e < 0, b1, a0)
        if RUNS_AWAY > 1:
            if SHIFT < -1:
                base = tl.where(e < -n2, b2, base)
        if RUNS_AWAY > 2:
            if SHIFT < -2:
                base = tl.where(e < -2 * n2, b3, base)
        mask = mask & (e >= lo)
    elif SHIFT > 0:
        f1, f2, f3 = ahead
        base = tl.where(e >= n2, f1, a0)
        if RUNS_AWAY > 1:
            if SHIFT > 1:
                base = tl.where(e >= 2 * n2, f2, base)
        if RUNS_AWAY > 2:
            if SHIFT > 2:
                base = tl.where(e >= 3 * n2, f3, base)
        mask = mask & (e < hi)
    else:
        base = a0
    return base + e * us, mask


@triton.jit
def _x_at(x_row, t, mask_d, sx_l, SHIFT: tl.constexpr, USED: tl.constexpr, RUNS_AWAY: tl.constexpr,
          UNIT_SX: tl.constexpr, ACC: tl.constexpr):
    """x at steps s + SHIFT as a [BLOCK_D, BLOCK_R·BLOCK_T] tile (0 outside [0, L)); a scalar 0 when not USED."""
    if USED:
        pos, mask = _shifted(t, SHIFT, RUNS_AWAY)
        if UNIT_SX:
            offs = pos
        else:
            offs = pos.to(tl.int64) * sx_l
        x = tl.load(x_row + offs[None, :], mask=mask_d[:, None] & mask[None, :], other=0.0).to(ACC)
    else:
        x = tl.zeros([1, 1], dtype=ACC)
    return x


@triton.jit
def _taps(w_ptr, k, d, mask_d, D, W: tl.constexpr, ACC: tl.constexpr):
    """The taps v_j = weight[k, d, W-1-j] by lag j = 0..3 as (BLOCK_D, 1) columns; 0 for j >= W."""
    w_row = w_ptr + (k * D + d) * W
    v0 = tl.load(w_row + (W - 1), mask=mask_d, other=0.0).to(ACC)[:, None]
    v1 = tl.load(w_row + (W - 2), mask=mask_d, other=0.0).to(ACC)[:, None]
    v2 = tl.zeros([1, 1], dtype=ACC)
    v3 = tl.zeros([1, 1], dtype=ACC)
    if W > 2:
        v2 = tl.load(w_row + (W - 3), mask=mask_d, other=0.0).to(ACC)[:, None]
    if W > 3:
        v3 = tl.load(w_row + (W - 4), mask=mask_d, other=0.0).to(ACC)[:, None]
    return v0, v1, v2, v3


@triton.jit
def _lag_sum(bias, v0, v1, v2, v3, a0, a1, a2, a3, W: tl.constexpr):
    """bias + Σ_{j<W} v_j·a_j (a_j the values at lag j)."""
    acc = bias + v0 * a0 + v1 * a1
    if W > 2:
        acc += v2 * a2
    if W > 3:
        acc += v3 * a3
    return acc


@triton.jit
def _channel_bias(bias_ptr, k, d, mask_d, D, HAS_BIAS: tl.constexpr, ACC: tl.constexpr, BLOCK_D: tl.constexpr):
    """Order k's bias for channels d as a (BLOCK_D, 1) column; zeros without a bias."""
    if HAS_BIAS:
        bias = tl.load(bias_ptr + k * D + d, mask=mask_d, other=0.0).to(ACC)[:, None]
    else:
        bias = tl.zeros([BLOCK_D, 1], dtype=ACC)
    return bias


@triton.jit
def _grad_pre(g_row, t, mask_d, pre, SHIFT: tl.constexpr, USED: tl.constexpr, RUNS_AWAY: tl.constexpr,
              SILU: tl.constexpr, ACC: tl.constexpr):
    """Gradient w.r.t. the pre-activation ``pre`` at steps s + SHIFT (0 outside [0, L); a scalar 0 when not
    USED)."""
    if USED:
        pos, mask = _shifted(t, SHIFT, RUNS_AWAY)
        g = tl.load(g_row + pos[None, :], mask=mask_d[:, None] & mask[None, :], other=0.0).to(ACC)
        if SILU:
            sig = 1.0 / (1.0 + tl.exp(-pre))
            g = g * sig * (1.0 + pre * (1.0 - sig))
    else:
        g = tl.zeros([1, 1], dtype=ACC)
    return g


@triton.jit
def _order_conv1d_forward_kernel(x_ptr, w_ptr, bias_ptr, geo_ptr, out_ptr, K, D, L, sx_b, sx_k, sx_d, sx_l,
                                 W: tl.constexpr, HAS_BIAS: tl.constexpr, SILU: tl.constexpr, ACC: tl.constexpr,
                                 BLOCK_D: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_T: tl.constexpr,
                                 TILES: tl.constexpr, RUNS_AWAY: tl.constexpr, UNIT_SX: tl.constexpr):
    """Walks TILES consecutive tiles with the taps and bias loaded once."""
    pid_bk = tl.program_id(2)
    b, k, geo = _order(geo_ptr, K, pid_bk)
    d, mask_d = _channels(D, BLOCK_D)
    x_row = x_ptr + b * sx_b + k.to(tl.int64) * sx_k + d[:, None] * sx_d
    out_row = out_ptr + (pid_bk.to(tl.int64) * D + d[:, None]) * L
    v0, v1, v2, v3 = _taps(w_ptr, k, d, mask_d, D, W, ACC)
    bias = _channel_bias(bias_ptr, k, d, mask_d, D, HAS_BIAS, ACC, BLOCK_D)
    for i in range(TILES):
        t = _tile(tl.program_id(0) * TILES + i, geo, BLOCK_R, BLOCK_T, RUNS_AWAY, False)
        x0 = _x_at(x_row, t, mask_d, sx_l, 0, True, RUNS_AWAY, UNIT_SX, ACC)
        x1 = _x_at(x_row, t, mask_d, sx_l, -1, True, RUNS_AWAY, UNIT_SX, ACC)
        x2 = _x_at(x_row, t, mask_d, sx_l, -2, W > 2, RUNS_AWAY, UNIT_SX, ACC)
        x3 = _x_at(x_row, t, mask_d, sx_l, -3, W > 3, RUNS_AWAY, UNIT_SX, ACC)
        acc = _lag_sum(bias, v0, v1, v2, v3, x0, x1, x2, x3, W)
        if SILU:
            acc = acc / (1.0 + tl.exp(-acc))
        pos, mask = _shifted(t, 0, RUNS_AWAY)
        tl.store(out_row + pos[None, :], acc.to(out_ptr.dtype.element_ty), mask=mask_d[:, None] & mask[None, :])


@triton.jit
def _backward_tile(g_row, x_row, dx_row, v0, v1, v2, v3, bias, t, mask_d, sx_l, W: tl.constexpr,
                   SILU: tl.constexpr, ACC: tl.constexpr, RUNS_AWAY: tl.constexpr, UNIT_SX: tl.constexpr):
    """dx of tile ``t``, stored; returns gp(s) and x(s - j) for j = 0..3 (scalar 0 for j >= W),
    [BLOCK_D, BLOCK_R·BLOCK_T]."""
    xm3 = _x_at(x_row, t, mask_d, sx_l, -3, W > 3, RUNS_AWAY, UNIT_SX, ACC)
    xm2 = _x_at(x_row, t, mask_d, sx_l, -2, W > 2, RUNS_AWAY, UNIT_SX, ACC)
    xm1 = _x_at(x_row, t, mask_d, sx_l, -1, True, RUNS_AWAY, UNIT_SX, ACC)
    x0 = _x_at(x_row, t, mask_d, sx_l, 0, True, RUNS_AWAY, UNIT_SX, ACC)
    xp1 = _x_at(x_row, t, mask_d, sx_l, 1, True, RUNS_AWAY, UNIT_SX, ACC)
    xp2 = _x_at(x_row, t, mask_d, sx_l, 2, W > 2, RUNS_AWAY, UNIT_SX, ACC)
    xp3 = _x_at(x_row, t, mask_d, sx_l, 3, W > 3, RUNS_AWAY, UNIT_SX, ACC)
    # gp(s + i) from pre(s + i) = bias + Σ_j v_j x(s + i - j)
    gp0 = _grad_pre(g_row, t, mask_d, _lag_sum(bias, v0, v1, v2, v3, x0, xm1, xm2, xm3, W), 0, True, RUNS_AWAY,
                    SILU, ACC)
    gp1 = _grad_pre(g_row, t, mask_d, _lag_sum(bias, v0, v1, v2, v3, xp1, x0, xm1, xm2, W), 1, True, RUNS_AWAY,
                    SILU, ACC)
    gp2 = _grad_pre(g_row, t, mask_d, _lag_sum(bias, v0, v1, v2, v3, xp2, xp1, x0, xm1, W), 2, W > 2, RUNS_AWAY,
                    SILU, ACC)
    gp3 = _grad_pre(g_row, t, mask_d, _lag_sum(bias, v0, v1, v2, v3, xp3, xp2, xp1, x0, W), 3, W > 3, RUNS_AWAY,
                    SILU, ACC)
    dx = _lag_sum(0.0, v0, v1, v2, v3, gp0, gp1, gp2, gp3, W)
    pos, mask = _shifted(t, 0, RUNS_AWAY)
    tl.store(dx_row + pos[None, :], dx.to(dx_row.dtype.element_ty), mask=mask_d[:, None] & mask[None, :])
    return gp0, x0, xm1, xm2, xm3


@triton.jit
def _order_conv1d_backward_kernel(g_ptr, x_ptr, w_ptr, bias_ptr, geo_ptr, dx_ptr, dw_part_ptr, db_part_ptr,
                                  K, D, L, sx_b, sx_k, sx_d, sx_l,
                                  W: tl.constexpr, HAS_BIAS: tl.constexpr, SILU: tl.constexpr,
                                  ACC: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_R: tl.constexpr,
                                  BLOCK_T: tl.constexpr, TILES: tl.constexpr, RUNS_AWAY: tl.constexpr,
                                  UNIT_SX: tl.constexpr):
    """Walks TILES consecutive tiles; the weight and bias gradient terms are summed elementwise over them and
    reduced over the tile's steps once at the end."""
    pid_t, pid_bk = tl.program_id(0), tl.program_id(2)
    b, k, geo = _order(geo_ptr, K, pid_bk)
    d, mask_d = _channels(D, BLOCK_D)
    x_row = x_ptr + b * sx_b + k.to(tl.int64) * sx_k + d[:, None] * sx_d
    row = (pid_bk.to(tl.int64) * D + d[:, None]) * L
    v0, v1, v2, v3 = _taps(w_ptr, k, d, mask_d, D, W, ACC)
    bias = _channel_bias(bias_ptr, k, d, mask_d, D, HAS_BIAS, ACC, BLOCK_D)
    db = tl.zeros([BLOCK_D, BLOCK_R * BLOCK_T], dtype=ACC)
    dw0 = tl.zeros([BLOCK_D, BLOCK_R * BLOCK_T], dtype=ACC)
    dw1 = tl.zeros([BLOCK_D, BLOCK_R * BLOCK_T], dtype=ACC)
    dw2 = tl.zeros([BLOCK_D, BLOCK_R * BLOCK_T], dtype=ACC)
    dw3 = tl.zeros([BLOCK_D, BLOCK_R * BLOCK_T], dtype=ACC)
    for i in range(TILES):
        t = _tile(pid_t * TILES + i, geo, BLOCK_R, BLOCK_T, RUNS_AWAY, True)
        gp, x0, xm1, xm2, xm3 = _backward_tile(g_ptr + row, x_row, dx_ptr + row, v0, v1, v2, v3, bias, t, mask_d,
                                               sx_l, W, SILU, ACC, RUNS_AWAY, UNIT_SX)
        db += gp
        dw0 += gp * x0
        dw1 += gp * xm1
        if W > 2:
            dw2 += gp * xm2
        if W > 3:
            dw3 += gp * xm3
    # dweight[W-1-j] = Σ_s gp(s)·x(s-j), dbias = Σ_s gp(s): one write per program
    channel = ((b * tl.num_programs(0) + pid_t) * K + k) * D + d
    part = dw_part_ptr + channel * W + (W - 1)
    tl.store(db_part_ptr + channel, tl.sum(db, axis=1), mask=mask_d)
    tl.store(part, tl.sum(dw0, axis=1), mask=mask_d)
    tl.store(part - 1, tl.sum(dw1, axis=1), mask=mask_d)
    if W > 2:
        tl.store(part - 2, tl.sum(dw2, axis=1), mask=mask_d)
    if W > 3:
        tl.store(part - 3, tl.sum(dw3, axis=1), mask=mask_d)


def _launch(x: torch.Tensor, geometry: torch.Tensor, width: int, step: str) -> tuple[tuple, dict]:
    """Grid and launch constants: tiles of BLOCK_T steps of BLOCK_R runs, BLOCK_D channels, TILES consecutive
    tiles per program (the grid covers the order with the most tiles), how many runs away a shifted step can
    fall, and whether x's positions are unit-strided."""
    rows = geometry_rows(geometry)
    b, k, d, _length = x.shape
    longest, shortest = max(r[2] for r in rows), min(r[2] for r in rows)
    block_r, block_t, elements, per_program = (_INTERPRETER_LAUNCH if x.device.type == "cpu"
                                               else _GPU_LAUNCH[step])
    block_r = min(block_r, triton.next_power_of_2(max(r[0] * r[1] for r in rows)))
    block_t = min(block_t, triton.next_power_of_2(longest))
    block_d = max(1, min(triton.next_power_of_2(d), elements // (block_r * block_t)))
    tiles = max(triton.cdiv(r[0] * r[1], block_r) * triton.cdiv(r[2], block_t) for r in rows)
    meta = dict(W=width, BLOCK_D=block_d, BLOCK_R=block_r, BLOCK_T=block_t, TILES=per_program,
                RUNS_AWAY=width - 1 if shortest < width - 1 else 1, UNIT_SX=x.stride(3) == 1,
                ACC=tl_dtype(_checks.accumulation_dtype(x)))
    if x.device.type != "cpu" and step == "backward":
        meta["maxnreg"] = 168  # ptxas otherwise caps sm_90 at 128 and spills 16 B per thread
    return (triton.cdiv(tiles, per_program), triton.cdiv(d, block_d), b * k), meta


def forward(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, geometry: torch.Tensor,
            silu: bool) -> torch.Tensor:
    """x (B, K, D, L) strided, weight (K, D, W), bias (K, D) or None, geometry (K, 7) -> (B, K, D, L)."""
    b, k, d, length = x.shape
    out = _memory.empty(x.shape, dtype=x.dtype, device=x.device)
    if out.numel() == 0:
        return out
    grid, meta = _launch(x, geometry, weight.shape[2], "forward")
    _order_conv1d_forward_kernel[grid](x, weight, bias if bias is not None else weight, geometry, out, k, d, length,
                                       *x.stride(), HAS_BIAS=bias is not None, SILU=silu, **meta)
    return out


def backward(grad: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
             geometry: torch.Tensor, silu: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """grad (B, K, D, L) contiguous -> dx (B, K, D, L), dweight (K, D, W), dbias (K, D); the last two in
    float32 (float64 for float64 inputs)."""
    b, k, d, length = x.shape
    width = weight.shape[2]
    acc_torch = _checks.accumulation_dtype(x)
    dx = _memory.empty(x.shape, dtype=x.dtype, device=x.device)
    if dx.numel() == 0:
        return dx, torch.zeros(weight.shape, dtype=acc_torch, device=x.device), \
            torch.zeros(weight.shape[:2], dtype=acc_torch, device=x.device)
    grid, meta = _launch(x, geometry, width, "backward")
    dw_part = _memory.empty((b * grid[0], k, d, width), dtype=acc_torch, device=x.device)
    db_part = _memory.empty((b * grid[0], k, d), dtype=acc_torch, device=x.device)
    _order_conv1d_backward_kernel[grid](grad, x, weight, bias if bias is not None else weight, geometry, dx,
                                        dw_part, db_part, k, d, length, *x.stride(), HAS_BIAS=bias is not None,
                                        SILU=silu, **meta)
    return dx, dw_part.sum(dim=0), db_part.sum(dim=0)
