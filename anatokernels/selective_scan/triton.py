"""Triton kernels for the multi-order selective scan (forward and backward).

One program scans one (batch b, order k, block of BLOCK_D channels) over the
whole sequence in chunks of CHUNK steps. Inside a chunk the recurrence
h_t = a_t·h_{t-1} + b_t is a ``tl.associative_scan`` over (a, b) pairs in the
accumulation dtype (float32; float64 for float64 inputs); the state is carried
from chunk to chunk. Scan step t of order k reads and writes native position
π_k(t), computed arithmetically from the order's geometry (no permuted copy).

Memory: the forward stores the state before every chunk, (Bt, K, Dm, L/CHUNK, N),
never (Bt, K, Dm, L, N). The backward walks the chunks in reverse, recomputes
the states inside a chunk from its checkpoint, and carries the state gradient
with a reverse scan.

The K orders write the same output positions. With K > 1 each program adds its
gated y_k·silu(z) (the gate is linear in the sum, so it is applied per order)
into a zeroed accumulation buffer with atomics; with K = 1 it stores directly.
Atomics keep B·K·Dm/BLOCK_D programs in flight, which matters because each
program walks its sequence serially; the price is that the order of the K
(fp32) additions, like that of the dB/dC sums over channels, is not fixed.
Offsets into the tensors are int64; the position math is int32 and
division-free per element (see :mod:`anatokernels._triton_common`): a program
divides once to find its first chunk's order digits, then advances them by a
chunk per iteration. The atomics are relaxed (no ordering is needed for sums).

On a GPU a program scans BLOCK_D (up to ``_GPU_MAX_BLOCK_D``) channels of one
B/C group at once, so B_t and C_t are loaded once per BLOCK_D channels, as
long as that still leaves two programs per SM; the chunk is sized so that a
tile (BLOCK_D x CHUNK x N) stays about ``_TILE`` elements.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from anatokernels import _checks, _memory
from anatokernels._triton_common import advance, order_geometry, reciprocal, step_digits, step_positions, tl_dtype

_TILE = 2048  # scanned elements (CHUNK x N) per program on a GPU
_INTERPRETER_CHUNK = 16
_INTERPRETER_MAX_BLOCK_D = 64
_GPU_MAX_BLOCK_D = 2
_GPU_SMS = 132  # programs are counted against this many SMs where the device cannot be asked (an H100's)


@triton.jit
def _affine_combine(a1, b1, a2, b2):
    # (a1, b1) then (a2, b2): x -> a2 * (a1 * x + b1) + b2
    return a1 * a2, a2 * b1 + b2


@triton.jit
def _softplus(x):
    # log1p(exp(x)) without losing tiny values (1 + e rounds to 1 for e < eps), identity above 20
    e = tl.exp(tl.minimum(x, 20.0))
    one_plus = 1.0 + e
    rounded = one_plus - 1.0  # e as represented in 1 + e; 0 when e is below the rounding of 1
    log1p = tl.where(rounded == 0.0, e, tl.log(one_plus) * (e / tl.where(rounded == 0.0, 1.0, rounded)))
    return tl.where(x > 20.0, x, log1p)


@triton.jit
def _load_delta(delta_row, pos, s_l, t_mask, bias, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr,
                ACC: tl.constexpr):
    """δ (BLOCK_D, CHUNK) after bias and softplus, zero where t >= L; also the pre-softplus value."""
    x = tl.load(delta_row + pos[None, :] * s_l, mask=t_mask[None, :], other=0.0).to(ACC)
    if HAS_BIAS:
        x = x + bias[:, None]
    if SOFTPLUS:
        dt = _softplus(x)
    else:
        dt = x
    return tl.where(t_mask[None, :], dt, 0.0), x


@triton.jit
def _program_tile(K, N, PER_GROUP, N_DBLOCKS, BLOCK_D: tl.constexpr, CHUNK: tl.constexpr, BLOCK_N: tl.constexpr):
    """This program's sample b, scan order k, channels d (BLOCK_D,) and their B/C group, state lanes
    n (BLOCK_N,) with the mask n < N, and the step offsets (CHUNK,) of a chunk; all int64."""
    pid = tl.program_id(0)  # int32 index math once per program; offsets built from these are int64
    dblk = pid % N_DBLOCKS
    bk = pid // N_DBLOCKS
    k = bk % K
    b = (bk // K).to(tl.int64)
    d = (dblk * BLOCK_D).to(tl.int64) + tl.arange(0, BLOCK_D).to(tl.int64)
    grp = ((dblk * BLOCK_D) // PER_GROUP).to(tl.int64)  # BLOCK_D divides PER_GROUP: one group per block
    n = tl.arange(0, BLOCK_N).to(tl.int64)
    steps = tl.arange(0, CHUNK)
    return b, k.to(tl.int64), d, grp, n, n < N, steps


@triton.jit
def _channel_params(A_ptr, bias_ptr, D_ptr, k, d, n, n_mask, sA_k, sA_d, sA_n, sbias_k, sbias_d, sD_k, sD_d,
                    HAS_BIAS: tl.constexpr, HAS_D: tl.constexpr, ACC: tl.constexpr, BLOCK_D: tl.constexpr):
    """Order k's per-channel parameters for channels d: A (BLOCK_D, BLOCK_N), δ bias and D (BLOCK_D,),
    zeros where absent."""
    A = tl.load(A_ptr + k * sA_k + d[:, None] * sA_d + n[None, :] * sA_n, mask=n_mask[None, :], other=0.0).to(ACC)
    bias = tl.zeros([BLOCK_D], dtype=ACC)
    if HAS_BIAS:
        bias = tl.load(bias_ptr + k * sbias_k + d * sbias_d).to(ACC)
    Dv = tl.zeros([BLOCK_D], dtype=ACC)
    if HAS_D:
        Dv = tl.load(D_ptr + k * sD_k + d * sD_d).to(ACC)
    return A, bias, Dv


@triton.jit
def _input_rows(u_ptr, delta_ptr, B_ptr, C_ptr, z_ptr, b, k, d, grp, n, su_b, su_k, su_d, sd_b, sd_k, sd_d,
                sB_b, sB_k, sB_g, sB_n, sC_b, sC_k, sC_g, sC_n, sz_b, sz_d):
    """Pointers to position 0 of this program's rows: u, δ and z (BLOCK_D, 1); B, C (1, BLOCK_N)."""
    u_row = u_ptr + b * su_b + k * su_k + d[:, None] * su_d
    delta_row = delta_ptr + b * sd_b + k * sd_k + d[:, None] * sd_d
    B_row = B_ptr + b * sB_b + k * sB_k + grp * sB_g + n[None, :] * sB_n
    C_row = C_ptr + b * sC_b + k * sC_k + grp * sC_g + n[None, :] * sC_n
    z_row = z_ptr + b * sz_b + d[:, None] * sz_d
    return u_row, delta_row, B_row, C_row, z_row


