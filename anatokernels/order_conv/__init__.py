"""Order-aware causal depthwise conv1d over a 3D volume, read and written in native layout.

For order k (see :mod:`anatokernels.scan_order`) scan step t visits native
position π_k(t); the op runs a causal depthwise conv along that order:

    out[b, k, d, π_k(t)] = act(bias[k, d] + Σ_m weight[k, d, m] · x[b, k, d, π_k(t - (W-1) + m)])

with x before step 0 taken as 0, i.e. permute → ``F.conv1d`` with left
padding W-1 and groups=D → activation → un-permute, without the permutes.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from anatokernels import _checks, _dispatch
from anatokernels._library import backend_name
from anatokernels.order_conv import causal_conv1d, reference
from anatokernels.order_conv.function import order_conv1d_forward
from anatokernels.scan_order import check_orders, check_spatial, join_orders

SPEC = _dispatch.register(_dispatch.OpSpec(
    name="order_conv1d", package="anatokernels.order_conv",
    backends=("reference", "triton", "cuda", "cpu", "causal_conv1d"),
    extension_ops={"cpu": ("order_conv1d_fwd_cpu", "order_conv1d_bwd_cpu"),
                   "cuda": ("order_conv1d_fwd_cuda", "order_conv1d_bwd_cuda")}))

ACTIVATIONS = (None, "silu")

__all__ = ["order_conv1d"]


def order_conv1d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None, *,
                 spatial_shape: Sequence[int], orders: Sequence[str] | str, activation: str | None = "silu",
                 backend: str = "auto") -> torch.Tensor:
    """Causal depthwise conv along each scan order, in native layout.

    x: (B, K, D, L) float16/bfloat16/float32/float64, L = Z·Y·X in native raster
        order (x fastest); any strides (e.g. a (B, D, L) tensor expanded over K).
    weight: (K, D, W) with 2 <= W <= 4, ``F.conv1d``'s (D, 1, W) weight of order k
        without its singleton dim; bias: (K, D) or None. Same dtype and device as x.
    spatial_shape: (Z, Y, X). orders: K order strings, e.g. ("zyx", "-zyx", "yxz")
        (see :mod:`anatokernels.scan_order`; repeats allowed; a single string is one order).
    activation: "silu" or None.
    backend: ``"auto"`` or a name of :func:`anatokernels.backends`; ``"causal_conv1d"`` runs the external
        causal-conv1d package (CUDA only) and takes the native raster order only (every order ``"zyx"``).
    Returns (B, K, D, L) in x's dtype, differentiable in x, weight and bias
    (fp32 accumulation for low-precision inputs).
    """
    op = "order_conv1d"
    _checks.check_tensor(op, "x", x, ndim=4, layout="(B, K, D, L)")
    _checks.check_tensor(op, "weight", weight, ndim=3, layout="(K, D, W)")
    if bias is not None:
        _checks.check_tensor(op, "bias", bias, ndim=2, layout="(K, D)")
    device = _checks.check_same_device(op, x=x, weight=weight, bias=bias)
    _checks.check_same_dtype(op, x=x, weight=weight, bias=bias)
    _, k, d, length = x.shape
    spatial = check_spatial(spatial_shape, length, op)
    orders = check_orders(op, orders, k)
    _checks.check_dim(op, "weight", weight.shape[0], k, "K (number of orders)")
    _checks.check_dim(op, "weight", weight.shape[1], d, "D (channels)")
    if not 2 <= weight.shape[2] <= 4:
        raise ValueError(f"{op}: conv width W = weight.shape[2] must be 2, 3 or 4, got {weight.shape[2]}")
    if bias is not None and tuple(bias.shape) != (k, d):
        raise ValueError(f"{op}: bias must be (K, D) = ({k}, {d}), got {_checks.shape_str(bias.shape)}")
    if activation not in ACTIVATIONS:
        raise ValueError(f"{op}: activation must be 'silu' or None, got {activation!r}")
    if backend == "causal_conv1d":
        causal_conv1d.check_supported(orders, x.dtype)
    return _dispatch.dispatch(
        op, backend, device, fast=lambda impl: _fast(impl, x, weight, bias, spatial, orders, activation),
        reference=lambda: reference.order_conv1d(x, weight, bias, spatial, orders, activation))


def _fast(impl, x, weight, bias, spatial, orders, activation):
    """A fast backend: the shared custom op, or the causal-conv1d package's own autograd."""
    if impl is causal_conv1d:
        return causal_conv1d.order_conv1d(x, weight, bias, spatial, orders, activation)
    return order_conv1d_forward(x, weight.contiguous(), None if bias is None else bias.contiguous(), list(spatial),
                                join_orders(orders), activation == "silu", backend_name(impl))
