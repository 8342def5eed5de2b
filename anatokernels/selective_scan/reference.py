"""Plain PyTorch reference for the selective scan: a sequential loop over the sequence.

Math (Mamba-1, real diagonal A), for batch b, channel d, state n:
    δ_t = softplus(δraw_t + bias_d) if delta_softplus else δraw_t + bias_d
    h_t[n] = exp(δ_t·A[d,n])·h_{t-1}[n] + δ_t·B_t[n]·u_t,   h_{-1} = 0
    y_t = Σ_n C_t[n]·h_t[n] + D_d·u_t,  then y_t·silu(z_t) if z is given

Computed in float32 (float64 if any input is float64); the result has u's
dtype. Autograd gives every gradient. It materialises (B, D, N) per step and
keeps all of them for the backward: fine for tests, slow and large otherwise.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from anatokernels._checks import accumulation_dtype
from anatokernels.scan_order import scan_order


def _scan(u, delta, A, B, C, D, delta_bias, delta_softplus, dtype):
    """Ungated scan in ``dtype``: u, delta (Bt, Dm, L); A (Dm, N); B, C (Bt, G, N, L); D, delta_bias (Dm,).

    Returns y (Bt, Dm, L) including the D·u skip, and the last state (Bt, Dm, N).
    """
    bt, dm, length = u.shape
    n_state = A.shape[1]
    groups = B.shape[1]
    per_group = dm // groups
    u, delta, A, B, C = (t.to(dtype) for t in (u, delta, A, B, C))
    if delta_bias is not None:
        delta = delta + delta_bias.to(dtype)[:, None]
    if delta_softplus:
        delta = F.softplus(delta)
    # channels split as (group, channel in group) so that B_t, C_t of a group broadcast over its channels
    u_g = u.view(bt, groups, per_group, length)
    delta_g = delta.view(bt, groups, per_group, length)
    A_g = A.view(groups, per_group, n_state)
    h = torch.zeros(bt, groups, per_group, n_state, dtype=dtype, device=u.device)
    ys = []
    # unbind once: indexing step t inside the loop would make the backward O(L^2)
    steps = zip(delta_g.unbind(-1), u_g.unbind(-1), B.unbind(-1), C.unbind(-1))
    for d_t, u_t, b_t, c_t in steps:
        d_t = d_t[..., None]
        h = torch.exp(d_t * A_g) * h + (d_t * u_t[..., None]) * b_t[:, :, None]
        ys.append((h * c_t[:, :, None]).sum(-1))
    y = torch.stack(ys, dim=-1).reshape(bt, dm, length)
    if D is not None:
        y = y + D.to(dtype)[:, None] * u
    return y, h.reshape(bt, dm, n_state)


def selective_scan(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                   return_last_state=False):
    """u, delta, z (Bt, Dm, L); A (Dm, N); B, C (Bt, N, L) or (Bt, G, N, L); D, delta_bias (Dm,).

    Returns y (Bt, Dm, L) in u's dtype, and with ``return_last_state`` also
    h_{L-1} (Bt, Dm, N) in the compute dtype (float32, or float64).
    """
    dtype = accumulation_dtype(u, delta, A, B, C, D, z, delta_bias)
    if B.dim() == 3:
        B, C = B.unsqueeze(1), C.unsqueeze(1)
    y, last = _scan(u, delta, A, B, C, D, delta_bias, delta_softplus, dtype)
    if z is not None:
        y = y * F.silu(z.to(dtype))
    y = y.to(u.dtype)
    return (y, last) if return_last_state else y


def selective_scan3d(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False, *,
                     spatial_shape: Sequence[int], orders: Sequence[str]):
    """K scan orders over one volume, inputs in native raster layout.

    u, delta (Bt, K, Dm, L); A (K, Dm, N); B, C (Bt, K, N, L); D, delta_bias (K, Dm);
    z (Bt, Dm, L); L = Z·Y·X. Returns (Bt, Dm, L) in u's dtype:
    Σ_k y_k (y_k scanned along order k, put back at native positions), times silu(z).
    """
    dtype = accumulation_dtype(u, delta, A, B, C, D, z, delta_bias)
    total = None
    for k, order in enumerate(orders):
        pi = scan_order(spatial_shape, order).to(u.device)
        y_k, _ = _scan(u[:, k][..., pi], delta[:, k][..., pi], A[k], B[:, k, None][..., pi], C[:, k, None][..., pi],
                       None if D is None else D[k], None if delta_bias is None else delta_bias[k],
                       delta_softplus, dtype)
        native = torch.zeros_like(y_k).index_copy(-1, pi, y_k)
        total = native if total is None else total + native
    if z is not None:
        total = total * F.silu(z.to(dtype))
    return total.to(u.dtype)
