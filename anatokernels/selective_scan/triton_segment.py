"""Segment-parallel selective scan in Triton (backend ``triton_segment``; the chunked scan is ``triton``).

Same backend contract as :mod:`.triton` (see ``function.py``); its "checkpoints" are the states entering
each *segment*, (Bt, K, Dm, S_max + 1, N), slot S_k of order k holding its last state.

Segments. Order k's steps are cut into runs of at most SEG = ``chunk`` steps along its fastest axis
(n2): S_k = n0·n1·cdiv(n2, SEG) segments, the last of each row shorter when SEG does not divide n2 (a 1-D
scan is a single row). Each segment is read in place from a start position and a ±stride2 step (int32;
no position table, no per-element division); row offsets (b, k, d, n) are int64.

Phases (forward):
  1. ``_seg_forward_kernel(OUTPUT=False)``: each (channel, segment) walks its segment sequentially from a
     zero state: its end state and Σδ (the total decay is exp(A·Σδ)) into slot j + 1.
  2. ``_seg_carry_kernel``: per (b, k, d) row, the short scan over segments in scan order (an
     associative scan over CHUNK_S slots at a time), in place: slot j becomes the state entering segment
     j. These are what the backward keeps.
  3. ``_seg_forward_kernel(OUTPUT=True)``: each segment walked again from its entering state; y_k =
     Σ_n C·h + D·u in-thread at every step.
  The K-order merge: orders visit the same native positions in different segment shapes (x-rows for
  "zyx", z-columns for "yxz"), so no program owns a position for all K orders. With K = 1 phase 3 gates
  and stores the output itself; with K > 1 it stores y_k into a (Bt, K, Dm, L) buffer and
  ``_merge_kernel`` sums the K values of each position and applies silu(z): no atomics, a fixed
  summation order, one extra write and read of K·L values per channel.
Backward, mirrored: ``_seg_backward_summary_kernel`` walks each segment in reverse from a zero gradient
(R_j = a_s·dh_s and Σδ), the reverse carry G_{j-1} = R_j + exp(A·Σδ_j)·G_j from dlast gives the gradient
reaching each segment's end, and ``_seg_backward_kernel`` recomputes states and state gradients per
segment and state, reduces du, dδ, y_k over N in-thread, dA, dD, dδ-bias per program (partials summed
here), and sums dB, dC over the BLOCK_D channels of one B/C group that a program holds before adding them
with one relaxed atomic per (step, segment) (the group's other programs add to the same words). dz is y·dout·silu'(z)
with y = Σ_k y_k: merged like the forward output.

Layouts (Triton cannot place registers explicitly; these are the layouts its default blocked encoding
gives, checked in the SASS by ``benchmarks/static``):
  forward and backward phase 1: a [BLOCK_N, BLOCK_SEG] tile with BLOCK_SEG = 32·num_warps, so each
  thread holds one segment's N states (the design's "one thread owns (channel, segment)"), the step
  loop is sequential and Σ_n C·h is an in-register sum.
  backward phase 3: a [SEG, BLOCK_SEG·BLOCK_D] tile per state n (loop over n), one (segment, channel)'s
  SEG steps per thread, so the forward scan of the states and the reverse scan of their gradients are
  in-register sequential scans; a segment's BLOCK_D = 4 channels sit in neighbouring lanes, so their dB, dC
  sum is a warp-shuffle reduction (sm_90 SASS at the benchmark shape: 4 atomics per thread and state
  instead of 16, 1.71 instructions per update instead of 1.68, 6 barriers per state iteration instead of 2). A
  reverse walk with all N states in a thread would need each h_{t-1} again: that means dividing by a_t,
  unstable when a_t underflows, or storing the states.
"""

from __future__ import annotations

import torch
import triton

from anatokernels import _checks, _memory
from anatokernels._triton_common import geometry_rows, tl_dtype
from anatokernels.selective_scan._segment_kernels import (
    _merge_kernel,
    _seg_backward_kernel,
    _seg_backward_summary_kernel,
    _seg_carry_kernel,
    _seg_forward_kernel,
)

