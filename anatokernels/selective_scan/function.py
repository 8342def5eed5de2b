"""Autograd for the fast backends of the selective scan.

Every fast backend module (``triton``, ``cpu``, ``cuda``) works on one
canonical layout, which covers both public ops (the 1-D scan is K=1, order
"zyx", spatial (1, 1, L)):

    u, delta     (Bt, K, Dm, L)     activations, native raster positions
    A            (K, Dm, N)
    B, C         (Bt, K, G, N, L)   channel d reads group d // (Dm / G)
    D, bias      (K, Dm) or None
    z            (Bt, Dm, L) or None
    geometry     (K, 7) int64 on the data's device: rows (n0, n1, n2, stride0, stride1, stride2, reverse)
                 of :func:`anatokernels.scan_order.geometry_tensor`

and provides

    chunk_length(L, N, device) -> int
    forward(u, delta, A, B, C, D, z, bias, geometry, softplus, chunk)
        -> out (Bt, Dm, L) in u's dtype, last state (Bt, K, Dm, N) and
           checkpoints (Bt, K, Dm, ceil(L / chunk), N): the state before each chunk
    backward(dout, dlast, u, delta, A, B, C, D, z, bias, checkpoints, geometry, softplus, chunk, needs)
        -> (du, ddelta, dA, dB, dC, dD, dz, dbias), None where ``needs`` is False

and, where its checkpoints' dim 3 is not ceil(L / chunk), ``checkpoint_slots(spatial, orders, chunk)``
giving it without a geometry tensor (for the op's fake kernel).

They run as the custom ops ``torch.ops.anatokernels.selective_scan3d_{forward,backward}`` (see
:mod:`anatokernels._library`), which take the volume's (Z, Y, X) and the orders joined by commas
instead of the geometry (built, and cached, inside the op) and the backend's name last; the chunk
length is the backend's ``chunk_length`` in both, and an absent gradient is an empty tensor.

The backward kernels compute plain numbers, not a graph: the op is
once-differentiable, so differentiating its gradients (``create_graph=True``,
e.g. a gradient penalty) raises an error instead of silently giving zero.
The ``reference`` backend is differentiable any number of times.
"""

from __future__ import annotations

import torch

from anatokernels import _checks, _dispatch, _library
from anatokernels.scan_order import geometry_of

OP = "selective_scan3d"
Tensors = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor,
                torch.Tensor]


def _chunk(backend: str, u: torch.Tensor, A: torch.Tensor) -> int:
    return _dispatch.module(OP, backend).chunk_length(u.shape[-1], A.shape[-1], u.device)


def _forward_fake(u, delta, A, B, C, D, z, bias, spatial, orders, softplus, backend):
    bt, k, dm, length = u.shape
    n = A.shape[2]
    acc = _checks.accumulation_dtype(u, delta, A, B, C, D, z, bias)
    impl = _dispatch.module(OP, backend)
    if isinstance(length, torch.SymInt):  # a symbolic L (export with a dynamic spatial dim): an unbacked count,
        chunks = torch.library.get_ctx().new_dynamic_size()  # since a backed one makes torch guard on its value
    elif hasattr(impl, "checkpoint_slots"):
        chunks = impl.checkpoint_slots(spatial, orders.split(","), _chunk(backend, u, A))
    else:
        chunks = -(-length // _chunk(backend, u, A))
    return (u.new_empty((bt, dm, length)), u.new_empty((bt, k, dm, n), dtype=acc),
            u.new_empty((bt, k, dm, chunks, n), dtype=acc))


def _backward_fake(dout, dlast, u, delta, A, B, C, D, z, bias, checkpoints, spatial, orders, softplus, needs,
                   backend):
    inputs = (u, delta, A, B, C, D, z, bias)
    return tuple(t.new_empty(t.shape) if need else u.new_empty(0) for t, need in zip(inputs, needs))


@_library.custom_op("selective_scan3d_backward", fake=_backward_fake)
def selective_scan3d_backward(dout: torch.Tensor, dlast: torch.Tensor, u: torch.Tensor, delta: torch.Tensor,
                              A: torch.Tensor, B: torch.Tensor, C: torch.Tensor, D: torch.Tensor | None,
                              z: torch.Tensor | None, bias: torch.Tensor | None, checkpoints: torch.Tensor,
                              spatial: list[int], orders: str, softplus: bool, needs: list[bool],
                              backend: str) -> Tensors:
    """(du, ddelta, dA, dB, dC, dD, dz, dbias), each in its input's dtype; empty where not ``needs``."""
    grads = _dispatch.module(OP, backend).backward(
        dout, dlast, u, delta, A, B, C, D, z, bias, checkpoints, geometry_of(spatial, orders, u.device), softplus,
        _chunk(backend, u, A), tuple(needs))
    return tuple(u.new_empty(0) if g is None else g for g in grads)


def _context(ctx, inputs, output):
    ctx.save_for_backward(*inputs[:8], output[2])
    ctx.args = inputs[8:]
    ctx.mark_non_differentiable(output[2])


def _backward(ctx, dout, dlast, _):
    *inputs, checkpoints = ctx.saved_tensors
    needs = list(ctx.needs_input_grad[:8])
    grads = selective_scan3d_backward(dout, dlast, *inputs, checkpoints, *ctx.args[:3], needs, ctx.args[3])
    return (*(g if need else None for g, need in zip(grads, needs)), None, None, None, None)


@_library.custom_op("selective_scan3d_forward", fake=_forward_fake, backward=_backward, setup_context=_context)
def selective_scan3d_forward(u: torch.Tensor, delta: torch.Tensor, A: torch.Tensor, B: torch.Tensor,
                             C: torch.Tensor, D: torch.Tensor | None, z: torch.Tensor | None,
                             bias: torch.Tensor | None, spatial: list[int], orders: str, softplus: bool,
                             backend: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Canonical layout -> (out (Bt, Dm, L) in u's dtype, last state (Bt, K, Dm, N), checkpoints)."""
    return _dispatch.module(OP, backend).forward(u, delta, A, B, C, D, z, bias, geometry_of(spatial, orders, u.device),
                                                 softplus, _chunk(backend, u, A))
