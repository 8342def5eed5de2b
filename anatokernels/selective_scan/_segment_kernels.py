"""Triton kernels of the segment-parallel selective scan (see :mod:`.triton_segment` for the design).

A *segment* is a run of at most SEG consecutive steps of one order along its fastest axis (n2): row r of
that axis holds cdiv(n2, SEG) segments, the last one shorter when SEG does not divide n2. Segment j (in
scan order) starts at a native position and walks with a step of ±stride2, so any order is read in place;
positions are int32 (one 32-bit division per program, small fp32-reciprocal divmods per segment), offsets
of rows (b, k, d, n) int64.

State buffers have S + 1 *slots* per (b, k, d) row (S = segments of that order):
    forward  ``ck``  slot j = state entering segment j; slot S = last state
    backward ``gb``  slot j + 1 = G_j, the state gradient reaching the end of segment j from later steps
Each pass writes its per-segment summaries into the slots the carry pass then rewrites in place.
"""

from __future__ import annotations

import triton
import triton.language as tl

from anatokernels._triton_common import advance, order_geometry, reciprocal, step_digits
from anatokernels.selective_scan.triton import _affine_combine, _softplus

LOG2E = tl.constexpr(1.4426950408889634)


@triton.jit
def _segments(geo_ptr, k, j0, SEG: tl.constexpr, BLOCK_SEG: tl.constexpr):
    """Segments j0 + arange(BLOCK_SEG) of order k: first position, step (±stride2), length (0 past the
    order's S segments), all int32, and S."""
    n0, n1, n2, st0, st1, st2, rev = order_geometry(geo_ptr, k)
    spr = (n2 + SEG - 1) // SEG  # segments per row of the fastest axis
    count = n0 * n1 * spr
    c0, c1, c2 = step_digits(tl.minimum(j0, count - 1), n1, spr, rev, count)
    offs = tl.arange(0, BLOCK_SEG)
    d0, d1, d2 = advance(c0, c1, c2, tl.where(rev != 0, -offs, offs), n1, spr, reciprocal(n1), reciprocal(spr))
    first = d2 * SEG
    length = tl.minimum(n2 - first, SEG)
    base = d0 * st0 + d1 * st1
    start = tl.where(rev != 0, base + (first + length - 1) * st2, base + first * st2)
    valid = j0 + offs < count
    return tl.where(valid, start, 0), tl.where(rev != 0, -st2, st2), tl.where(valid, length, 0), count


