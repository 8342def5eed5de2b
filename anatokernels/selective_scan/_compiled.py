"""Calls into the compiled selective-scan ops; ``cpu.py`` and ``cuda.py`` bind the device suffix.

The compiled kernels take the canonical layout of ``function.py``. Activations
(u, delta, B, C, z, dout) go in as they are, strided, in their own dtype; A, D
and delta_bias go in contiguous in the accumulation dtype (float32, or float64
when any input is float64), which is also the dtype of every output buffer
except du and ddelta. Outputs are cast back to the inputs' dtypes here.
"""

from __future__ import annotations

import torch

from anatokernels import _checks, _extension, _memory


def _param(t: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor | None:
    return None if t is None else t.detach().to(dtype).contiguous()


def forward(suffix, u, delta, A, B, C, D, z, bias, geometry, softplus, chunk):
    """Canonical layout -> out (Bt, Dm, L) in u's dtype, last (Bt, K, Dm, N), checkpoints (Bt, K, Dm, NC, N)."""
    bt, k_orders, dm, length = u.shape
    n_state = A.shape[2]
    acc = _checks.accumulation_dtype(u, delta, A, B, C, D, z, bias)
    dev = u.device
    out = _memory.empty((bt, dm, length), dtype=acc, device=dev)
    last = _memory.empty((bt, k_orders, dm, n_state), dtype=acc, device=dev)
    checkpoints = _memory.empty((bt, k_orders, dm, -(-length // chunk), n_state), dtype=acc, device=dev)
    _extension.op(f"selective_scan3d_fwd_{suffix}")(
        u, delta, _param(A, acc), B, C, _param(D, acc), z, _param(bias, acc), geometry, bool(softplus), chunk,
        out, last, checkpoints)
    return out.to(u.dtype), last, checkpoints


def backward(suffix, dout, dlast, u, delta, A, B, C, D, z, bias, checkpoints, geometry, softplus, chunk, needs):
    """Gradients (du, ddelta, dA, dB, dC, dD, dz, dbias) of the canonical inputs; None where not needed."""
    bt, k_orders, dm, length = u.shape
    acc = checkpoints.dtype
    dev = u.device
    du = _memory.empty(u.shape, dtype=u.dtype, device=dev)
    ddelta = _memory.empty(u.shape, dtype=u.dtype, device=dev)
    dA = _memory.empty(A.shape, dtype=acc, device=dev)
    dB = _memory.empty(B.shape, dtype=acc, device=dev)
    dC = _memory.empty(B.shape, dtype=acc, device=dev)
    dD = _memory.empty((k_orders, dm), dtype=acc, device=dev) if D is not None else dA.new_empty(0)
    dbias = _memory.empty((k_orders, dm), dtype=acc, device=dev) if bias is not None else dA.new_empty(0)
    dz = _memory.empty((bt, dm, length), dtype=acc, device=dev) if z is not None else dA.new_empty(0)
    _extension.op(f"selective_scan3d_bwd_{suffix}")(
        dout.to(u.dtype), dlast.to(acc).contiguous(), u, delta, _param(A, acc), B, C, _param(D, acc), z,
        _param(bias, acc), checkpoints, geometry, bool(softplus), chunk, du, ddelta, dA, dB, dC, dD, dz, dbias)
    grads = (du, ddelta.to(delta.dtype), dA.to(A.dtype), dB.to(B.dtype), dC.to(C.dtype),
             None if D is None else dD.to(D.dtype), None if z is None else dz.to(z.dtype),
             None if bias is None else dbias.to(bias.dtype))
    return tuple(g if need else None for g, need in zip(grads, needs))
