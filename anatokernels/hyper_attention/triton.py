"""Triton kernels for the absorbed hyper cross-attention (see :mod:`anatokernels.hyper_attention.function`).

Forward, one program per (block of L rows, sample b):
    S2 = x·A + a (+ log2 e·bias)   loop over C in BLOCK_C slices, tl.dot, fp32 accumulator (BLOCK_L, HP·MP)
    P = softmax per head           exp2 on the registers, reshaped (BLOCK_L, HP, MP); a head without keys gives 0
    out = P·Bv + b_o               loop over C in BLOCK_C slices, each slice stored once
x is read once and out written once; q, the scores and o never reach memory. Only the (BLOCK_L, HP·MP) score tile
stays in registers, so C up to 512 (and beyond) only lengthens the two loops. A and a arrive in log2 units
(``SCORE_UNIT``: absorbed with scale·log2 e, so S2 = S·log2 e costs nothing), exp2 is one ``ex2.approx.ftz`` and each
(row, head) takes one reciprocal instead of a division per score. A logit bias is read per tile (a head-shared one as
(BLOCK_L, MP), broadcast over the heads in registers). Static figures at B=2, L=35,840, C=64, M=12, H=4, bf16
(warp-instructions per output element, sm_90 / sm_80): 1.10 / 1.35 before these changes, 0.93 / 1.21 after, 0.69 /
0.75 with one C slice for C ≤ 64 (``_config``); with a head-shared bias 0.87 / 0.91 (2.29 / 2.22 when it was read per
column, before the slice change). Speed against SDPA is unmeasured (no GPU here).

Backward, one program per (split of L, sample b), looping over STEPS blocks of rows:
    recompute S2 and P; dP = dout·Bvᵀ; dS = P ⊙ (dP − Σ_head P ⊙ dP); dS2 = dS·ln 2
    dx = dS2·Aᵀ (stored); da += Σ_rows dS2 (registers)
    dA += xᵀ·dS2, dBv += Pᵀ·dout, db_o += Σ_rows dout   (per-program partial sums)
    dbias = bias_scale·dS (summed over the heads for a shared bias, stored per tile);
    dscale += Σ dS ⊙ bias over finite entries (registers, per-program partial sums)
The per-sample reductions over L use partial sums: each program adds into its own fp32 slice (B·n_split, ...) and
torch sums the slices afterwards. This is deterministic, has no contention, and the scratch is O(B·n_split·C·H·M),
independent of L (n_split ≈ 2 programs per SM in all). The alternative, fp32 atomics into one (B, C, H·M) buffer,
makes every program hit the same C·H·M addresses once per block of rows; it has not been measured here.
At B=2, L=35,840, C=64, M=12, H=4, fp32, sm_80/86/89/90: 128/230/230/241 registers, no spills (see ``_config``).

All element offsets are int64. Dots take fp16/bf16 operands with fp32 accumulation; fp32 inputs use IEEE fp32 dots
unless ``torch.backends.cuda.matmul.allow_tf32`` is set. Under TRITON_INTERPRET=1, bf16 operands are cast to fp32
(the interpreter's bf16 dot is wrong).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import triton
import triton.language as tl
from triton.language.extra.cuda import libdevice

from anatokernels import _dispatch, _memory

LOG2E = tl.constexpr(1.4426950408889634)
LN2 = tl.constexpr(0.6931471805599453)
# The kernels take A and a in log2 units (absorbed with scale·log2 e, see ``function.absorbed_attention``):
# S·log2 e = x·A + a (+ log2 e·bias) feeds exp2 directly, with no multiply per score.
SCORE_UNIT = LOG2E.value
MAX_KEYS = 64
MAX_COLUMNS = 1024  # HP·MP: the score tile of one program is (BLOCK_L, HP·MP)


def unsupported(m: int, num_heads: int, dtype: torch.dtype) -> str | None:
    """Why the Triton kernels cannot run this problem, or None."""
    if dtype == torch.float64:
        return "supports float16, bfloat16 and float32, not float64"
    if m > MAX_KEYS:
        return f"supports at most {MAX_KEYS} keys, got M={m}"
    columns = padded_heads(num_heads) * padded_keys(m)
    if columns > MAX_COLUMNS:
        return (f"supports next_pow2(num_heads)·max(16, next_pow2(M)) ≤ {MAX_COLUMNS}, "
                f"got {columns} (num_heads={num_heads}, M={m})")
    return None


def padded_keys(m: int) -> int:
    return max(16, triton.next_power_of_2(m))


def padded_heads(h: int) -> int:
    return triton.next_power_of_2(h)


@triton.jit
def _scores(x_base, a_base, abias_base, rows, row_ok, C, sx_l, sx_c,
            HMP: tl.constexpr, BLOCK_L: tl.constexpr, BLOCK_C: tl.constexpr, NUM_CB: tl.constexpr,
            DOT_PREC: tl.constexpr):
    """S = x[rows]·A + a: (BLOCK_L, HMP) fp32."""
    j = tl.arange(0, HMP)
    s = tl.zeros((BLOCK_L, HMP), dtype=tl.float32)
    for cb in range(NUM_CB):
        cols = cb * BLOCK_C + tl.arange(0, BLOCK_C).to(tl.int64)
        col_ok = cols < C
        xt = tl.load(x_base + rows[:, None] * sx_l + cols[None, :] * sx_c,
                     mask=row_ok[:, None] & col_ok[None, :], other=0.0)
        at = tl.load(a_base + cols[:, None] * HMP + j[None, :], mask=col_ok[:, None], other=0.0)
        s = tl.dot(xt.to(at.dtype), at, s, input_precision=DOT_PREC)
    return s + tl.load(abias_base + j)[None, :]


@triton.jit
def _exp2(x, FAST_EXP2: tl.constexpr):
    """2^x; on a GPU ``ex2.approx.ftz`` (libdevice under the default ftz reflection: one MUFU.EX2, no
    denormal rescaling), under the interpreter (which has no libdevice) ``tl.exp2``. They differ only
    for results below 2^-126, which flush to 0."""
    if FAST_EXP2:
        return libdevice.exp2(x)
    return tl.exp2(x)


@triton.jit
def _segment_softmax(s2, BLOCK_L: tl.constexpr, HP: tl.constexpr, MP: tl.constexpr, FAST_EXP2: tl.constexpr):
    """Softmax of (BLOCK_L, HP·MP) scores given in log2 units (s·log2 e) within each head's MP columns; a
    head of −inf scores gives 0. One reciprocal per (row, head), not a division per element."""
    s3 = tl.reshape(s2, (BLOCK_L, HP, MP))
    top = tl.max(s3, axis=2)
    top = tl.where(top == float("-inf"), 0.0, top)
    e = _exp2(s3 - top[:, :, None], FAST_EXP2)
    total = tl.sum(e, axis=2)
    inv = 1.0 / tl.where(total == 0.0, 1.0, total)
    return tl.reshape(e * inv[:, :, None], (BLOCK_L, HP * MP))


@triton.jit
def _bias_tile(bias_base, rows, row_ok, n_heads, n_keys, sb_h, sb_l, sb_m, SHARED: tl.constexpr,
               BLOCK_L: tl.constexpr, HP: tl.constexpr, MP: tl.constexpr):
    """The bias of rows × (head, key) columns as given (B, H or 1, L, M): (BLOCK_L, HP·MP) fp32, 0 in padded
    keys (and heads). A head-shared bias is loaded once as (BLOCK_L, MP) and broadcast over the heads."""
    row_off = rows[:, None] * sb_l
    if SHARED:
        key = tl.arange(0, MP)
        tile = tl.load(bias_base + row_off + (key * sb_m)[None, :], mask=row_ok[:, None] & (key < n_keys)[None, :],
                       other=0.0).to(tl.float32)
        return tl.reshape(tl.broadcast_to(tile[:, None, :], (BLOCK_L, HP, MP)), (BLOCK_L, HP * MP))
    j = tl.arange(0, HP * MP)
    head, key = j // MP, j % MP
    ok = row_ok[:, None] & ((head < n_heads) & (key < n_keys))[None, :]
    return tl.load(bias_base + row_off + (head * sb_h + key * sb_m)[None, :], mask=ok, other=0.0).to(tl.float32)


@triton.jit
def _head_scale(bscale_ptr, n_heads, HP: tl.constexpr, MP: tl.constexpr):
    """The per-head bias scale spread over the HP·MP columns (fp32), 0 in padded heads."""
    head = tl.arange(0, HP * MP) // MP
    return tl.load(bscale_ptr + head, mask=head < n_heads, other=0.0).to(tl.float32)


@triton.jit
def _scaled_bias(bias, scale, HAS_BSCALE: tl.constexpr):
    """scale·bias on finite entries, −inf kept (``reference.scaled_bias``)."""
    if HAS_BSCALE:
        excluded = bias == float("-inf")
        return tl.where(excluded, float("-inf"), tl.where(excluded, 0.0, bias) * scale[None, :])
    return bias


@triton.jit
def _hyper_cross_attention_forward_kernel(
        x_ptr, amat_ptr, abias_ptr, bv_ptr, bo_ptr, out_ptr, bias_ptr, bscale_ptr,
        L, C, n_heads, n_keys, sx_b, sx_l, sx_c, sb_b, sb_h, sb_l, sb_m,
        HAS_BO: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_BSCALE: tl.constexpr, BIAS_SHARED: tl.constexpr,
        HP: tl.constexpr, MP: tl.constexpr, BLOCK_L: tl.constexpr, BLOCK_C: tl.constexpr, NUM_CB: tl.constexpr,
        DOT_PREC: tl.constexpr, FAST_EXP2: tl.constexpr):
    HMP: tl.constexpr = HP * MP
    b = tl.program_id(1).to(tl.int64)
    rows = tl.program_id(0).to(tl.int64) * BLOCK_L + tl.arange(0, BLOCK_L)
    row_ok = rows < L
    j = tl.arange(0, HMP)
    s = _scores(x_ptr + b * sx_b, amat_ptr + b * C * HMP, abias_ptr + b * HMP, rows, row_ok, C, sx_l, sx_c,
                HMP, BLOCK_L, BLOCK_C, NUM_CB, DOT_PREC)
    if HAS_BIAS:
        bias = _bias_tile(bias_ptr + b * sb_b, rows, row_ok, n_heads, n_keys, sb_h, sb_l, sb_m, BIAS_SHARED,
                          BLOCK_L, HP, MP)
        s += LOG2E * _scaled_bias(bias, _head_scale(bscale_ptr, n_heads, HP, MP), HAS_BSCALE)
    bv_base = bv_ptr + b * HMP * C
    p = _segment_softmax(s, BLOCK_L, HP, MP, FAST_EXP2).to(bv_ptr.dtype.element_ty)
    out_base = out_ptr + b * L * C
    for cb in range(NUM_CB):
        cols = cb * BLOCK_C + tl.arange(0, BLOCK_C).to(tl.int64)
        col_ok = cols < C
        bvt = tl.load(bv_base + j[:, None] * C + cols[None, :], mask=col_ok[None, :], other=0.0)
        o = tl.dot(p, bvt, input_precision=DOT_PREC)
        if HAS_BO:
            o += tl.load(bo_ptr + cols, mask=col_ok, other=0.0).to(tl.float32)[None, :]
        tl.store(out_base + rows[:, None] * C + cols[None, :], o.to(out_ptr.dtype.element_ty),
                 mask=row_ok[:, None] & col_ok[None, :])


@triton.jit
def _store_bias_grad(dbias_base, dsb, rows, row_ok, L, n_heads, M, SHARED: tl.constexpr, BLOCK_L: tl.constexpr,
                     HP: tl.constexpr, MP: tl.constexpr):
    """Stores the bias gradient dsb (BLOCK_L, HP·MP) of rows into a contiguous (H or 1, L, M) slice; a
    shared bias gets the sum over the heads."""
    if SHARED:
        key = tl.arange(0, MP)
        d = tl.sum(tl.reshape(dsb, (BLOCK_L, HP, MP)), axis=1)
        tl.store(dbias_base + rows[:, None] * M + key[None, :], d.to(dbias_base.dtype.element_ty),
                 mask=row_ok[:, None] & (key < M)[None, :])
    else:
        j = tl.arange(0, HP * MP)
        head, key = j // MP, j % MP
        ok = row_ok[:, None] & ((head < n_heads) & (key < M))[None, :]
        tl.store(dbias_base + rows[:, None] * M + (head.to(tl.int64) * L * M + key)[None, :],
                 dsb.to(dbias_base.dtype.element_ty), mask=ok)


@triton.jit
def _hyper_cross_attention_backward_kernel(
        x_ptr, g_ptr, amat_ptr, abias_ptr, bv_ptr, bias_ptr, bscale_ptr,
        dx_ptr, da_mat_part_ptr, dbv_part_ptr, da_bias_part_ptr, dbo_part_ptr, dbias_ptr, dscale_part_ptr,
        L, C, n_split, n_heads, n_keys, sx_b, sx_l, sx_c, sg_b, sg_l, sg_c, sb_b, sb_h, sb_l, sb_m, sdb_b,
        HAS_BO: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_BSCALE: tl.constexpr, BIAS_GRAD: tl.constexpr,
        BIAS_SHARED: tl.constexpr, HP: tl.constexpr, MP: tl.constexpr,
        BLOCK_L: tl.constexpr, BLOCK_C: tl.constexpr, NUM_CB: tl.constexpr, STEPS: tl.constexpr,
        DOT_PREC: tl.constexpr, FAST_EXP2: tl.constexpr):
    HMP: tl.constexpr = HP * MP
    split = tl.program_id(0).to(tl.int64)
    b = tl.program_id(1).to(tl.int64)
    part = b * n_split + split
    j = tl.arange(0, HMP)
    x_base = x_ptr + b * sx_b
    g_base = g_ptr + b * sg_b
    a_base = amat_ptr + b * C * HMP
    bv_base = bv_ptr + b * HMP * C
    dx_base = dx_ptr + b * L * C
    dA_base = da_mat_part_ptr + part * C * HMP
    dBv_base = dbv_part_ptr + part * HMP * C
    da_acc = tl.zeros((HMP,), dtype=tl.float32)
    dscale_acc = tl.zeros((HMP,), dtype=tl.float32)
    bscale = _head_scale(bscale_ptr, n_heads, HP, MP)
    for step in range(STEPS):
        rows = (split * STEPS + step) * BLOCK_L + tl.arange(0, BLOCK_L)
        row_ok = rows < L
        s = _scores(x_base, a_base, abias_ptr + b * HMP, rows, row_ok, C, sx_l, sx_c,
                    HMP, BLOCK_L, BLOCK_C, NUM_CB, DOT_PREC)
        if HAS_BIAS:
            bias = _bias_tile(bias_ptr + b * sb_b, rows, row_ok, n_heads, n_keys, sb_h, sb_l, sb_m, BIAS_SHARED,
                              BLOCK_L, HP, MP)
            s += LOG2E * _scaled_bias(bias, bscale, HAS_BSCALE)
        p = tl.where(row_ok[:, None], _segment_softmax(s, BLOCK_L, HP, MP, FAST_EXP2), 0.0)
        dp = tl.zeros((BLOCK_L, HMP), dtype=tl.float32)
        for cb in range(NUM_CB):
            cols = cb * BLOCK_C + tl.arange(0, BLOCK_C).to(tl.int64)
            col_ok = cols < C
            gt = tl.load(g_base + rows[:, None] * sg_l + cols[None, :] * sg_c,
                         mask=row_ok[:, None] & col_ok[None, :], other=0.0)
            bvt = tl.load(bv_base + j[None, :] * C + cols[:, None], mask=col_ok[:, None], other=0.0)
            dp = tl.dot(gt.to(bvt.dtype), bvt, dp, input_precision=DOT_PREC)
        pdp = tl.reshape(p * dp, (BLOCK_L, HP, MP))
        p3 = tl.reshape(p, (BLOCK_L, HP, MP))
        ds = tl.reshape(pdp - p3 * tl.sum(pdp, axis=2)[:, :, None], (BLOCK_L, HMP))  # d/dS, natural units
        da_acc += tl.sum(ds, axis=0)
        if HAS_BIAS:
            if HAS_BSCALE:
                dscale_acc += tl.sum(ds * tl.where(bias == float("-inf"), 0.0, bias), axis=0)
            if BIAS_GRAD:
                dsb = ds * bscale[None, :] if HAS_BSCALE else ds
                _store_bias_grad(dbias_ptr + b * sdb_b, dsb, rows, row_ok, L, n_heads, n_keys, BIAS_SHARED, BLOCK_L,
                                 HP, MP)
        ds_dot = (ds * LN2).to(amat_ptr.dtype.element_ty)  # d/d(S·log2 e): A and a are in log2 units
        p_dot = p.to(bv_ptr.dtype.element_ty)
        for cb in range(NUM_CB):
            cols = cb * BLOCK_C + tl.arange(0, BLOCK_C).to(tl.int64)
            col_ok = cols < C
            tile_ok = row_ok[:, None] & col_ok[None, :]
            at_t = tl.load(a_base + cols[None, :] * HMP + j[:, None], mask=col_ok[None, :], other=0.0)
            dxt = tl.dot(ds_dot, at_t, input_precision=DOT_PREC)
            tl.store(dx_base + rows[:, None] * C + cols[None, :], dxt.to(dx_ptr.dtype.element_ty), mask=tile_ok)
            xt = tl.load(x_base + rows[:, None] * sx_l + cols[None, :] * sx_c, mask=tile_ok, other=0.0)
            dA_ptrs = dA_base + cols[:, None] * HMP + j[None, :]
            dA_t = tl.load(dA_ptrs, mask=col_ok[:, None], other=0.0)
            dA_t = tl.dot(tl.trans(xt.to(ds_dot.dtype)), ds_dot, dA_t, input_precision=DOT_PREC)
            tl.store(dA_ptrs, dA_t, mask=col_ok[:, None])
            gt = tl.load(g_base + rows[:, None] * sg_l + cols[None, :] * sg_c, mask=tile_ok, other=0.0)
            dBv_ptrs = dBv_base + j[:, None] * C + cols[None, :]
            dBv_t = tl.load(dBv_ptrs, mask=col_ok[None, :], other=0.0)
            dBv_t = tl.dot(tl.trans(p_dot), gt.to(p_dot.dtype), dBv_t, input_precision=DOT_PREC)
            tl.store(dBv_ptrs, dBv_t, mask=col_ok[None, :])
            if HAS_BO:
                dbo_ptrs = dbo_part_ptr + part * C + cols
                tl.store(dbo_ptrs, tl.load(dbo_ptrs, mask=col_ok, other=0.0) + tl.sum(gt.to(tl.float32), axis=0),
                         mask=col_ok)
    tl.store(da_bias_part_ptr + part * HMP + j, da_acc * LN2)
    if HAS_BSCALE:
        tl.store(dscale_part_ptr + part * HMP + j, dscale_acc)


@dataclass(frozen=True)
class _Config:
    block_l: int
    block_c: int
    num_warps: int
    num_stages: int = 3  # Triton's software pipelining depth (1: no prefetch of the next slice)


def _config(c: int, hmp: int, interpreted: bool, backward: bool, half: bool = False) -> _Config:
    if interpreted:
        # Small enough that the tests' odd sizes cross block borders; each interpreted op is vectorised.
        return _Config(block_l=32, block_c=min(32, max(16, triton.next_power_of_2(c))), num_warps=4)
    # Untimed GPU choice, checked by compiling for sm_80/86/89/90: the fp32 tiles of one program stay near
    # 8K (forward) or 4K (backward) elements, which keeps H·MP ≤ 256 free of register spills. The backward is
    # not pipelined: prefetched slices spilled in fp32 (the lost overlap of loads with dots is unmeasured).
    if backward:
        return _Config(max(16, min(64, 4096 // hmp)), 32 if hmp <= 64 else 16, num_warps=8, num_stages=1)
    # 16-bit, 32 < C ≤ 64: one slice (sm_90, C=64: 0.69 not 0.93 warp-instr/output); fp32 FMA dots spill with it
    wide = half and triton.next_power_of_2(c) == 64
    return _Config(block_l=max(16, min(128, 8192 // hmp)), block_c=64 if wide else 32, num_warps=8)


def _dot_dtype(dtype: torch.dtype) -> torch.dtype:
    if dtype == torch.bfloat16 and _dispatch.interpreter_enabled():
        return torch.float32
    return dtype


def _dot_precision(dot_dtype: torch.dtype) -> str:
    return "ieee" if dot_dtype == torch.float32 and not torch.backends.cuda.matmul.allow_tf32 else "tf32"


def _operands(x: torch.Tensor, A: torch.Tensor, a: torch.Tensor, Bv: torch.Tensor):
    dot = _dot_dtype(x.dtype)
    return (A.to(dot).contiguous(), a.to(torch.float32).contiguous(), Bv.to(dot).contiguous(),
            _dot_precision(dot))


def _bias_args(bias: torch.Tensor | None, bias_scale: torch.Tensor | None, hp: int, dummy: torch.Tensor):
    """(bias, bias_scale, n_heads, M, 4 strides) launch arguments; placeholders where absent. n_heads masks
    the head columns the bias (or its scale) covers; a shared bias without scale covers all HP."""
    if bias is None:
        return dummy, dummy, hp, 1, 0, 0, 0, 0
    n_heads = bias_scale.shape[0] if bias_scale is not None else (bias.shape[1] if bias.shape[1] > 1 else hp)
    sb_b, sb_h, sb_l, sb_m = bias.stride()
    return (bias, dummy if bias_scale is None else bias_scale.contiguous(), n_heads, bias.shape[-1], sb_b,
            sb_h if bias.shape[1] > 1 else 0, sb_l, sb_m)


def forward(x: torch.Tensor, A: torch.Tensor, a: torch.Tensor, Bv: torch.Tensor, b_o: torch.Tensor | None,
            mp: int, bias: torch.Tensor | None = None, bias_scale: torch.Tensor | None = None) -> torch.Tensor:
    """x (B, L, C) any strides; A (B, C, HP·MP); a (B, HP·MP); Bv (B, HP·MP, C); b_o (C,); bias (B, H or 1,
    L, M) any strides; bias_scale (H,) -> out (B, L, C)."""
    b, n, c = x.shape
    hmp = A.shape[-1]
    out = _memory.empty((b, n, c), dtype=x.dtype, device=x.device)
    if out.numel() == 0:
        return out
    A_d, a_f, Bv_d, precision = _operands(x, A, a, Bv)
    cfg = _config(c, hmp, x.device.type == "cpu", backward=False, half=x.element_size() == 2)
    bias_t, scale_t, n_heads, m, *sb = _bias_args(bias, bias_scale, hmp // mp, out)
    grid = (triton.cdiv(n, cfg.block_l), b)
    _hyper_cross_attention_forward_kernel[grid](
        x, A_d, a_f, Bv_d, out if b_o is None else b_o.contiguous(), out, bias_t, scale_t, n, c, n_heads, m,
        *x.stride(), *sb, HAS_BO=b_o is not None, HAS_BIAS=bias is not None, HAS_BSCALE=bias_scale is not None,
        BIAS_SHARED=bias is not None and bias.shape[1] == 1, HP=hmp // mp, MP=mp, BLOCK_L=cfg.block_l,
        BLOCK_C=cfg.block_c, NUM_CB=triton.cdiv(c, cfg.block_c), DOT_PREC=precision,
        FAST_EXP2=not _dispatch.interpreter_enabled(), num_warps=cfg.num_warps)
    return out


def _split(n_blocks: int, batch: int, device: torch.device) -> tuple[int, int]:
    """(steps, n_split): row blocks per backward program (a power of two, so few compiled variants) and
    programs per sample."""
    if device.type == "cpu":
        steps = 2
    else:
        target = 2 * torch.cuda.get_device_properties(device).multi_processor_count
        per_sample = max(1, target // max(1, batch))
        steps = triton.next_power_of_2(max(1, triton.cdiv(n_blocks, per_sample)))
    return steps, triton.cdiv(n_blocks, steps)


def backward(x: torch.Tensor, dout: torch.Tensor, A: torch.Tensor, a: torch.Tensor, Bv: torch.Tensor,
             b_o: torch.Tensor | None, mp: int, bias: torch.Tensor | None = None,
             bias_scale: torch.Tensor | None = None, bias_grad: bool = False):
    """Gradients of :func:`forward` (same contract as ``chunked.backward``): dx (B, L, C) in x's dtype,
    dA (B, C, HP·MP), da (B, HP·MP), dBv (B, HP·MP, C) in float32, db_o (C,) or None, dbias (bias's shape,
    contiguous, bias's dtype) or None, dscale (H,) or None."""
    b, n, c = x.shape
    hmp, hp = A.shape[-1], A.shape[-1] // mp
    dx = _memory.empty((b, n, c), dtype=x.dtype, device=x.device)
    cfg = _config(c, hmp, x.device.type == "cpu", backward=True)
    steps, n_split = _split(triton.cdiv(n, cfg.block_l), b, x.device)
    parts = b * n_split
    f32 = dict(dtype=torch.float32, device=x.device)
    dA_part = torch.zeros(parts, c, hmp, **f32)
    dBv_part = torch.zeros(parts, hmp, c, **f32)
    da_part = _memory.empty((parts, hmp), **f32)
    dbo_part = torch.zeros(parts, c, **f32) if b_o is not None else da_part
    dscale_part = _memory.empty((parts, hmp), **f32) if bias_scale is not None else da_part
    dbias = _memory.empty(bias.shape, dtype=bias.dtype, device=x.device) if bias_grad else None
    if parts:
        A_d, a_f, Bv_d, precision = _operands(x, A, a, Bv)
        bias_t, scale_t, n_heads, m, *sb = _bias_args(bias, bias_scale, hp, da_part)
        _hyper_cross_attention_backward_kernel[(n_split, b)](
            x, dout, A_d, a_f, Bv_d, bias_t, scale_t, dx, dA_part, dBv_part, da_part, dbo_part,
            da_part if dbias is None else dbias, dscale_part, n, c, n_split, n_heads, m,
            *x.stride(), *dout.stride(), *sb, 0 if dbias is None else dbias.stride(0),
            HAS_BO=b_o is not None, HAS_BIAS=bias is not None, HAS_BSCALE=bias_scale is not None,
            BIAS_GRAD=dbias is not None, BIAS_SHARED=bias is not None and bias.shape[1] == 1,
            HP=hp, MP=mp, BLOCK_L=cfg.block_l, BLOCK_C=cfg.block_c,
            NUM_CB=triton.cdiv(c, cfg.block_c), STEPS=steps, DOT_PREC=precision,
            FAST_EXP2=not _dispatch.interpreter_enabled(), num_warps=cfg.num_warps, num_stages=cfg.num_stages)
    dA = dA_part.view(b, n_split, c, hmp).sum(dim=1)
    dBv = dBv_part.view(b, n_split, hmp, c).sum(dim=1)
    da = da_part.view(b, n_split, hmp).sum(dim=1)
    dbo = None if b_o is None else dbo_part.sum(dim=0).to(b_o.dtype)
    dscale = None
    if bias_scale is not None:
        dscale = dscale_part.view(parts, hp, mp).sum(dim=(0, 2))[:bias_scale.shape[0]].to(bias_scale.dtype)
    return dx, dA.to(A.dtype), da.to(A.dtype), dBv.to(A.dtype), dbo, dbias, dscale