@triton.jit
def _segment_count(geo_ptr, k, SEG: tl.constexpr):
    n0, n1, n2, _s0, _s1, _s2, _rev = order_geometry(geo_ptr, k)
    return n0 * n1 * ((n2 + SEG - 1) // SEG)


@triton.jit
def _row(DM, K, PER_GROUP):
    """(b, k, d, B/C group) of this program's row, int64: grid (segment blocks, K·Dm, Bt), so that only axis
    0 (up to 2^31 - 1 programs) grows with the volume and axes 1 and 2 stay below their 65535."""
    kd = tl.program_id(1)
    d = kd % DM
    return (tl.program_id(2).to(tl.int64), (kd // DM).to(tl.int64), d.to(tl.int64),
            (d // PER_GROUP).to(tl.int64))


@triton.jit
def _delta(ptr, m, bias, SOFTPLUS: tl.constexpr, ACC: tl.constexpr):
    """δ after bias and softplus (0 where not m), and the pre-softplus value."""
    x = tl.load(ptr, mask=m, other=0.0).to(ACC) + bias
    dt = _softplus(x) if SOFTPLUS else x
    return tl.where(m, dt, 0.0), x


@triton.jit
def _gate_grad(dout_ptr, z_ptr, m, HAS_Z: tl.constexpr, ACC: tl.constexpr):
    """g = dout·silu(z), the gradient reaching y_k, and dout·silu'(z) (what dz is y times; 0 without z)."""
    dout = tl.load(dout_ptr, mask=m, other=0.0).to(ACC)
    if HAS_Z:
        zt = tl.load(z_ptr, mask=m, other=0.0).to(ACC)
        sig = tl.sigmoid(zt)
        return dout * zt * sig, dout * sig * (1.0 + zt * (1.0 - sig))
    else:
        return dout, dout * 0.0


@triton.jit
def _seg_forward_kernel(
        u_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, bias_ptr, geo_ptr, ck_ptr, sd_ptr, y_ptr,
        K, DM, L, N, G, PER_GROUP, SLOTS,
        OUTPUT: tl.constexpr, DIRECT: tl.constexpr, HAS_D: tl.constexpr, HAS_Z: tl.constexpr,
        HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr, ACC: tl.constexpr,
        SEG: tl.constexpr, BLOCK_SEG: tl.constexpr, BLOCK_N: tl.constexpr):
    """Phase 1 (OUTPUT=False): each segment's zero-start end state -> ck slot j+1, Σδ -> sd slot j+1.
    Phase 3 (OUTPUT=True): from the entering state in ck slot j, y_k = Σ_n C·h + D·u at every step ->
    y (Bt, K, Dm, L), or with DIRECT (K = 1) gated and stored into out (Bt, Dm, L).
    Tile [BLOCK_N, BLOCK_SEG]: one column (all N states) per thread, so Σ_n is in-register."""
    b, k, d, grp = _row(DM, K, PER_GROUP)
    j0 = tl.program_id(0) * BLOCK_SEG
    pos, step, length, _count = _segments(geo_ptr, k, j0, SEG, BLOCK_SEG)
    n = tl.arange(0, BLOCK_N)
    n_mask = n < N
    kd = k * DM + d
    A2 = tl.load(A_ptr + kd * N + n, mask=n_mask, other=0.0).to(ACC) * LOG2E
    bias = tl.load(bias_ptr + kd).to(ACC) if HAS_BIAS else 0.0
    Dv = tl.load(D_ptr + kd).to(ACC) if HAS_D else 0.0
    row_off = ((b * K + k) * DM + d) * L
    u_row, delta_row = u_ptr + row_off, delta_ptr + row_off
    bc_off = (((b * K + k) * G + grp) * N + n[:, None]) * L
    B_rows, C_rows = B_ptr + bc_off, C_ptr + bc_off
    z_row = z_ptr + (b * DM + d) * L
    slot = ((b * K + k) * DM + d) * SLOTS + j0 + tl.arange(0, BLOCK_SEG)
    st_mask = n_mask[:, None] & (length > 0)[None, :]
    if OUTPUT:
        h = tl.load(ck_ptr + slot[None, :] * N + n[:, None], mask=st_mask, other=0.0)
        y_row = y_ptr + (b * DM + d) * L if DIRECT else y_ptr + ((b * K + k) * DM + d) * L
    else:
        h = tl.zeros([BLOCK_N, BLOCK_SEG], dtype=ACC)
        sdt = tl.zeros([BLOCK_SEG], dtype=ACC)
    for i in range(SEG):
        m = i < length
        dt, _x = _delta(delta_row + pos, m, bias, SOFTPLUS, ACC)
        uu = tl.load(u_row + pos, mask=m, other=0.0).to(ACC)
        mn = n_mask[:, None] & m[None, :]
        Bt = tl.load(B_rows + pos[None, :], mask=mn, other=0.0).to(ACC)
        h = tl.exp2(dt[None, :] * A2[:, None]) * h + (dt * uu)[None, :] * Bt
        if OUTPUT:
            Ct = tl.load(C_rows + pos[None, :], mask=mn, other=0.0).to(ACC)
            y = tl.sum(h * Ct, axis=0) + Dv * uu
            if DIRECT:
                if HAS_Z:
                    zt = tl.load(z_row + pos, mask=m, other=0.0).to(ACC)
                    y = y * zt * tl.sigmoid(zt)
            tl.store(y_row + pos, y.to(y_ptr.dtype.element_ty), mask=m)
        else:
            sdt += dt
        pos += step
    if not OUTPUT:
        tl.store(ck_ptr + (slot[None, :] + 1) * N + n[:, None], h, mask=st_mask)
        tl.store(sd_ptr + slot + 1, sdt, mask=length > 0)


@triton.jit
def _seg_carry_kernel(A_ptr, geo_ptr, st_ptr, sd_ptr, init_ptr, last_ptr, K, DM, N, SLOTS,
                      REVERSE: tl.constexpr, ACC: tl.constexpr, SEG: tl.constexpr, CHUNK_S: tl.constexpr,
                      BLOCK_N: tl.constexpr):
    """Phase 2, one (b, k, d) row: slots 0..S of ``st`` hold per-segment pairs (Σδ in ``sd``, x); rewrite
    them in place with the carried state. Forward: slot m = exp(A·Σδ_m)·slot(m-1) + x_m from 0 (slot 0
    is the identity), last state = slot S. Reverse: slot m = exp(A·Σδ_m)·slot(m+1) + x_m from ``init``
    (dlast; slot S is the identity). A ``tl.associative_scan`` over CHUNK_S slots at a time."""
    row = tl.program_id(0)
    k = (row // DM) % K
    count = _segment_count(geo_ptr, k, SEG)
    n = tl.arange(0, BLOCK_N)
    n_mask = n < N
    A2 = tl.load(A_ptr + ((row % DM) + k * DM) * N + n, mask=n_mask, other=0.0).to(ACC) * LOG2E
    base = row.to(tl.int64) * SLOTS
    if REVERSE:
        carry = tl.load(init_ptr + row.to(tl.int64) * N + n, mask=n_mask, other=0.0).to(ACC)
    else:
        carry = tl.zeros([BLOCK_N], dtype=ACC)
    r = tl.arange(0, CHUNK_S)
    for c in range(0, tl.cdiv(count + 1, CHUNK_S)):
        m = count - c * CHUNK_S - (CHUNK_S - 1) + r if REVERSE else c * CHUNK_S + r
        inside = (m >= 0) & (m <= count)
        live = inside & (m != (count if REVERSE else 0))
        mn = live[:, None] & n_mask[None, :]
        x = tl.load(st_ptr + (base + m)[:, None] * N + n[None, :], mask=mn, other=0.0)
        sd = tl.load(sd_ptr + base + m, mask=live, other=0.0)
        a = tl.exp2(sd[:, None] * A2[None, :])
        aa, bb = tl.associative_scan((a, x), axis=0, combine_fn=_affine_combine, reverse=REVERSE)
        H = aa * carry[None, :] + bb
        tl.store(st_ptr + (base + m)[:, None] * N + n[None, :], H, mask=inside[:, None] & n_mask[None, :])
        edge = (r == 0) if REVERSE else (r == CHUNK_S - 1)
        carry = tl.sum(tl.where(edge[:, None], H, 0.0), axis=0)
    if not REVERSE:
        tl.store(last_ptr + row.to(tl.int64) * N + n, carry, mask=n_mask)


@triton.jit
def _merge_kernel(y_ptr, z_ptr, dout_ptr, out_ptr, K, DM, L,
                  BACKWARD: tl.constexpr, HAS_Z: tl.constexpr, ACC: tl.constexpr, BLOCK: tl.constexpr):
    """The K-order merge at native positions: y = Σ_k y_k (y (Bt, K, Dm, L)); forward out = y·silu(z),
    backward dz = dout·y·silu'(z). Grid (cdiv(L, BLOCK), Dm, Bt)."""
    b = tl.program_id(2).to(tl.int64)
    d = tl.program_id(1).to(tl.int64)
    l = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    m = l < L
    y = tl.zeros([BLOCK], dtype=ACC)
    for k in range(K):
        y += tl.load(y_ptr + ((b * K + k) * DM + d) * L + l, mask=m, other=0.0).to(ACC)
    if HAS_Z:
        zt = tl.load(z_ptr + (b * DM + d) * L + l, mask=m, other=0.0).to(ACC)
        sig = tl.sigmoid(zt)
        if BACKWARD:
            g = tl.load(dout_ptr + (b * DM + d) * L + l, mask=m, other=0.0).to(ACC)
            y = g * y * sig * (1.0 + zt * (1.0 - sig))
        else:
            y = y * zt * sig
    tl.store(out_ptr + (b * DM + d) * L + l, y.to(out_ptr.dtype.element_ty), mask=m)


@triton.jit
def _seg_backward_summary_kernel(
        delta_ptr, A_ptr, C_ptr, z_ptr, bias_ptr, geo_ptr, dout_ptr, gb_ptr, sd_ptr,
        K, DM, L, N, G, PER_GROUP, SLOTS,
        HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr, ACC: tl.constexpr,
        SEG: tl.constexpr, BLOCK_SEG: tl.constexpr, BLOCK_N: tl.constexpr):
    """Backward phase 1: each segment walked in reverse from a zero gradient, w = a_t·(g_t·C_t + w) ->
    R_j = a_s·dh_s (the gradient its first step passes to the state before it) -> gb slot j; Σδ -> sd
    slot j. Same [BLOCK_N, BLOCK_SEG] tile as the forward."""
    b, k, d, grp = _row(DM, K, PER_GROUP)
    j0 = tl.program_id(0) * BLOCK_SEG
    first, step, length, _count = _segments(geo_ptr, k, j0, SEG, BLOCK_SEG)
    pos = first + (length - 1) * step
    n = tl.arange(0, BLOCK_N)
    n_mask = n < N
    kd = k * DM + d
    A2 = tl.load(A_ptr + kd * N + n, mask=n_mask, other=0.0).to(ACC) * LOG2E
    bias = tl.load(bias_ptr + kd).to(ACC) if HAS_BIAS else 0.0
    delta_row = delta_ptr + ((b * K + k) * DM + d) * L
    C_rows = C_ptr + (((b * K + k) * G + grp) * N + n[:, None]) * L
    z_row = z_ptr + (b * DM + d) * L
    dout_row = dout_ptr + (b * DM + d) * L
    w = tl.zeros([BLOCK_N, BLOCK_SEG], dtype=ACC)
    sdt = tl.zeros([BLOCK_SEG], dtype=ACC)
    for i in range(SEG):
        m = i < length
        dt, _x = _delta(delta_row + pos, m, bias, SOFTPLUS, ACC)
        g, _dzy = _gate_grad(dout_row + pos, z_row + pos, m, HAS_Z, ACC)
        Ct = tl.load(C_rows + pos[None, :], mask=n_mask[:, None] & m[None, :], other=0.0).to(ACC)
        w = tl.exp2(dt[None, :] * A2[:, None]) * (g[None, :] * Ct + w)
        sdt += dt
        pos -= step
    slot = ((b * K + k) * DM + d) * SLOTS + j0 + tl.arange(0, BLOCK_SEG)
    tl.store(gb_ptr + slot[None, :] * N + n[:, None], w, mask=n_mask[:, None] & (length > 0)[None, :])
    tl.store(sd_ptr + slot, sdt, mask=length > 0)


@triton.jit
def _spread(v, BLOCK_D: tl.constexpr, BLOCK_SEG: tl.constexpr):
    """A [BLOCK_SEG] per-segment vector repeated for each of BLOCK_D channels: [BLOCK_SEG·BLOCK_D], segment-major
    (the channels of a segment in neighbouring columns, so that on a GPU they sit in neighbouring lanes)."""
    return tl.reshape(tl.broadcast_to(v[:, None], (BLOCK_SEG, BLOCK_D)), (BLOCK_SEG * BLOCK_D,))


@triton.jit
def _over_channels(x, SEG: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_SEG: tl.constexpr):
    """[SEG, BLOCK_SEG·BLOCK_D] -> [SEG, BLOCK_SEG]: the sum over the tile's channels (the block reduction)."""
    return tl.sum(tl.reshape(x, (SEG, BLOCK_SEG, BLOCK_D)), axis=2)


@triton.jit
def _per_channel(x, SEG: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_SEG: tl.constexpr):
    """[SEG, BLOCK_SEG·BLOCK_D] -> [BLOCK_D]: each channel's sum over the tile."""
    return tl.sum(tl.reshape(tl.sum(x, axis=0), (BLOCK_SEG, BLOCK_D)), axis=0)


@triton.jit
def _seg_backward_kernel(
        u_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, bias_ptr, geo_ptr, dout_ptr, ck_ptr, gb_ptr,
        du_ptr, ddelta_ptr, dB_ptr, dC_ptr, y_ptr, part_ptr,
        K, DM, L, N, G, PER_GROUP, SLOTS, NB,
        DIRECT_DZ: tl.constexpr, HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr,
        SOFTPLUS: tl.constexpr, ACC: tl.constexpr, SEG: tl.constexpr, BLOCK_SEG: tl.constexpr,
        BLOCK_D: tl.constexpr):
    """Backward phase 3: per state n, the segment's states (forward scan from ck slot j) and state
    gradients (reverse scan from gb slot j+1) over a [SEG, BLOCK_SEG·BLOCK_D] tile: BLOCK_SEG segments times
    BLOCK_D channels of one B/C group (grid axis 1: K·Dm / BLOCK_D), a segment's channels in neighbouring
    columns, one column's SEG steps per thread (both scans in-register). du, dδ, y_k summed over n in the
    tile; dB, dC summed over the tile's channels first (on a GPU across neighbouring lanes), then one relaxed
    atomic per (step, segment) and program (the programs of the group's other channel blocks add to the same
    words); dA, dD, dδ-bias per-program partials (part: N + 2 per channel and program)."""
    b = tl.program_id(2).to(tl.int64)
    dblocks = DM // BLOCK_D
    k = (tl.program_id(1) // dblocks).to(tl.int64)
    d0 = ((tl.program_id(1) % dblocks) * BLOCK_D).to(tl.int64)
    grp = d0 // PER_GROUP
    jb = tl.program_id(0)
    j0 = jb * BLOCK_SEG
    start, step, length, _count = _segments(geo_ptr, k, j0, SEG, BLOCK_SEG)
    i = tl.arange(0, SEG)[:, None]
    m0 = i < length[None, :]  # [SEG, BLOCK_SEG]: one column per segment, for dB and dC
    pos0 = start[None, :] + i * step
    lengths = _spread(length, BLOCK_D, BLOCK_SEG)
    m = i < lengths[None, :]
    pos = _spread(start, BLOCK_D, BLOCK_SEG)[None, :] + i * step
    cols = tl.arange(0, BLOCK_D * BLOCK_SEG)
    dd = d0 + cols % BLOCK_D  # each column's channel
    kd = k * DM + dd
    row = (b * K + k) * DM + dd
    bias = tl.load(bias_ptr + kd).to(ACC)[None, :] if HAS_BIAS else 0.0
    Dv = tl.load(D_ptr + kd).to(ACC)[None, :] if HAS_D else 0.0
    dt, x = _delta(delta_ptr + row[None, :] * L + pos, m, bias, SOFTPLUS, ACC)
    dt1, _x1 = _delta(delta_ptr + row[None, :] * L + pos + step, (i + 1) < lengths[None, :], bias, SOFTPLUS, ACC)
    uu = tl.load(u_ptr + row[None, :] * L + pos, mask=m, other=0.0).to(ACC)
    zrow = (b * DM + dd)[None, :] * L + pos
    g, dzy = _gate_grad(dout_ptr + zrow, z_ptr + zrow, m, HAS_Z, ACC)
    dtu = dt * uu
    slot = row * SLOTS + j0 + cols // BLOCK_D
    seg_ok = lengths > 0
    bc_row = ((b * K + k) * G + grp) * N * L
    part = part_ptr + (((b * K + k) * DM + d0 + tl.arange(0, BLOCK_D)) * NB + jb) * (N + 2)
    du = tl.zeros([SEG, BLOCK_D * BLOCK_SEG], dtype=ACC)
    ddt = tl.zeros([SEG, BLOCK_D * BLOCK_SEG], dtype=ACC)
    y = tl.zeros([SEG, BLOCK_D * BLOCK_SEG], dtype=ACC)
    for nn in range(N):
        A_n = tl.load(A_ptr + kd * N + nn).to(ACC)[None, :]
        Bn = tl.load(B_ptr + bc_row + nn * L + pos, mask=m, other=0.0).to(ACC)
        Cn = tl.load(C_ptr + bc_row + nn * L + pos, mask=m, other=0.0).to(ACC)
        hin = tl.load(ck_ptr + slot * N + nn, mask=seg_ok, other=0.0)
        gin = tl.load(gb_ptr + (slot + 1) * N + nn, mask=seg_ok, other=0.0)
        bu = dtu * Bn
        aa, bb = tl.associative_scan((tl.exp2(dt * (A_n * LOG2E)), bu), axis=0, combine_fn=_affine_combine)
        h = aa * hin[None, :] + bb
        pa, pb = tl.associative_scan((tl.exp2(dt1 * (A_n * LOG2E)), g * Cn), axis=0,
                                     combine_fn=_affine_combine, reverse=True)
        dh = pa * gin[None, :] + pb
        ah = h - bu  # a_t·h_{t-1}
        du += dh * Bn
        ddt += dh * (Bn * uu + A_n * ah)
        if HAS_Z:
            y += Cn * h
        tl.store(part + nn, _per_channel(dh * ah * dt, SEG, BLOCK_D, BLOCK_SEG))
        tl.atomic_add(dB_ptr + bc_row + nn * L + pos0, _over_channels(dh * dtu, SEG, BLOCK_D, BLOCK_SEG), mask=m0,
                      sem="relaxed")
        tl.atomic_add(dC_ptr + bc_row + nn * L + pos0, _over_channels(g * h, SEG, BLOCK_D, BLOCK_SEG), mask=m0,
                      sem="relaxed")
    if SOFTPLUS:
        ddt = ddt * tl.where(x > 20.0, 1.0, tl.sigmoid(x))
    ddt = tl.where(m, ddt, 0.0)
    tl.store(du_ptr + row[None, :] * L + pos, (du * dt + Dv * g).to(du_ptr.dtype.element_ty), mask=m)
    tl.store(ddelta_ptr + row[None, :] * L + pos, ddt.to(ddelta_ptr.dtype.element_ty), mask=m)
    tl.store(part + N, _per_channel(g * uu, SEG, BLOCK_D, BLOCK_SEG))
    tl.store(part + N + 1, _per_channel(ddt, SEG, BLOCK_D, BLOCK_SEG))
    if HAS_Z:
        y += Dv * uu
        if DIRECT_DZ:
            tl.store(y_ptr + zrow, (y * dzy).to(y_ptr.dtype.element_ty), mask=m)
        else:
            tl.store(y_ptr + row[None, :] * L + pos, y, mask=m)