_INTERPRETER_SEG = 4  # small, so that the interpreter tests cut rows into uneven segments
_GPU_SEG = 8  # the backward holds several [SEG] columns per thread: at 16 it needs 255 registers and spills
_GPU_WARPS = 4
_INTERPRETER_BLOCK_SEG = 64
# channels of one B/C group per backward program (the largest power of two up to this that divides Dm / G):
# their dB, dC are summed inside the block before the atomics. On a GPU the tile keeps 32·num_warps columns
# (BLOCK_SEG = 32·num_warps / BLOCK_D), so a thread still owns one (channel, segment); the interpreter takes 2
# so that its tests cover the reduction.
_GPU_BLOCK_D = 4
_INTERPRETER_BLOCK_D = 2
# the backward's register cap on a GPU: ptxas gives the channel-blocked tile 184-186 registers on sm_80-89
# (168 on sm_90), two blocks of 4 warps per SM instead of three; capped, it keeps three (a 4-byte spill outside
# the loop on sm_80, none in it; benchmarks/static)
_GPU_BACKWARD_MAXNREG = 168


def chunk_length(length: int, n_state: int, device: torch.device) -> int:
    """SEG, the longest segment: ``_INTERPRETER_SEG`` under the interpreter, ``_GPU_SEG`` on a GPU."""
    return _INTERPRETER_SEG if device.type == "cpu" else _GPU_SEG


def segment_counts(geometry: torch.Tensor, seg: int) -> list[int]:
    """S_k = n0·n1·cdiv(n2, seg) per order (rows from :func:`geometry_rows`, read to the host once per tensor)."""
    return [r[0] * r[1] * triton.cdiv(r[2], seg) for r in geometry_rows(geometry)]


def _tile(device: torch.device, s_max: int) -> tuple[int, dict]:
    """BLOCK_SEG (segments per program) and launch options."""
    if device.type == "cpu":
        return min(_INTERPRETER_BLOCK_SEG, triton.next_power_of_2(s_max)), {}
    return 32 * _GPU_WARPS, {"num_warps": _GPU_WARPS}


def channel_block(per_group: int, device: torch.device) -> int:
    """BLOCK_D of the backward: the largest power of two up to the device's cap that divides ``per_group``."""
    block = _INTERPRETER_BLOCK_D if device.type == "cpu" else _GPU_BLOCK_D
    while per_group % block:
        block //= 2
    return block


def _contiguous(*tensors):
    return tuple(None if t is None else t.contiguous() for t in tensors)


