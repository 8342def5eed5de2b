"""CUDA segment-parallel selective scan, forward (``torch.ops.anatokernels.selective_scan3d_segment_fwd_cuda``,
csrc/selective_scan_segment/).

The forward of the backend contract in ``function.py`` (canonical layout), the design of :mod:`.triton_segment`
with the layout CUDA allows: one thread owns one (channel, segment) and keeps all N states in registers, so the
step loop is sequential, Σ_n C·h is an in-register sum and there is no cross-lane traffic. Segments are
``CHUNK`` = 64 steps of the order's fastest axis (``kSegmentSteps``: one segment per row at 64³), read in place
from a start position and a ±stride. Phases: summaries, carry over segments, output (D skip; z gate when K = 1),
then the K-order merge through a (Bt, K, Dm, L) buffer (no atomics). Its "checkpoints" are the states entering
each segment, (Bt, K, Dm, S_max + 1, N), slot S_k of order k holding its last state: the layout of
:mod:`.triton_segment`'s.

The per-thread arithmetic is ``segment_walk.h``, which the CPU tests run through a host build
(tests/kernels/test_selective_scan_cuda_segment.py). Not yet a backend of the ops: it has no backward, and its
kernels have not run on a GPU (``-m gpu`` in that test file checks this forward there).
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
