"""Selective scan (Mamba-1, real diagonal A): the 1-D scan and the multi-order 3D scan.

For batch b, channel d, state n:
    δ_t = softplus(δraw_t + bias_d) if delta_softplus else δraw_t + bias_d
    h_t[n] = exp(δ_t·A[d,n])·h_{t-1}[n] + δ_t·B_t[n]·u_t,   h_{-1} = 0
    y_t = Σ_n C_t[n]·h_t[n] + D_d·u_t,  then y_t·silu(z_t) if z is given

:func:`selective_scan3d` runs K such scans over one volume, order k visiting
native position π_k(t) at step t (see :mod:`anatokernels.scan_order`), and sums
them at native positions before the gate. The fast backends read and write the
native layout directly and keep only chunk-boundary states for the backward.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from anatokernels import _checks, _dispatch
from anatokernels._library import backend_name
from anatokernels.scan_order import check_orders, check_spatial, join_orders
from anatokernels.selective_scan import reference
from anatokernels.selective_scan.function import selective_scan3d_forward

_COMMON = dict(package="anatokernels.selective_scan",
               backends=("reference", "triton", "cuda", "cpu", "triton_segment", "cuda_segment"),
               # triton_segment is by name only until a GPU run: its static figures are 2x lower than the chunked
               # Triton scan's, but it keeps 2x u's size of segment states for the backward (chunked: 1/chunk).
               # cuda_segment (the segment scan in CUDA) is by name only too, and unverified until its sources'
               # digest is recorded after a GPU run (it never ran on one).
               gpu_preference=("cuda", "triton"),
               extension_ops={"cpu": ("selective_scan3d_fwd_cpu", "selective_scan3d_bwd_cpu"),
                              "cuda": ("selective_scan3d_fwd_cuda", "selective_scan3d_bwd_cuda"),
                              "cuda_segment": ("selective_scan3d_segment_fwd_cuda",
                                               "selective_scan3d_segment_bwd_cuda")})
SCAN = _dispatch.register(_dispatch.OpSpec(name="selective_scan", **_COMMON))
SCAN3D = _dispatch.register(_dispatch.OpSpec(name="selective_scan3d", **_COMMON))

__all__ = ["selective_scan", "selective_scan3d"]


def _check_common(op: str, u, delta, A, D, z, delta_bias, B, C) -> None:
    """Devices and dtypes: u, delta, B, C, z share one float dtype; A, D, delta_bias may be any float dtype."""
    _checks.check_same_device(op, u=u, delta=delta, A=A, B=B, C=C, D=D, z=z, delta_bias=delta_bias)
    _checks.check_same_dtype(op, u=u, delta=delta, B=B, C=C, z=z)
    if any(s == 0 for s in u.shape) or A.shape[-1] == 0:
        raise ValueError(f"{op}: every dimension must be non-empty, got u {_checks.shape_str(u.shape)} "
                         f"and A {_checks.shape_str(A.shape)}")


def selective_scan(u: torch.Tensor, delta: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor,
                   D: torch.Tensor | None = None, z: torch.Tensor | None = None,
                   delta_bias: torch.Tensor | None = None, delta_softplus: bool = False,
                   return_last_state: bool = False, *, backend: str = "auto"):
    """Mamba's ``selective_scan_fn`` with a real A.

    u, delta: (B, D, L). A: (D, N). B, C: (B, N, L), or grouped (B, G, N, L)
    with G dividing D (channel d uses group d // (D/G)); B and C have the same
    shape. Either may instead be time-invariant, (D, N) (mamba's
    ``is_variable_B/C=False``), in any float dtype: it is cast to u's dtype at
    (D, N) and broadcast (``expand``, no copy) to per-channel groups (B, D, N, L),
    which the cpu/cuda/triton kernels read through its strides (triton_segment
    and cuda_segment copy it); the other of B, C is then broadcast to per-channel groups too (a
    copy if it is grouped with 1 < G < D). The backward writes that tensor's
    gradient at the full (B, D, N, L) size before summing it over batch and time in
    float32 into the (D, N) gradient. D, delta_bias: (D,). z: (B, D, L). u, delta, B, C, z share one
    dtype (float16/bfloat16/float32/float64); A, D, delta_bias may be float32
    parameters. Returns y (B, D, L) in u's dtype, or ``(y, last_state)`` with
    last_state h_{L-1} of shape (B, D, N) in float32 (float64 for float64
    inputs). Differentiable in every tensor, last_state included.
    """
    op = "selective_scan"
    _checks.check_tensor(op, "u", u, ndim=3, layout="(B, D, L)")
    _checks.check_tensor(op, "A", A, ndim=2, layout="(D, N)")
    B, C = _variable_b_c(op, u, A, B, C)
    batch, dim, length = u.shape
    n_state = A.shape[1]
    _checks.check_shape(op, "delta", delta, (batch, dim, length), "(B, D, L)")
    _checks.check_dim(op, "A", A.shape[0], dim, "D (channels, u.shape[1])")
    groups = B.shape[1] if B.dim() == 4 else 1
    expected = (batch, groups, n_state, length) if B.dim() == 4 else (batch, n_state, length)
    layout = "(B, G, N, L)" if B.dim() == 4 else "(B, N, L)"
    _checks.check_shape(op, "B", B, expected, layout)
    if tuple(C.shape) != tuple(B.shape):
        raise ValueError(f"{op}: C must have B's shape {_checks.shape_str(B.shape)}, got {_checks.shape_str(C.shape)}")
    if groups == 0 or dim % groups:
        raise ValueError(f"{op}: the number of groups G={groups} of B and C must divide D={dim}")
    _checks.check_shape(op, "D", D, (dim,), "(D,)", optional=True)
    _checks.check_shape(op, "delta_bias", delta_bias, (dim,), "(D,)", optional=True)
    _checks.check_shape(op, "z", z, (batch, dim, length), "(B, D, L)", optional=True)
    _check_common(op, u, delta, A, D, z, delta_bias, B, C)
    return _dispatch.dispatch(
        op, backend, u.device,
        fast=lambda impl: _scan_fast(impl, u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state),
        reference=lambda: reference.selective_scan(u, delta, A, B, C, D, z, delta_bias, delta_softplus,
                                                   return_last_state))


def _variable_b_c(op: str, u: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor):
    """B and C as given, or, where either is time-invariant (D, N), both in the grouped per-channel
    layout (batch, D, N, L): mamba's ``is_variable_B/C=False`` mapped onto the variable kernels."""
    for name, t in (("B", B), ("C", C)):
        _checks.check_tensor(op, name, t, layout="(B, N, L), (B, G, N, L) or time-invariant (D, N)")
        if t.dim() not in (2, 3, 4):
            raise ValueError(f"{op}: {name} must be (B, N, L), (B, G, N, L) or time-invariant (D, N), got shape "
                             f"{_checks.shape_str(t.shape)}")
    if B.dim() != 2 and C.dim() != 2:
        return B, C
    batch, dim, length = u.shape
    per_channel = (batch, dim, A.shape[1], length)

    def broadcast(name, t):
        if t.dim() == 2:
            if t.shape != A.shape:
                raise ValueError(f"{op}: {name} must be 3-D (B, N, L), 4-D (B, G, N, L) or time-invariant (D, N) = "
                                 f"A's shape {_checks.shape_str(A.shape)}, got {_checks.shape_str(t.shape)}")
            return _BroadcastInvariant.apply(t, per_channel, u.dtype)
        if t.dim() == 3:
            t = t.unsqueeze(1)
        groups = t.shape[1]
        if t.shape[0] != batch or t.shape[2:] != per_channel[2:] or groups == 0 or dim % groups:
            return t  # wrong shape: the checks below name it
        return t.unsqueeze(2).expand(batch, groups, dim // groups, *per_channel[2:]).reshape(per_channel)

    return broadcast("B", B), broadcast("C", C)


class _BroadcastInvariant(torch.autograd.Function):
    """(D, N) -> (batch, D, N, L) in ``dtype`` without a copy; the backward sums over batch and time in float32
    (float64 for float64) and returns the (D, N) gradient in the parameter's own dtype."""

    @staticmethod
    def forward(ctx, weight, shape, dtype):
        ctx.weight_dtype = weight.dtype
        return weight.to(dtype)[None, :, :, None].expand(shape)

    @staticmethod
    def backward(ctx, grad):
        acc = torch.float64 if torch.float64 in (grad.dtype, ctx.weight_dtype) else torch.float32
        return grad.sum(dim=(0, 3), dtype=acc).to(ctx.weight_dtype), None, None


def _scan_fast(impl, u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state):
    """The 1-D scan as the canonical layout's K=1, order "zyx" over spatial (1, 1, L)."""
    grouped_b = B.unsqueeze(1) if B.dim() == 4 else B[:, None, None]
    grouped_c = C.unsqueeze(1) if C.dim() == 4 else C[:, None, None]
    out, last, _ = selective_scan3d_forward(
        u.unsqueeze(1), delta.unsqueeze(1), A.unsqueeze(0), grouped_b, grouped_c,
        None if D is None else D.unsqueeze(0), z, None if delta_bias is None else delta_bias.unsqueeze(0),
        [1, 1, u.shape[-1]], "zyx", bool(delta_softplus), backend_name(impl))
    return (out, last[:, 0]) if return_last_state else out


def selective_scan3d(u: torch.Tensor, delta: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor,
                     D: torch.Tensor | None = None, z: torch.Tensor | None = None,
                     delta_bias: torch.Tensor | None = None, delta_softplus: bool = False, *,
                     spatial_shape: Sequence[int], orders: Sequence[str] | str,
                     backend: str = "auto") -> torch.Tensor:
    """K selective scans over one volume, each along its own scan order, all in native layout.

    u, delta: (B, K, D, L) with L = Z·Y·X in native raster order (x fastest).
    A: (K, D, N). B, C: (B, K, N, L). D, delta_bias: (K, D). z: (B, D, L).
    spatial_shape: (Z, Y, X). orders: K order strings (e.g. ``("zyx", "-zyx",
    "yxz")``; see :mod:`anatokernels.scan_order`), repeats allowed.
    Returns (B, D, L) in u's dtype: Σ_k y_k with y_k the scan of order k put
    back at native positions (its D_k·u_k skip included), times silu(z) if z is
    given. No permuted copy of any tensor is made by the fast backends.
    """
    op = "selective_scan3d"
    _checks.check_tensor(op, "u", u, ndim=4, layout="(B, K, D, L)")
    _checks.check_tensor(op, "A", A, ndim=3, layout="(K, D, N)")
    _checks.check_tensor(op, "B", B, ndim=4, layout="(B, K, N, L)")
    batch, k_orders, dim, length = u.shape
    n_state = A.shape[2]
    orders = check_orders(op, orders, k_orders)
    spatial = check_spatial(spatial_shape, length, op)
    _checks.check_shape(op, "delta", delta, (batch, k_orders, dim, length), "(B, K, D, L)")
    _checks.check_shape(op, "A", A, (k_orders, dim, n_state), "(K, D, N)")
    _checks.check_shape(op, "B", B, (batch, k_orders, n_state, length), "(B, K, N, L)")
    _checks.check_shape(op, "C", C, (batch, k_orders, n_state, length), "(B, K, N, L)")
    _checks.check_shape(op, "D", D, (k_orders, dim), "(K, D)", optional=True)
    _checks.check_shape(op, "delta_bias", delta_bias, (k_orders, dim), "(K, D)", optional=True)
    _checks.check_shape(op, "z", z, (batch, dim, length), "(B, D, L)", optional=True)
    _check_common(op, u, delta, A, D, z, delta_bias, B, C)
    return _dispatch.dispatch(
        op, backend, u.device,
        fast=lambda impl: selective_scan3d_forward(u, delta, A, B.unsqueeze(2), C.unsqueeze(2), D, z, delta_bias,
                                                   list(spatial), join_orders(orders), bool(delta_softplus),
                                                   backend_name(impl))[0],
        reference=lambda: reference.selective_scan3d(u, delta, A, B, C, D, z, delta_bias, delta_softplus,
                                                     spatial_shape=spatial, orders=orders))
