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

The backward kernels compute plain numbers, not a graph: the Function is
once-differentiable, so differentiating its gradients (``create_graph=True``,
e.g. a gradient penalty) raises an error instead of silently giving zero.
The ``reference`` backend is differentiable any number of times.
"""

from __future__ import annotations

import torch
from torch.autograd.function import once_differentiable


class SelectiveScan(torch.autograd.Function):
    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, z, delta_bias, geometry, delta_softplus, backend):
        chunk = backend.chunk_length(u.shape[-1], A.shape[-1], u.device)
        out, last, checkpoints = backend.forward(u, delta, A, B, C, D, z, delta_bias, geometry, delta_softplus, chunk)
        ctx.save_for_backward(u, delta, A, B, C, D, z, delta_bias, checkpoints)
        ctx.geometry, ctx.softplus, ctx.backend, ctx.chunk = geometry, delta_softplus, backend, chunk
        return out, last

    @staticmethod
    @once_differentiable
    def backward(ctx, dout, dlast):
        u, delta, A, B, C, D, z, delta_bias, checkpoints = ctx.saved_tensors
        grads = ctx.backend.backward(dout, dlast, u, delta, A, B, C, D, z, delta_bias, checkpoints, ctx.geometry,
                                     ctx.softplus, ctx.chunk, tuple(ctx.needs_input_grad[:8]))
        return (*grads, None, None, None)
