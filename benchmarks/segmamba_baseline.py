"""The SegMamba-style PyTorch path that :class:`anatokernels.nn.Mamba3d` replaces, for benchmarks.

SegMamba's tri-oriented Mamba (``bimamba_type="v3"``) on a (B, C, Z, Y, X)
volume: tokens (B, L, C) -> in_proj -> xz (B, 2Di, L), then three complete
chains (causal conv, x_proj, dt_proj, selective scan with the silu(z) gate)
on xz, on a flipped copy and on an inter-slice re-stacked copy; the outputs
are flipped / permuted back, summed and passed through out_proj.

:class:`SegMambaStyle` runs that with the weights of a Mamba3d built with
orders ("zyx", "-zyx", "yxz"). ``scan`` is the per-direction selective scan:
:func:`selective_scan_ref` (mamba-ssm's pure-PyTorch reference: what SegMamba
runs without its CUDA kernels) or any function with the same signature.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from anatokernels.nn import Mamba3d


def selective_scan_ref(u, delta, A, B, C, D, z, delta_bias, delta_softplus=True):
    """mamba-ssm's ``selective_scan_ref`` (real A): u, delta, z (b, Di, L); A (Di, N); B, C (b, N, L) -> (b, Di, L).

    Like the original it materialises exp(δA) and δ·B·u as (b, Di, L, N) and loops over L. One change
    makes it a fair baseline: the per-step slices come from ``unbind`` (one backward node) instead of
    indexing, whose backward writes a full-size zero tensor per step and is quadratic in L.
    """
    dtype_in = u.dtype
    u, delta = u.float(), delta.float()
    delta = delta + delta_bias[..., None].float()
    if delta_softplus:
        delta = F.softplus(delta)
    delta_a = torch.exp(torch.einsum("bdl,dn->bdln", delta, A))
    delta_b_u = torch.einsum("bdl,bnl,bdl->bdln", delta, B.float(), u)
    x = A.new_zeros(u.shape[0], A.shape[0], A.shape[1])
    ys = []
    for a_t, bu_t, c_t in zip(delta_a.unbind(2), delta_b_u.unbind(2), C.float().unbind(2)):
        x = a_t * x + bu_t
        ys.append(torch.einsum("bdn,bn->bd", x, c_t))
    out = torch.stack(ys, dim=2) + u * D[:, None]
    return (out * F.silu(z.float())).to(dtype_in)


class SegMambaStyle(nn.Module):
    """SegMamba's flip / re-stack / permute computation with a Mamba3d's weights: (B, C, Z, Y, X) -> same."""

    def __init__(self, layer: Mamba3d, scan: Callable = selective_scan_ref):
        super().__init__()
        if layer.orders != ("zyx", "-zyx", "yxz"):
            raise ValueError(f"SegMambaStyle mirrors orders ('zyx', '-zyx', 'yxz'), got {layer.orders}")
        self.layer, self.scan = layer, scan

    def _direction(self, k: int, xz: torch.Tensor) -> torch.Tensor:
        m = self.layer
        length = xz.shape[-1]
        n, r = m.d_state, m.dt_rank
        u, z = xz.chunk(2, dim=1)
        u = F.silu(F.conv1d(u, m.conv_weight[k].unsqueeze(1), m.conv_bias[k], padding=m.d_conv - 1,
                            groups=m.d_inner)[..., :length])
        x_dbl = F.linear(u.transpose(1, 2).reshape(-1, m.d_inner), m.x_proj_weight[k])  # (b·L, R + 2N)
        dt, b_ssm, c_ssm = x_dbl.split([r, n, n], dim=-1)
        delta = (m.dt_proj_weight[k] @ dt.t()).reshape(m.d_inner, -1, length).transpose(0, 1)
        b_ssm = b_ssm.reshape(-1, length, n).transpose(1, 2).contiguous()
        c_ssm = c_ssm.reshape(-1, length, n).transpose(1, 2).contiguous()
        return self.scan(u, delta, -torch.exp(m.A_log[k].float()), b_ssm, c_ssm, m.D[k].float(), z,
                         m.dt_proj_bias[k].float(), True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = self.layer
        b, c, *spatial = x.shape
        n_slices = spatial[0]
        length = spatial[0] * spatial[1] * spatial[2]
        tokens = x.reshape(b, c, length).transpose(1, 2)  # (B, L, C)
        xz = F.linear(tokens, m.in_proj.weight).transpose(1, 2)  # (B, 2Di, L)
        out = self._direction(0, xz)
        out_b = self._direction(1, xz.flip([-1]))
        xz_s = torch.stack(xz.chunk(n_slices, dim=-1), dim=-1).flatten(-2)
        out_s = self._direction(2, xz_s)
        out_s = out_s.reshape(b, m.d_inner, length // n_slices, n_slices).permute(0, 1, 3, 2).flatten(-2)
        merged = (out + out_b.flip(-1) + out_s).transpose(1, 2)
        return F.linear(merged, m.out_proj.weight).transpose(1, 2).reshape(b, c, *spatial)