@triton.jit
def _chunk_states(h0, dt, u, A, Bt):
    """States of one chunk from the state h0 (BLOCK_D, BLOCK_N) before it: h_t = exp(δ_t A)·h_{t-1} + δ_t u_t B_t
    for δ, u (BLOCK_D, CHUNK), A (BLOCK_D, BLOCK_N), B (CHUNK, BLOCK_N). Returns the input term δ u B and
    the states, both (BLOCK_D, CHUNK, BLOCK_N)."""
    a = tl.exp(dt[:, :, None] * A[:, None, :])
    bu = (dt * u)[:, :, None] * Bt[None, :, :]
    aa, bb = tl.associative_scan((a, bu), axis=1, combine_fn=_affine_combine)
    return bu, aa * h0[:, None, :] + bb


@triton.jit
def _selective_scan_forward_kernel(
        u_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, bias_ptr, geo_ptr, out_ptr, last_ptr, ckpt_ptr,
        K, DM, L, N, PER_GROUP, N_DBLOCKS, N_CHUNKS,
        su_b, su_k, su_d, su_l, sd_b, sd_k, sd_d, sd_l, sA_k, sA_d, sA_n,
        sB_b, sB_k, sB_g, sB_n, sB_l, sC_b, sC_k, sC_g, sC_n, sC_l,
        sD_k, sD_d, sz_b, sz_d, sz_l, sbias_k, sbias_d,
        HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr,
        ATOMIC_OUT: tl.constexpr, ACC: tl.constexpr,
        BLOCK_D: tl.constexpr, CHUNK: tl.constexpr, BLOCK_N: tl.constexpr):
    b, k, d, grp, n, n_mask, steps = _program_tile(K, N, PER_GROUP, N_DBLOCKS, BLOCK_D, CHUNK, BLOCK_N)
    A, bias, Dv = _channel_params(A_ptr, bias_ptr, D_ptr, k, d, n, n_mask, sA_k, sA_d, sA_n, sbias_k, sbias_d,
                                  sD_k, sD_d, HAS_BIAS, HAS_D, ACC, BLOCK_D)
    n0, n1, n2, st0, st1, st2, rev = order_geometry(geo_ptr, k)
    inv1, inv2 = reciprocal(n1), reciprocal(n2)
    c0, c1, c2 = step_digits(0, n1, n2, rev, L)  # digits of the current chunk's first step
    u_row, delta_row, B_row, C_row, z_row = _input_rows(u_ptr, delta_ptr, B_ptr, C_ptr, z_ptr, b, k, d, grp, n,
                                                        su_b, su_k, su_d, sd_b, sd_k, sd_d, sB_b, sB_k, sB_g, sB_n,
                                                        sC_b, sC_k, sC_g, sC_n, sz_b, sz_d)
    out_row = out_ptr + b * DM * L + d[:, None] * L
    state_off = ((b * K + k) * DM + d[:, None]) * N + n[None, :]
    ckpt_row = ckpt_ptr + ((b * K + k) * DM + d[:, None]) * N_CHUNKS * N + n[None, :]

    h = tl.zeros([BLOCK_D, BLOCK_N], dtype=ACC)
    for c in range(0, N_CHUNKS):
        tl.store(ckpt_row + c * N, h, mask=n_mask[None, :])
        pos32, t_mask = step_positions(c0, c1, c2, steps, n0, n1, n2, st0, st1, st2, rev, inv1, inv2)
        pos = pos32.to(tl.int64)
        u = tl.load(u_row + pos[None, :] * su_l, mask=t_mask[None, :], other=0.0).to(ACC)
        dt, _x = _load_delta(delta_row, pos, sd_l, t_mask, bias, HAS_BIAS, SOFTPLUS, ACC)
        bc_mask = t_mask[:, None] & n_mask[None, :]
        Bt = tl.load(B_row + pos[:, None] * sB_l, mask=bc_mask, other=0.0).to(ACC)
        Ct = tl.load(C_row + pos[:, None] * sC_l, mask=bc_mask, other=0.0).to(ACC)
        bu, hs = _chunk_states(h, dt, u, A, Bt)
        y = tl.sum(hs * Ct[None, :, :], axis=2)
        if HAS_D:
            y += Dv[:, None] * u
        if HAS_Z:
            zt = tl.load(z_row + pos[None, :] * sz_l, mask=t_mask[None, :], other=0.0).to(ACC)
            y = y * (zt * tl.sigmoid(zt))
        if ATOMIC_OUT:
            tl.atomic_add(out_row + pos[None, :], y.to(out_ptr.dtype.element_ty), mask=t_mask[None, :],
                          sem="relaxed")
        else:
            tl.store(out_row + pos[None, :], y.to(out_ptr.dtype.element_ty), mask=t_mask[None, :])
        # rows past L have a = 1, b = 0: the last row holds the state after the chunk's last valid step
        h = tl.sum(tl.where((steps == CHUNK - 1)[None, :, None], hs, 0.0), axis=1)
        c0, c1, c2 = advance(c0, c1, c2, tl.where(rev != 0, -CHUNK, CHUNK), n1, n2, inv1, inv2)
    tl.store(last_ptr + state_off, h, mask=n_mask[None, :])


