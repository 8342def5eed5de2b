"""Autograd for the fast backends, as custom ops. A backend module provides

    forward(x, weight, bias, geometry, silu) -> out (B, K, D, L)
    backward(grad, x, weight, bias, geometry, silu) -> dx (B, K, D, L), dweight (K, D, W), dbias (K, D)

with geometry the (K, 7) int64 rows of :meth:`OrderGeometry.as_ints` on the
data's device, and dweight/dbias in float32 (float64 for float64 inputs).

They run as the custom ops ``torch.ops.anatokernels.order_conv1d_{forward,backward}`` (see
:mod:`anatokernels._library`), which take the volume's (Z, Y, X) and the orders joined by commas
instead of the geometry (built, and cached, inside the op: nothing of it is traced) and the
backend's name last. The backward is once-differentiable: differentiating the gradients raises.
"""

from __future__ import annotations

import torch

from anatokernels import _checks, _dispatch, _library
from anatokernels.scan_order import geometry_of

OP = "order_conv1d"


def _forward_fake(x, weight, bias, spatial, orders, silu, backend):
    return x.new_empty(x.shape)


def _backward_fake(grad, x, weight, bias, spatial, orders, silu, backend):
    acc = _checks.accumulation_dtype(x)
    return (x.new_empty(x.shape), weight.new_empty(weight.shape, dtype=acc),
            weight.new_empty(weight.shape[:2], dtype=acc))


@_library.custom_op("order_conv1d_backward", fake=_backward_fake)
def order_conv1d_backward(grad: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                          spatial: list[int], orders: str, silu: bool,
                          backend: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """grad (B, K, D, L) contiguous -> (dx, dweight, dbias) of the backend contract."""
    impl = _dispatch.module(OP, backend)
    return impl.backward(grad, x, weight, bias, geometry_of(spatial, orders, x.device), silu)


def _context(ctx, inputs, output):
    x, weight, bias, spatial, orders, silu, backend = inputs
    ctx.save_for_backward(x, weight, bias)
    ctx.args = (spatial, orders, silu, backend)


def _backward(ctx, grad):
    x, weight, bias = ctx.saved_tensors
    dx, dweight, dbias = order_conv1d_backward(grad.contiguous(), x, weight, bias, *ctx.args)
    needs = ctx.needs_input_grad
    return (dx if needs[0] else None, dweight.to(weight.dtype) if needs[1] else None,
            dbias.to(bias.dtype) if needs[2] else None, None, None, None, None)


@_library.custom_op("order_conv1d_forward", fake=_forward_fake, backward=_backward, setup_context=_context)
def order_conv1d_forward(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, spatial: list[int],
                         orders: str, silu: bool, backend: str) -> torch.Tensor:
    """x (B, K, D, L) strided; weight (K, D, W) and bias (K, D) or None contiguous, in x's dtype."""
    impl = _dispatch.module(OP, backend)
    return impl.forward(x, weight, bias, geometry_of(spatial, orders, x.device), silu)
