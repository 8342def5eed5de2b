"""Triton kernels for the order-aware causal depthwise conv, forward and backward.

One program covers a (BLOCK_D channels x BLOCK_L native positions) tile of one
(b, k). It walks *native* positions, so stores and most loads are coalesced
for every order; the scan step of a position and the native positions of its
neighbouring steps come from the order's geometry (see
:mod:`anatokernels.scan_order`), computed arithmetically: no permuted copy.

The backward is one fused kernel: the gradient at step u needs the
pre-activation gradient at steps u .. u+W-1, which it recomputes from x
(W·W gathers, cached). Weight and bias gradients are summed per program into
a small partial buffer and reduced with ``torch.sum`` (deterministic).
Offsets are int64; the position math is int32 and division-free per element
(one division per program for the tile's first position, see
:mod:`anatokernels._triton_common`). Accumulation is fp32 (fp64 for fp64 inputs).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from anatokernels import _checks, _memory
from anatokernels._triton_common import order_geometry, position_digits, reciprocal, step_positions, tl_dtype


@triton.jit
def _x_at(x_row, c0, c1, c2, delta, mask_d, mask_l, n0, n1, n2, st0, st1, st2, rev, inv1, inv2, sx_l,
          ACC: tl.constexpr):
    """x at scan steps t + delta (0 outside [0, L)), t the steps whose digits are (c0, c1, c2):
    a [BLOCK_D, BLOCK_L] tile."""
    q, valid = step_positions(c0, c1, c2, delta, n0, n1, n2, st0, st1, st2, rev, inv1, inv2)
    return tl.load(x_row + q.to(tl.int64)[None, :] * sx_l, mask=mask_d[:, None] & (mask_l & valid)[None, :],
                   other=0.0).to(ACC)


@triton.jit
def _pre_activation(x_row, w_row, bias, c0, c1, c2, delta, mask_d, mask_l, n0, n1, n2, st0, st1, st2, rev,
                    inv1, inv2, sx_l, W: tl.constexpr, ACC: tl.constexpr):
    """bias + sum_m w[m] * x[t + delta - (W-1) + m]."""
    acc = bias + tl.zeros([1, 1], dtype=ACC)
    for m in tl.static_range(0, W):
        wm = tl.load(w_row + m, mask=mask_d, other=0.0).to(ACC)
        acc += wm[:, None] * _x_at(x_row, c0, c1, c2, delta - (W - 1) + m, mask_d, mask_l, n0, n1, n2, st0, st1,
                                   st2, rev, inv1, inv2, sx_l, ACC)
    return acc


@triton.jit
def _grad_pre(g_row, x_row, w_row, bias, c0, c1, c2, delta, mask_d, mask_l, n0, n1, n2, st0, st1, st2, rev,
              inv1, inv2, sx_l, W: tl.constexpr, SILU: tl.constexpr, ACC: tl.constexpr):
    """Gradient w.r.t. the pre-activation at scan steps t + delta (0 outside [0, L))."""
    q, valid = step_positions(c0, c1, c2, delta, n0, n1, n2, st0, st1, st2, rev, inv1, inv2)
    g = tl.load(g_row + q.to(tl.int64)[None, :], mask=mask_d[:, None] & (mask_l & valid)[None, :],
                other=0.0).to(ACC)
    if SILU:
        pre = _pre_activation(x_row, w_row, bias, c0, c1, c2, delta, mask_d, mask_l, n0, n1, n2, st0, st1, st2,
                              rev, inv1, inv2, sx_l, W, ACC)
        sig = 1.0 / (1.0 + tl.exp(-pre))
        g = g * sig * (1.0 + pre * (1.0 - sig))
    return g


@triton.jit
def _program_tile(K, D, L, BLOCK_D: tl.constexpr, BLOCK_L: tl.constexpr):
    """Grid (L blocks, D blocks, Bt·K): this program's flat (b, k) index, b, k, its first native position
    p0 (int32), the offsets j (BLOCK_L,) of its positions with the mask p0 + j < L, channels d (BLOCK_D,)
    with d < D; b and d int64."""
    pid_l, pid_d, pid_bk = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    p0 = pid_l * BLOCK_L
    j = tl.arange(0, BLOCK_L)
    d = pid_d.to(tl.int64) * BLOCK_D + tl.arange(0, BLOCK_D).to(tl.int64)
    return pid_bk, (pid_bk // K).to(tl.int64), pid_bk % K, p0, j, p0 + j < L, d, d < D


@triton.jit
def _channel_bias(bias_ptr, k, d, mask_d, D, HAS_BIAS: tl.constexpr, ACC: tl.constexpr, BLOCK_D: tl.constexpr):
    """Order k's bias for channels d as a (BLOCK_D, 1) column; zeros without a bias."""
    if HAS_BIAS:
        bias = tl.load(bias_ptr + k * D + d, mask=mask_d, other=0.0).to(ACC)[:, None]
    else:
        bias = tl.zeros([BLOCK_D, 1], dtype=ACC)
    return bias