@triton.jit
def _selective_scan_backward_kernel(
        u_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, bias_ptr, geo_ptr, ckpt_ptr, dout_ptr, dlast_ptr,
        du_ptr, ddelta_ptr, dA_ptr, dB_ptr, dC_ptr, dD_ptr, dz_ptr, dbias_ptr,
        K, DM, L, N, PER_GROUP, N_DBLOCKS, N_CHUNKS,
        su_b, su_k, su_d, su_l, sd_b, sd_k, sd_d, sd_l, sA_k, sA_d, sA_n,
        sB_b, sB_k, sB_g, sB_n, sB_l, sC_b, sC_k, sC_g, sC_n, sC_l,
        sD_k, sD_d, sz_b, sz_d, sz_l, sbias_k, sbias_d, so_b, so_d, so_l,
        G,
        HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr,
        ATOMIC_DZ: tl.constexpr, ACC: tl.constexpr,
        BLOCK_D: tl.constexpr, CHUNK: tl.constexpr, BLOCK_N: tl.constexpr):
    b, k, d, grp, n, n_mask, steps = _program_tile(K, N, PER_GROUP, N_DBLOCKS, BLOCK_D, CHUNK, BLOCK_N)
    A, bias, Dv = _channel_params(A_ptr, bias_ptr, D_ptr, k, d, n, n_mask, sA_k, sA_d, sA_n, sbias_k, sbias_d,
                                  sD_k, sD_d, HAS_BIAS, HAS_D, ACC, BLOCK_D)
    n0, n1, n2, st0, st1, st2, rev = order_geometry(geo_ptr, k)
    inv1, inv2 = reciprocal(n1), reciprocal(n2)
    c0, c1, c2 = step_digits((N_CHUNKS - 1) * CHUNK, n1, n2, rev, L)  # the chunks are walked from the last
    u_row, delta_row, B_row, C_row, z_row = _input_rows(u_ptr, delta_ptr, B_ptr, C_ptr, z_ptr, b, k, d, grp, n,
                                                        su_b, su_k, su_d, sd_b, sd_k, sd_d, sB_b, sB_k, sB_g, sB_n,
                                                        sC_b, sC_k, sC_g, sC_n, sz_b, sz_d)
    dout_row = dout_ptr + b * so_b + d[:, None] * so_d
    # outputs are contiguous: du, ddelta (Bt, K, Dm, L); dB, dC (Bt, K, G, N, L); dz (Bt, Dm, L)
    dud_row = ((b * K + k) * DM + d[:, None]) * L
    dbc_row = (((b * K + k) * G + grp) * N + n[None, :]) * L
    dz_row = dz_ptr + (b * DM + d[:, None]) * L
    state_off = ((b * K + k) * DM + d[:, None]) * N + n[None, :]
    ckpt_row = ckpt_ptr + ((b * K + k) * DM + d[:, None]) * N_CHUNKS * N + n[None, :]

    dh_next = tl.load(dlast_ptr + state_off, mask=n_mask[None, :], other=0.0).to(ACC)
    dA_acc = tl.zeros([BLOCK_D, BLOCK_N], dtype=ACC)
    dD_acc = tl.zeros([BLOCK_D], dtype=ACC)
    dbias_acc = tl.zeros([BLOCK_D], dtype=ACC)
    for i in range(0, N_CHUNKS):
        c = N_CHUNKS - 1 - i
        h0 = tl.load(ckpt_row + c * N, mask=n_mask[None, :], other=0.0)
        pos32, t_mask = step_positions(c0, c1, c2, steps, n0, n1, n2, st0, st1, st2, rev, inv1, inv2)
        pos = pos32.to(tl.int64)
        u = tl.load(u_row + pos[None, :] * su_l, mask=t_mask[None, :], other=0.0).to(ACC)
        dt, x = _load_delta(delta_row, pos, sd_l, t_mask, bias, HAS_BIAS, SOFTPLUS, ACC)
        bc_mask = t_mask[:, None] & n_mask[None, :]
        Bt = tl.load(B_row + pos[:, None] * sB_l, mask=bc_mask, other=0.0).to(ACC)
        Ct = tl.load(C_row + pos[:, None] * sC_l, mask=bc_mask, other=0.0).to(ACC)
        # recompute the states of this chunk from its checkpoint
        bu, hs = _chunk_states(h0, dt, u, A, Bt)
        g = tl.load(dout_row + pos[None, :] * so_l, mask=t_mask[None, :], other=0.0).to(ACC)
        if HAS_Z:
            zt = tl.load(z_row + pos[None, :] * sz_l, mask=t_mask[None, :], other=0.0).to(ACC)
            sig = tl.sigmoid(zt)
            y = tl.sum(hs * Ct[None, :, :], axis=2) + Dv[:, None] * u
            dz = g * y * sig * (1.0 + zt * (1.0 - sig))
            if ATOMIC_DZ:
                tl.atomic_add(dz_row + pos[None, :], dz.to(dz_ptr.dtype.element_ty), mask=t_mask[None, :],
                              sem="relaxed")
            else:
                tl.store(dz_row + pos[None, :], dz.to(dz_ptr.dtype.element_ty), mask=t_mask[None, :])
            g = g * zt * sig
        # dh_t = g_t·C_t + a_{t+1}·dh_{t+1}: a reverse scan with a of the next step (1 past L)
        pos1, t1_mask = step_positions(c0, c1, c2, steps + 1, n0, n1, n2, st0, st1, st2, rev, inv1, inv2)
        dt1, _x1 = _load_delta(delta_row, pos1.to(tl.int64), sd_l, t1_mask, bias, HAS_BIAS, SOFTPLUS, ACC)
        a1 = tl.exp(dt1[:, :, None] * A[:, None, :])
        pa, pb = tl.associative_scan((a1, g[:, :, None] * Ct[None, :, :]), axis=1, combine_fn=_affine_combine,
                                     reverse=True)
        dh = pb + pa * dh_next[:, None, :]
        dh_next = tl.sum(tl.where((steps == 0)[None, :, None], dh, 0.0), axis=1)
        ah = hs - bu  # a_t·h_{t-1}
        dBt = tl.sum(dh * (dt * u)[:, :, None], axis=0)
        dCt = tl.sum(g[:, :, None] * hs, axis=0)
        tl.atomic_add(dB_ptr + dbc_row + pos[:, None], dBt.to(dB_ptr.dtype.element_ty), mask=bc_mask,
                      sem="relaxed")
        tl.atomic_add(dC_ptr + dbc_row + pos[:, None], dCt.to(dC_ptr.dtype.element_ty), mask=bc_mask,
                      sem="relaxed")
        du = tl.sum(dh * Bt[None, :, :], axis=2) * dt
        if HAS_D:
            du += Dv[:, None] * g
            dD_acc += tl.sum(g * u, axis=1)
        ddt = tl.sum(dh * (Bt[None, :, :] * u[:, :, None] + A[:, None, :] * ah), axis=2)
        dA_acc += tl.sum(dh * ah * dt[:, :, None], axis=1)
        if SOFTPLUS:
            ddt = ddt * tl.where(x > 20.0, 1.0, tl.sigmoid(x))
        ddt = tl.where(t_mask[None, :], ddt, 0.0)
        dbias_acc += tl.sum(ddt, axis=1)
        tl.store(du_ptr + dud_row + pos[None, :], du.to(du_ptr.dtype.element_ty), mask=t_mask[None, :])
        tl.store(ddelta_ptr + dud_row + pos[None, :], ddt.to(ddelta_ptr.dtype.element_ty), mask=t_mask[None, :])
        c0, c1, c2 = advance(c0, c1, c2, tl.where(rev != 0, CHUNK, -CHUNK), n1, n2, inv1, inv2)
    # per-sample partial sums (Bt, K, Dm, ·), reduced over Bt by the caller: deterministic, no atomics
    tl.store(dA_ptr + state_off, dA_acc, mask=n_mask[None, :])
    kd = (b * K + k) * DM + d
    if HAS_D:
        tl.store(dD_ptr + kd, dD_acc)
    if HAS_BIAS:
        tl.store(dbias_ptr + kd, dbias_acc)


