"""Triton kernels: read patches straight from the volume, write them straight back.

One program moves one (b, m) patch, a block of its rows (c, i, j) times its pw
contiguous voxels. No patchified copy of the volume is ever made. All volume
offsets are int64.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from anatokernels import _memory


@triton.jit
def _patch_offsets(idx_ptr, pid_bm, pid_r, M, C, GH, GW, PD: tl.constexpr, PH: tl.constexpr, PW,
                   s_b, s_c, s_d, s_h, s_w, BLOCK_R: tl.constexpr, BLOCK_W: tl.constexpr):
    """Volume offsets, patch-buffer offsets and mask of one (rows x voxels) tile."""
    b = (pid_bm // M).to(tl.int64)
    patch_id = tl.load(idx_ptr + pid_bm).to(tl.int64)
    gw = patch_id % GW
    gh = (patch_id // GW) % GH
    gd = patch_id // (GW * GH)
    rows = pid_r.to(tl.int64) * BLOCK_R + tl.arange(0, BLOCK_R).to(tl.int64)
    j = rows % PH
    i = (rows // PH) % PD
    c = rows // (PH * PD)
    k = tl.arange(0, BLOCK_W).to(tl.int64)
    row_off = b * s_b + c * s_c + (gd * PD + i) * s_d + (gh * PH + j) * s_h
    vol = row_off[:, None] + (gw * PW + k)[None, :] * s_w
    n_rows = C * PD * PH
    buf = pid_bm.to(tl.int64) * (n_rows * PW) + rows[:, None] * PW + k[None, :]
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
        tl.atomic_add(out_ptr + vol, values.to(out_ptr.dtype.element_ty), mask=mask)
    else:
        tl.store(out_ptr + vol, values.to(out_ptr.dtype.element_ty), mask=mask)


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