@triton.jit
def _order_conv1d_forward_kernel(x_ptr, w_ptr, bias_ptr, geo_ptr, out_ptr, K, D, L,
                                 sx_b, sx_k, sx_d, sx_l,
                                 W: tl.constexpr, HAS_BIAS: tl.constexpr, SILU: tl.constexpr, ACC: tl.constexpr,
                                 BLOCK_D: tl.constexpr, BLOCK_L: tl.constexpr):
    pid_bk, b, k, p0, j, mask_l, d, mask_d = _program_tile(K, D, L, BLOCK_D, BLOCK_L)
    n0, n1, n2, st0, st1, st2, rev = order_geometry(geo_ptr, k)
    inv1, inv2 = reciprocal(n1), reciprocal(n2)
    c0, c1, c2, _t = position_digits(p0, j, n0, n1, n2, st0, st1, st2, rev, L)
    x_row = x_ptr + b * sx_b + k.to(tl.int64) * sx_k + d[:, None] * sx_d
    w_row = w_ptr + (k * D + d) * W
    bias = _channel_bias(bias_ptr, k, d, mask_d, D, HAS_BIAS, ACC, BLOCK_D)
    acc = _pre_activation(x_row, w_row, bias, c0, c1, c2, 0, mask_d, mask_l, n0, n1, n2, st0, st1, st2, rev,
                          inv1, inv2, sx_l, W, ACC)
    if SILU:
        acc = acc / (1.0 + tl.exp(-acc))
    out = out_ptr + (pid_bk.to(tl.int64) * D + d[:, None]) * L + (p0 + j).to(tl.int64)[None, :]
    tl.store(out, acc.to(out_ptr.dtype.element_ty), mask=mask_d[:, None] & mask_l[None, :])


