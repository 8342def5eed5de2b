"""CUDA segment-parallel selective scan: backend ``cuda_segment`` (csrc/selective_scan_segment/), by name only.

``torch.ops.anatokernels.selective_scan3d_segment_{fwd,bwd}_cuda``: the backend contract of ``function.py``
(canonical layout), the design of :mod:`.triton_segment` with the layout CUDA allows: one thread owns one
(channel, segment) and keeps all N states in registers, so the step loop is sequential, Σ_n C·h is an
in-register sum and there is no cross-lane traffic. Segments are ``CHUNK`` = 64 steps of the order's fastest
axis (``kSegmentSteps``: one segment per row at 64³), read in place from a start position and a ±stride.

Forward: summaries, carry over segments, output (D skip; z gate when K = 1), then the K-order merge through a
(Bt, K, Dm, L) buffer (no atomics). Its "checkpoints" are the states entering each segment,
(Bt, K, Dm, S_max + 1, N), slot S_k of order k holding its last state: the layout of :mod:`.triton_segment`'s.
Backward: reverse summaries, reverse carry from dlast, then per segment the reverse walk in chunks of 8 steps,
each chunk's entering states recomputed from the segment's start or its middle, in blocks of 4 channels of one
B/C group × 32 segments; dB and dC are summed over the block's channels in shared memory and added with one
relaxed atomic per block and word, dA/dD/dδ-bias summed over the warp first; dz from a (Bt, K, Dm, L) buffer
of the y_k when K > 1. N <= 64 (up to 16 states unrolled in registers; 32 and 64 keep the backward's
per-state arrays in local memory).

The per-thread arithmetic is ``segment_walk.h`` and ``segment_backward.h``, which the CPU tests run through a
host build (tests/kernels/test_selective_scan_cuda_segment.py); the compile contracts measure its kernels'
SASS (benchmarks/static). **These kernels have never run on a GPU**: the backend is ``unverified`` on every
GPU (no digest of csrc/selective_scan_segment/ in ``_dispatch.CUDA_TESTED_SOURCES``), runs only when asked
for by name, and is never picked by ``auto``; ``pytest -m gpu`` in that test file checks it against the
reference.
"""

from __future__ import annotations

import torch
from torch.utils.weak import WeakIdKeyDictionary

from anatokernels import _checks, _extension, _memory
from anatokernels.selective_scan._compiled import _param

CHUNK = 64  # kSegmentSteps in csrc/selective_scan_segment/selective_scan_segment_cuda.h
_SLOTS = WeakIdKeyDictionary()  # geometry tensor -> slots (read to the host once per tensor)


def chunk_length(length: int, n_state: int, device: torch.device) -> int:
    return CHUNK


def _slots_of(rows, chunk: int) -> int:
    """1 + max_k S_k, S_k = n0·n1·cdiv(n2, chunk) segments of order k (rows: (n0, n1, n2, ...))."""
    return 1 + max(r[0] * r[1] * -(-r[2] // chunk) for r in rows)


def checkpoint_slots(spatial, orders, chunk: int) -> int:
    """The checkpoints' length (dim 3) without a geometry tensor (for the op's fake kernel)."""
    from anatokernels.scan_order import order_geometry

    return _slots_of([order_geometry(spatial, o).sizes for o in orders], chunk)


def _slots(geometry: torch.Tensor, chunk: int) -> int:
    slots = _SLOTS.get(geometry)
    if slots is None:
        slots = _SLOTS[geometry] = _slots_of(geometry.tolist(), chunk)
    return slots


def forward(u, delta, A, B, C, D, z, bias, geometry, softplus, chunk):
    """Canonical layout -> out (Bt, Dm, L) in u's dtype, last (Bt, K, Dm, N), segment states (checkpoints)."""
    acc = _checks.accumulation_dtype(u, delta, A, B, C, D, z, bias)
    u, delta, B, C = (t.contiguous() for t in (u, delta, B, C))
    z = None if z is None else z.contiguous()
    bt, k_orders, dm, length = u.shape
    n_state, slots, dev = A.shape[2], _slots(geometry, chunk), u.device
    out = _memory.empty((bt, dm, length), dtype=acc, device=dev)
    last = _memory.empty((bt, k_orders, dm, n_state), dtype=acc, device=dev)
    states = _memory.empty((bt, k_orders, dm, slots, n_state), dtype=acc, device=dev)
    sums = torch.empty((bt, k_orders, dm, slots), dtype=acc, device=dev)
    y = _memory.empty(u.shape, dtype=acc, device=dev) if k_orders > 1 else out
    _extension.op("selective_scan3d_segment_fwd_cuda")(
        u, delta, _param(A, acc), B, C, _param(D, acc), z, _param(bias, acc), geometry, bool(softplus), chunk,
        out, last, states, sums, y)
    return out.to(u.dtype), last, states


def backward(dout, dlast, u, delta, A, B, C, D, z, bias, checkpoints, geometry, softplus, chunk, needs):
    """Gradients (du, ddelta, dA, dB, dC, dD, dz, dbias) of the canonical inputs; None where not ``needs``.

    checkpoints: the forward's segment states (Bt, K, Dm, slots, N). The kernels compute every gradient."""
    acc = checkpoints.dtype
    u, delta, B, C = (t.contiguous() for t in (u, delta, B, C))
    z = None if z is None else z.contiguous()
    bt, k_orders, dm, length = u.shape
    dev = u.device
    grad = lambda shape, dtype=acc: _memory.empty(shape, dtype=dtype, device=dev)
    none = checkpoints.new_empty(0)
    du, ddelta = grad(u.shape, u.dtype), grad(u.shape, u.dtype)
    dA, dB, dC = grad(A.shape), grad(B.shape), grad(B.shape)
    dD = grad((k_orders, dm)) if D is not None else none
    dbias = grad((k_orders, dm)) if bias is not None else none
    dz = grad((bt, dm, length)) if z is not None else none
    y = grad(u.shape) if z is not None and k_orders > 1 else none  # the y_k, for dz
    gstates, sums = grad(checkpoints.shape), grad(checkpoints.shape[:4])
    _extension.op("selective_scan3d_segment_bwd_cuda")(
        dout.to(u.dtype).contiguous(), dlast.to(acc).contiguous(), u, delta, _param(A, acc), B, C, _param(D, acc), z,
        _param(bias, acc), checkpoints.contiguous(), geometry, bool(softplus), chunk, du, ddelta, dA, dB, dC, dD, dz,
        dbias, gstates, sums, y)
    grads = (du, ddelta.to(delta.dtype), dA.to(A.dtype), dB.to(B.dtype), dC.to(C.dtype),
             None if D is None else dD.to(D.dtype), None if z is None else dz.to(z.dtype),
             None if bias is None else dbias.to(bias.dtype))
    return tuple(g if need else None for g, need in zip(grads, needs))