def _plan(u, A, B, geometry, chunk):
    """Shape ints, slots and grids shared by both directions."""
    bt, k_orders, dm, length = u.shape
    n_state, groups = A.shape[2], B.shape[2]
    if max(bt, k_orders * dm) > 65535:  # grid axes 2 and 1
        raise ValueError(f"selective_scan (triton_segment): Bt = {bt} or K·Dm = {k_orders * dm} exceeds the 65535 "
                         "programs of a grid axis; use backend='triton'")
    s_max = max(segment_counts(geometry, chunk))
    block_seg, opts = _tile(u.device, s_max)
    nb = triton.cdiv(s_max, block_seg)
    interpreted = u.device.type == "cpu"
    block_d = channel_block(dm // groups, u.device)
    bwd_seg = block_seg if interpreted else block_seg // block_d
    bwd_nb = triton.cdiv(s_max, bwd_seg)
    bwd_opts = opts if interpreted else {**opts, "maxnreg": _GPU_BACKWARD_MAXNREG}
    return dict(bwd_nb=bwd_nb, bwd_grid=(bwd_nb, k_orders * dm // block_d, bt), bwd_opts=bwd_opts,
                bwd_meta=dict(SEG=chunk, BLOCK_SEG=bwd_seg, BLOCK_D=block_d),
                bt=bt, k=k_orders, dm=dm, L=length, n=n_state, g=groups, slots=s_max + 1, nb=nb,
                grid=(nb, k_orders * dm, bt), rows=bt * k_orders * dm, opts=opts,
                meta=dict(SEG=chunk, BLOCK_SEG=block_seg), block_n=triton.next_power_of_2(n_state),
                chunk_s=16 if interpreted else 64, merge_block=256 if interpreted else 1024)


def _merge(p, y, z, dout, out, backward, acc):
    _merge_kernel[(triton.cdiv(p["L"], p["merge_block"]), p["dm"], p["bt"])](
        y, y if z is None else z, y if dout is None else dout, out, p["k"], p["dm"], p["L"],
        BACKWARD=backward, HAS_Z=z is not None, ACC=tl_dtype(acc), BLOCK=p["merge_block"], **p["opts"])


def _forward_summaries(u, delta, A, B, C, D, z, bias, geometry, softplus, chunk):
    """Phase 1; returns the plan, kernel arguments and flags, and the (ck, sd, y, out, last) buffers."""
    acc = _checks.accumulation_dtype(u, delta, A, B, C, D, z, bias)
    u, delta, A, B, C, D, z, bias = _contiguous(u, delta, A, B, C, D, z, bias)
    p = _plan(u, A, B, geometry, chunk)
    dev = u.device
    p["acc"] = acc
    ck = _memory.empty((p["bt"], p["k"], p["dm"], p["slots"], p["n"]), dtype=acc, device=dev)
    sd = torch.empty((p["bt"], p["k"], p["dm"], p["slots"]), dtype=acc, device=dev)
    out = _memory.empty((p["bt"], p["dm"], p["L"]), dtype=u.dtype, device=dev)
    y = out if p["k"] == 1 else _memory.empty(u.shape, dtype=acc, device=dev)
    args = (u, delta, A, B, C, u if D is None else D, u if z is None else z, u if bias is None else bias,
            geometry, ck, sd, y, p["k"], p["dm"], p["L"], p["n"], p["g"], p["dm"] // p["g"], p["slots"])
    flags = dict(DIRECT=p["k"] == 1, HAS_D=D is not None, HAS_Z=z is not None, HAS_BIAS=bias is not None,
                 SOFTPLUS=bool(softplus), ACC=tl_dtype(acc), BLOCK_N=p["block_n"], **p["meta"], **p["opts"])
    _seg_forward_kernel[p["grid"]](*args, OUTPUT=False, **flags)
    return p, args, flags, (ck, sd, y, out, z)


def forward_summaries(u, delta, A, B, C, D, z, bias, geometry, softplus, chunk):
    """Phase 1 alone (for tests): (ck, sd) whose slot j + 1 holds segment j's zero-start end state and Σδ."""
    _p, _args, _flags, (ck, sd, *_rest) = _forward_summaries(u, delta, A, B, C, D, z, bias, geometry, softplus,
                                                             chunk)
    return ck, sd


def _carry(p, A, geometry, states, sd, init, last, reverse):
    _seg_carry_kernel[(p["rows"],)](A, geometry, states, sd, init, last, p["k"], p["dm"], p["n"], p["slots"],
                                    REVERSE=reverse, ACC=tl_dtype(p["acc"]), SEG=p["meta"]["SEG"],
                                    CHUNK_S=p["chunk_s"], BLOCK_N=p["block_n"], **p["opts"])


def forward(u, delta, A, B, C, D, z, bias, geometry, softplus, chunk):
    """Canonical layout (see ``function.py``) -> out (Bt, Dm, L), last (Bt, K, Dm, N), segment states."""
    p, args, flags, (ck, sd, y, out, z) = _forward_summaries(u, delta, A, B, C, D, z, bias, geometry, softplus,
                                                             chunk)
    last = _memory.empty((p["bt"], p["k"], p["dm"], p["n"]), dtype=p["acc"], device=u.device)
    _carry(p, args[2], geometry, ck, sd, ck, last, False)
    _seg_forward_kernel[p["grid"]](*args, OUTPUT=True, **flags)
    if p["k"] > 1:
        _merge(p, y, z, None, out, False, p["acc"])
    return out, last, ck


def checkpoint_slots(spatial, orders, chunk: int) -> int:
    """The checkpoints' length (dim 3): S_max + 1 (for a fake kernel: no geometry tensor needed)."""
    from anatokernels.scan_order import order_geometry

    return 1 + max(g.sizes[0] * g.sizes[1] * triton.cdiv(g.sizes[2], chunk)
                   for g in (order_geometry(spatial, o) for o in orders))


def backward_carries(dout, dlast, delta, A, C, z, bias, geometry, softplus, chunk, shape, carry=True):
    """Backward phases 1 and 2: gb (shape = the checkpoints') with slot j + 1 = G_j, the state gradient
    reaching the end of segment j from later steps (dlast for the last). ``carry=False`` (tests) stops
    after phase 1: slot j then holds R_j, segment j's zero-start reverse summary."""
    acc = dlast.dtype
    delta, A, C, z, bias, dout = _contiguous(delta, A, C, z, bias, dout)
    p = _plan(delta, A, C, geometry, chunk)
    p["acc"] = acc
    gb = _memory.empty(shape, dtype=acc, device=delta.device)
    sd = torch.empty(shape[:-1], dtype=acc, device=delta.device)
    _seg_backward_summary_kernel[p["grid"]](
        delta, A, C, delta if z is None else z, delta if bias is None else bias, geometry, dout, gb, sd,
        p["k"], p["dm"], p["L"], p["n"], p["g"], p["dm"] // p["g"], p["slots"], HAS_Z=z is not None,
        HAS_BIAS=bias is not None, SOFTPLUS=bool(softplus), ACC=tl_dtype(acc), BLOCK_N=p["block_n"],
        **p["meta"], **p["opts"])
    if carry:
        _carry(p, A, geometry, gb, sd, dlast, gb, True)
    return gb


def _gradient_buffers(p, u, delta, z, acc):
    dev = u.device
    bufs = dict(du=_memory.empty(u.shape, dtype=u.dtype, device=dev),
                ddelta=_memory.empty(u.shape, dtype=delta.dtype, device=dev),
                dB=torch.zeros((p["bt"], p["k"], p["g"], p["n"], p["L"]), dtype=acc, device=dev),
                dC=torch.zeros((p["bt"], p["k"], p["g"], p["n"], p["L"]), dtype=acc, device=dev),
                part=_memory.empty((p["rows"], p["bwd_nb"], p["n"] + 2), dtype=acc, device=dev), dz=None, y=None)
    if z is not None:
        bufs["dz"] = _memory.empty((p["bt"], p["dm"], p["L"]), dtype=z.dtype, device=dev)
        bufs["y"] = bufs["dz"] if p["k"] == 1 else _memory.empty(u.shape, dtype=acc, device=dev)
    return bufs


def backward(dout, dlast, u, delta, A, B, C, D, z, bias, checkpoints, geometry, softplus, chunk, needs):
    """Gradients (du, ddelta, dA, dB, dC, dD, dz, dbias) of the canonical inputs; None where not needed."""
    acc = checkpoints.dtype
    u, delta, A, B, C, D, z, bias, dout = _contiguous(u, delta, A, B, C, D, z, bias, dout)
    gb = backward_carries(dout, dlast.to(acc).contiguous(), delta, A, C, z, bias, geometry, softplus, chunk,
                          checkpoints.shape)
    p = _plan(u, A, B, geometry, chunk)
    g = _gradient_buffers(p, u, delta, z, acc)
    dummy = u
    _seg_backward_kernel[p["bwd_grid"]](
        u, delta, A, B, C, dummy if D is None else D, dummy if z is None else z, dummy if bias is None else bias,
        geometry, dout, checkpoints, gb, g["du"], g["ddelta"], g["dB"], g["dC"],
        g["du"] if g["y"] is None else g["y"], g["part"], p["k"], p["dm"], p["L"], p["n"], p["g"],
        p["dm"] // p["g"], p["slots"], p["bwd_nb"], DIRECT_DZ=p["k"] == 1, HAS_D=D is not None,
        HAS_Z=z is not None, HAS_BIAS=bias is not None, SOFTPLUS=bool(softplus), ACC=tl_dtype(acc),
        **p["bwd_meta"], **p["bwd_opts"])
    if z is not None and p["k"] > 1:
        _merge(p, g["y"], z, dout, g["dz"], True, acc)
    part = g["part"].view(p["bt"], p["k"], p["dm"], p["bwd_nb"], p["n"] + 2).sum(dim=(0, 3))
    # dA, dD, dbias: copies, not views of one buffer (a custom op's outputs may not alias each other)
    grads = (g["du"], g["ddelta"], part[..., :p["n"]].to(A.dtype, copy=True), g["dB"].to(B.dtype),
             g["dC"].to(C.dtype), None if D is None else part[..., p["n"]].to(D.dtype, copy=True), g["dz"],
             None if bias is None else part[..., p["n"] + 1].to(bias.dtype, copy=True))
    return tuple(t if need else None for t, need in zip(grads, needs))