@triton.jit
def _order_conv1d_backward_kernel(g_ptr, x_ptr, w_ptr, bias_ptr, geo_ptr, dx_ptr, dw_part_ptr, db_part_ptr,
                                  K, D, L, sx_b, sx_k, sx_d, sx_l,
                                  W: tl.constexpr, HAS_BIAS: tl.constexpr, SILU: tl.constexpr,
                                  ACC: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_L: tl.constexpr):
    pid_bk, b, k, p0, j, mask_l, d, mask_d = _program_tile(K, D, L, BLOCK_D, BLOCK_L)
    n0, n1, n2, st0, st1, st2, rev = order_geometry(geo_ptr, k)
    inv1, inv2 = reciprocal(n1), reciprocal(n2)
    c0, c1, c2, _t = position_digits(p0, j, n0, n1, n2, st0, st1, st2, rev, L)
    x_row = x_ptr + b * sx_b + k.to(tl.int64) * sx_k + d[:, None] * sx_d
    g_row = g_ptr + (pid_bk.to(tl.int64) * D + d[:, None]) * L
    w_row = w_ptr + (k * D + d) * W
    bias = _channel_bias(bias_ptr, k, d, mask_d, D, HAS_BIAS, ACC, BLOCK_D)
    # dx[u] = sum_i w[W-1-i] * gpre[u+i]
    gp0 = _grad_pre(g_row, x_row, w_row, bias, c0, c1, c2, 0, mask_d, mask_l, n0, n1, n2, st0, st1, st2, rev,
                    inv1, inv2, sx_l, W, SILU, ACC)
    dx = tl.load(w_row + (W - 1), mask=mask_d, other=0.0).to(ACC)[:, None] * gp0
    for i in tl.static_range(1, W):
        gpi = _grad_pre(g_row, x_row, w_row, bias, c0, c1, c2, i, mask_d, mask_l, n0, n1, n2, st0, st1, st2, rev,
                        inv1, inv2, sx_l, W, SILU, ACC)
        dx += tl.load(w_row + (W - 1 - i), mask=mask_d, other=0.0).to(ACC)[:, None] * gpi
    tile_mask = mask_d[:, None] & mask_l[None, :]
    tl.store(dx_ptr + (pid_bk.to(tl.int64) * D + d[:, None]) * L + (p0 + j).to(tl.int64)[None, :],
             dx.to(dx_ptr.dtype.element_ty), mask=tile_mask)
    # partial sums over this tile's positions: dw[m] += gpre[t] * x[t-(W-1)+m], db += gpre[t]
    part = (b * tl.num_programs(0) + tl.program_id(0)) * K + k
    tl.store(db_part_ptr + part * D + d, tl.sum(gp0, axis=1), mask=mask_d)
    for m in tl.static_range(W):
        xm = _x_at(x_row, c0, c1, c2, m - (W - 1), mask_d, mask_l, n0, n1, n2, st0, st1, st2, rev, inv1, inv2,
                   sx_l, ACC)
        tl.store(dw_part_ptr + (part * D + d) * W + m, tl.sum(gp0 * xm, axis=1), mask=mask_d)


def _tiles(d: int, length: int, interpreted: bool) -> tuple[int, int]:
    # Interpreted programs are slow to start: few, large tiles. On a GPU ~2K elements per program.
    max_l, elements = (4096, 1 << 16) if interpreted else (512, 2048)
    block_l = min(max_l, triton.next_power_of_2(length))
    block_d = max(1, min(triton.next_power_of_2(d), elements // block_l))
    return block_d, block_l


def forward(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, geometry: torch.Tensor,
            silu: bool) -> torch.Tensor:
    """x (B, K, D, L) strided, weight (K, D, W), bias (K, D) or None, geometry (K, 7) -> (B, K, D, L)."""
    b, k, d, length = x.shape
    out = _memory.empty(x.shape, dtype=x.dtype, device=x.device)
    if out.numel() == 0:
        return out
    block_d, block_l = _tiles(d, length, x.device.type == "cpu")
    grid = (triton.cdiv(length, block_l), triton.cdiv(d, block_d), b * k)
    _order_conv1d_forward_kernel[grid](x, weight, bias if bias is not None else weight, geometry, out, k, d, length,
                                       *x.stride(), W=weight.shape[2], HAS_BIAS=bias is not None, SILU=silu,
                                       ACC=tl_dtype(_checks.accumulation_dtype(x)), BLOCK_D=block_d, BLOCK_L=block_l)
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
    block_d, block_l = _tiles(d, length, x.device.type == "cpu")
    grid = (triton.cdiv(length, block_l), triton.cdiv(d, block_d), b * k)
    dw_part = _memory.empty((b * grid[0], k, d, width), dtype=acc_torch, device=x.device)
    db_part = _memory.empty((b * grid[0], k, d), dtype=acc_torch, device=x.device)
    _order_conv1d_backward_kernel[grid](grad, x, weight, bias if bias is not None else weight, geometry, dx,
                                        dw_part, db_part, k, d, length, *x.stride(), W=width,
                                        HAS_BIAS=bias is not None, SILU=silu, ACC=tl_dtype(acc_torch),
                                        BLOCK_D=block_d, BLOCK_L=block_l)
    return dx, dw_part.sum(dim=0), db_part.sum(dim=0)