def chunk_length(length: int, n_state: int, device: torch.device) -> int:
    """Steps per chunk: 16 under the interpreter (its cost grows with the tile); on a GPU a tile of
    ``_GPU_MAX_BLOCK_D`` channels x CHUNK x N is about ``_TILE`` elements."""
    if device.type == "cpu":
        return _INTERPRETER_CHUNK
    per_channel = _TILE // _GPU_MAX_BLOCK_D
    return max(16, min(triton.next_power_of_2(length), per_channel // triton.next_power_of_2(n_state)))


def _sm_count(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).multi_processor_count  # cached by torch: no sync
    return _GPU_SMS


def _block_d(per_group: int, rows: int, device: torch.device) -> int:
    """Channels per program: a power of two dividing the group size (so a block never straddles groups).

    The interpreter is faster with few large programs (up to 64 channels). On a GPU up to
    ``_GPU_MAX_BLOCK_D`` channels share their B/C loads, while at least two programs per SM remain
    (each program walks its sequence serially, so fewer programs would leave SMs idle); ``rows`` is
    Bt·K·Dm, the programs at one channel each.
    """
    interpreted = device.type == "cpu"
    most = _INTERPRETER_MAX_BLOCK_D if interpreted else _GPU_MAX_BLOCK_D
    block = 1
    while (per_group % (block * 2) == 0 and block * 2 <= most
           and (interpreted or rows // (block * 2) >= 2 * _sm_count(device))):
        block *= 2
    return block


def _strides(t: torch.Tensor | None, ndim: int) -> tuple[int, ...]:
    return tuple(t.stride()) if t is not None else (0,) * ndim


def _common_args(u, delta, A, B, C, D, z, bias):
    """Shape ints and strides shared by both kernels."""
    bt, k_orders, dm, length = u.shape
    n_state = A.shape[2]
    groups = B.shape[2]
    return (k_orders, dm, length, n_state, dm // groups, *u.stride(), *delta.stride(), *A.stride(),
            *B.stride(), *C.stride(), *_strides(D, 2), *_strides(z, 3), *_strides(bias, 2))


def _launch_config(u, B, A, chunk):
    bt, k_orders, dm, length = u.shape
    interpreted = u.device.type == "cpu"
    block_d = _block_d(dm // B.shape[2], bt * k_orders * dm, u.device)
    n_dblocks = dm // block_d
    n_chunks = triton.cdiv(length, chunk)
    grid = (bt * k_orders * n_dblocks,)
    meta = dict(BLOCK_D=block_d, CHUNK=chunk, BLOCK_N=triton.next_power_of_2(A.shape[2]))
    if not interpreted:
        meta["num_warps"] = 4
    return grid, n_dblocks, n_chunks, meta


def forward(u, delta, A, B, C, D, z, bias, geometry, softplus, chunk):
    """Canonical layout (see ``function.py``) -> out (Bt, Dm, L), last (Bt, K, Dm, N), checkpoints."""
    bt, k_orders, dm, length = u.shape
    n_state = A.shape[2]
    acc = _checks.accumulation_dtype(u, delta, A, B, C, D, z, bias)
    grid, n_dblocks, n_chunks, meta = _launch_config(u, B, A, chunk)
    atomic = k_orders > 1
    out = (torch.zeros((bt, dm, length), dtype=acc, device=u.device) if atomic
           else _memory.empty((bt, dm, length), dtype=u.dtype, device=u.device))
    last = _memory.empty((bt, k_orders, dm, n_state), dtype=acc, device=u.device)
    checkpoints = _memory.empty((bt, k_orders, dm, n_chunks, n_state), dtype=acc, device=u.device)
    common = _common_args(u, delta, A, B, C, D, z, bias)
    _selective_scan_forward_kernel[grid](
        u, delta, A, B, C, u if D is None else D, u if z is None else z, u if bias is None else bias, geometry,
        out, last, checkpoints, *common[:5], n_dblocks, n_chunks, *common[5:],
        HAS_D=D is not None, HAS_Z=z is not None, HAS_BIAS=bias is not None, SOFTPLUS=bool(softplus),
        ATOMIC_OUT=atomic, ACC=tl_dtype(acc), **meta)
    return (out.to(u.dtype) if atomic else out), last, checkpoints


def backward(dout, dlast, u, delta, A, B, C, D, z, bias, checkpoints, geometry, softplus, chunk, needs):
    """Gradients (du, ddelta, dA, dB, dC, dD, dz, dbias) of the canonical inputs; None where not needed."""
    bt, k_orders, dm, length = u.shape
    n_state = A.shape[2]
    groups = B.shape[2]
    acc = checkpoints.dtype
    grid, n_dblocks, n_chunks, meta = _launch_config(u, B, A, chunk)
    dev = u.device
    du = _memory.empty(u.shape, dtype=u.dtype, device=dev)
    ddelta = _memory.empty(u.shape, dtype=delta.dtype, device=dev)
    dA = _memory.empty((bt, k_orders, dm, n_state), dtype=acc, device=dev)
    dB = torch.zeros((bt, k_orders, groups, n_state, length), dtype=acc, device=dev)
    dC = torch.zeros((bt, k_orders, groups, n_state, length), dtype=acc, device=dev)
    dD = _memory.empty((bt, k_orders, dm), dtype=acc, device=dev) if D is not None else None
    dbias = _memory.empty((bt, k_orders, dm), dtype=acc, device=dev) if bias is not None else None
    atomic_dz = k_orders > 1
    dz = None
    if z is not None:
        dz = (torch.zeros((bt, dm, length), dtype=acc, device=dev) if atomic_dz
              else _memory.empty((bt, dm, length), dtype=z.dtype, device=dev))
    common = _common_args(u, delta, A, B, C, D, z, bias)
    _selective_scan_backward_kernel[grid](
        u, delta, A, B, C, u if D is None else D, u if z is None else z, u if bias is None else bias, geometry,
        checkpoints, dout, dlast.contiguous(), du, ddelta, dA, dB, dC, dA if dD is None else dD,
        du if dz is None else dz, dA if dbias is None else dbias,
        *common[:5], n_dblocks, n_chunks, *common[5:], *dout.stride(), groups,
        HAS_D=D is not None, HAS_Z=z is not None, HAS_BIAS=bias is not None, SOFTPLUS=bool(softplus),
        ATOMIC_DZ=atomic_dz, ACC=tl_dtype(acc), **meta)
    grads = (du, ddelta, dA.sum(0).to(A.dtype), dB.to(B.dtype), dC.to(C.dtype),
             None if dD is None else dD.sum(0).to(D.dtype), None if dz is None else dz.to(z.dtype),
             None if dbias is None else dbias.sum(0).to(bias.dtype))
    return tuple(g if need else None for g, need in zip(grads, needs))
