"""Triton kernels: read patches straight from the volume, write them straight back.

One program moves one (b, m) patch, a block of its rows (c, i, j) times its pw
contiguous voxels. No patchified copy of the volume is ever made. All volume
offsets are int64.

The gather's backward (:func:`scatter_sum`) runs over the whole volume instead:
one program per (b, grid patch g) writes that patch's gradient, the sum of the
gradient rows m with index[b, m] == g (none: 0). The rows of each g are found
through an inverse map built on the device (ids sorted per sample, then
``searchsorted``): no zeroed buffer, no atomics, a deterministic sum.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from anatokernels import _checks, _memory
from anatokernels._triton_common import tl_dtype


@triton.jit
def _patch_offsets(idx_ptr, pid_bm, pid_r, M, C, GH, GW, PD: tl.constexpr, PH: tl.constexpr, PW,
                   s_b, s_c, s_d, s_h, s_w, BLOCK_R: tl.constexpr, BLOCK_W: tl.constexpr):
    """Volume offsets, patch-buffer offsets and mask of one (rows x voxels) tile."""
    # index math in int32 (ids < G, rows < C·pd·ph, coordinates < 2^31), offsets in int64
    b = (pid_bm // M).to(tl.int64)
    patch_id = tl.load(idx_ptr + pid_bm).to(tl.int32)
    gw = patch_id % GW
    gh = (patch_id // GW) % GH
    gd = patch_id // (GW * GH)
    rows = pid_r * BLOCK_R + tl.arange(0, BLOCK_R)
    j = rows % PH  # PD, PH are constexpr: multiply-shift, no division
    i = (rows // PH) % PD
    c = rows // (PH * PD)
    k = tl.arange(0, BLOCK_W)
    row_off = (b * s_b + c.to(tl.int64) * s_c + (gd * PD + i).to(tl.int64) * s_d
               + (gh * PH + j).to(tl.int64) * s_h)
    vol = row_off[:, None] + (gw * PW + k).to(tl.int64)[None, :] * s_w
    n_rows = C * PD * PH
    buf = pid_bm.to(tl.int64) * (n_rows * PW) + (rows[:, None] * PW + k[None, :]).to(tl.int64)
    mask = (rows < n_rows)[:, None] & (k < PW)[None, :]
    return vol, buf, mask


@triton.jit
def _masked_patch_gather_kernel(x_ptr, idx_ptr, out_ptr, M, C, GH, GW, PW,
                                s_b, s_c, s_d, s_h, s_w,
                                PD: tl.constexpr, PH: tl.constexpr,
                                BLOCK_R: tl.constexpr, BLOCK_W: tl.constexpr):
    vol, buf, mask = _patch_offsets(idx_ptr, tl.program_id(0), tl.program_id(1), M, C, GH, GW, PD, PH, PW,
                                    s_b, s_c, s_d, s_h, s_w, BLOCK_R, BLOCK_W)
    tl.store(out_ptr + buf, tl.load(x_ptr + vol, mask=mask), mask=mask)


@triton.jit
def _masked_patch_scatter_kernel(p_ptr, idx_ptr, out_ptr, M, C, GH, GW, PW,
                                 s_b, s_c, s_d, s_h, s_w,
                                 PD: tl.constexpr, PH: tl.constexpr, ACCUMULATE: tl.constexpr,
                                 BLOCK_R: tl.constexpr, BLOCK_W: tl.constexpr):
    vol, buf, mask = _patch_offsets(idx_ptr, tl.program_id(0), tl.program_id(1), M, C, GH, GW, PD, PH, PW,
                                    s_b, s_c, s_d, s_h, s_w, BLOCK_R, BLOCK_W)
    values = tl.load(p_ptr + buf, mask=mask)
    if ACCUMULATE:
        tl.atomic_add(out_ptr + vol, values.to(out_ptr.dtype.element_ty), mask=mask, sem="relaxed")
    else:
        tl.store(out_ptr + vol, values.to(out_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _masked_patch_scatter_sum_kernel(p_ptr, order_ptr, grid_ids_ptr, first_ptr, last_ptr, out_ptr, M, G, C, GH,
                                     GW, PW,
                                     s_b, s_c, s_d, s_h, s_w,
                                     PD: tl.constexpr, PH: tl.constexpr, ACC: tl.constexpr,
                                     BLOCK_R: tl.constexpr, BLOCK_W: tl.constexpr):
    pid_bg = tl.program_id(0)  # (b, g): grid_ids[b, g] = g
    b = pid_bg // G
    vol, buf, mask = _patch_offsets(grid_ids_ptr, pid_bg, tl.program_id(1), G, C, GH, GW, PD, PH,
                                    PW, s_b, s_c, s_d, s_h, s_w, BLOCK_R, BLOCK_W)
    # rows m of sample b holding patch g: order[b, first[b, g]:last[b, g]]
    first = tl.load(first_ptr + pid_bg).to(tl.int32)
    last = tl.load(last_ptr + pid_bg).to(tl.int32)
    within = buf - pid_bg.to(tl.int64) * (C * PD * PH * PW)  # offset inside one patch row of p
    acc = tl.zeros([BLOCK_R, BLOCK_W], dtype=ACC)
    for r in range(first, last):
        m = tl.load(order_ptr + b.to(tl.int64) * M + r)
        acc += tl.load(p_ptr + (b.to(tl.int64) * M + m) * (C * PD * PH * PW) + within, mask=mask).to(ACC)
    tl.store(out_ptr + vol, acc.to(out_ptr.dtype.element_ty), mask=mask)


def _launch_shape(n_rows: int, pw: int, interpreted: bool) -> tuple[int, int]:
    block_w = triton.next_power_of_2(pw)
    # Interpreted programs are slow to start: fewer, larger tiles. On a GPU ~2K elements per program.
    target = 1 << 16 if interpreted else 2048
    block_r = max(1, min(triton.next_power_of_2(n_rows), target // block_w))
    return block_r, block_w


def gather(x: torch.Tensor, index: torch.Tensor, patch: tuple[int, int, int]) -> torch.Tensor:
    """(B, C, D, H, W) strided, (B, M) int64 -> (B, M, C·pd·ph·pw)."""
    b, c, d, h, w = x.shape
    pd, ph, pw = patch
    m = index.shape[1]
    out = _memory.empty((b, m, c * pd * ph * pw), dtype=x.dtype, device=x.device)
    if out.numel() == 0:
        return out
    block_r, block_w = _launch_shape(c * pd * ph, pw, x.device.type == "cpu")
    grid = (b * m, triton.cdiv(c * pd * ph, block_r))
    _masked_patch_gather_kernel[grid](x, index.contiguous(), out, m, c, h // ph, w // pw, pw, *x.stride(),
                                      PD=pd, PH=ph, BLOCK_R=block_r, BLOCK_W=block_w)
    return out


def scatter(patches: torch.Tensor, index: torch.Tensor, patch: tuple[int, int, int], out: torch.Tensor,
            accumulate: bool) -> None:
    """Write (or add, when ``accumulate``) (B, M, P) patches into ``out`` (B, C, D, H, W) in place."""
    b, c, d, h, w = out.shape
    pd, ph, pw = patch
    m = index.shape[1]
    if patches.numel() == 0:
        return
    block_r, block_w = _launch_shape(c * pd * ph, pw, out.device.type == "cpu")
    grid = (b * m, triton.cdiv(c * pd * ph, block_r))
    _masked_patch_scatter_kernel[grid](patches.contiguous(), index.contiguous(), out, m, c, h // ph, w // pw, pw,
                                       *out.stride(), PD=pd, PH=ph, ACCUMULATE=accumulate,
                                       BLOCK_R=block_r, BLOCK_W=block_w)


def scatter_sum(patches: torch.Tensor, index: torch.Tensor, patch: tuple[int, int, int], shape, dtype) -> torch.Tensor:
    """(B, M, P) patches summed into a (B, C, D, H, W) volume of ``dtype`` (0 where no patch), one pass
    over the volume; duplicate ids in ``index`` add up."""
    b, c, d, h, w = shape
    pd, ph, pw = patch
    m = index.shape[1]
    n_patches = (d // pd) * (h // ph) * (w // pw)
    out = _memory.empty(shape, dtype=dtype, device=patches.device)
    if out.numel() == 0:
        return out
    ids, order = index.sort(dim=1, stable=True)
    grid_ids = torch.arange(n_patches, device=index.device).expand(b, n_patches).contiguous()
    first = torch.searchsorted(ids, grid_ids)
    last = torch.searchsorted(ids, grid_ids, right=True)
    block_r, block_w = _launch_shape(c * pd * ph, pw, patches.device.type == "cpu")
    grid = (b * n_patches, triton.cdiv(c * pd * ph, block_r))
    _masked_patch_scatter_sum_kernel[grid](patches.contiguous(), order.contiguous(), grid_ids, first, last, out,
                                           max(m, 1), n_patches, c, h // ph, w // pw, pw, *out.stride(), PD=pd, PH=ph,
                                           ACC=tl_dtype(_checks.accumulation_dtype(patches)),
                                           BLOCK_R=block_r, BLOCK_W=block_w)
    return out
