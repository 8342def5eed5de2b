"""Autograd for the fast backends. A backend module provides

    forward(x, weight, bias, geometry, silu) -> out (B, K, D, L)
    backward(grad, x, weight, bias, geometry, silu) -> dx (B, K, D, L), dweight (K, D, W), dbias (K, D)

with geometry the (K, 7) int64 rows of :meth:`OrderGeometry.as_ints` on the
data's device, and dweight/dbias in float32 (float64 for float64 inputs).
"""

from __future__ import annotations

import torch
from torch.autograd.function import once_differentiable


class OrderConv1d(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, geometry, silu, backend):
        """x (B, K, D, L) strided; weight (K, D, W) and bias (K, D) or None contiguous, in x's dtype."""
        ctx.save_for_backward(x, weight, bias)
        ctx.geometry, ctx.silu, ctx.backend = geometry, silu, backend
        return backend.forward(x, weight, bias, geometry, silu)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        x, weight, bias = ctx.saved_tensors
        dx, dweight, dbias = ctx.backend.backward(grad.contiguous(), x, weight, bias, ctx.geometry, ctx.silu)
        needs = ctx.needs_input_grad
        return (dx if needs[0] else None, dweight.to(weight.dtype) if needs[1] else None,
                dbias.to(bias.dtype) if needs[2] else None, None, None, None)
