"""Mamba3d: a Mamba-1 mixer over a 3D volume, scanned along several orders in native layout.

It holds the parameters of SegMamba's tri-oriented Mamba (per-order conv,
x_proj, dt_proj, A_log and D; shared in_proj and out_proj) but never flips,
transposes or re-slices the token tensor: the per-order conv is
:func:`anatokernels.order_conv1d` and the per-order scans, their merge and the
silu(z) gate are one :func:`anatokernels.selective_scan3d` call. The
projections are matmuls on the (B, C, L) layout of the volume itself.

causal-conv1d is not used: it is CUDA-only, takes one order per call on a
permuted copy, cannot be installed on this project's machines, and has never
been measured faster than ``order_conv1d``; it would only be worth wiring in
where it is installed and a GPU benchmark shows it ahead.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint as run_checkpointed

from anatokernels import _dispatch
from anatokernels.nn._config import register_config, reset_config
from anatokernels.order_conv import order_conv1d
from anatokernels.scan_order import ALL_ORDERS, check_orders
from anatokernels.selective_scan import selective_scan3d

_CONFIG = "scan_orders"  # buffer: each order's index in ALL_ORDERS, checked on load_state_dict


def _describe(indices) -> str:
    return f"orders {tuple(ALL_ORDERS[i] if 0 <= i < len(ALL_ORDERS) else i for i in indices)}"


class Mamba3d(nn.Module):
    """Multi-order Mamba mixer: (B, C, Z, Y, X) -> (B, C, Z, Y, X), C = ``dim``.

    With Di = expand·dim, N = d_state, R = dt_rank, K = len(orders), W = d_conv:
      in_proj: Linear(dim, 2·Di) giving x and the gate z (shared by all orders)
      conv_weight (K, Di, W), conv_bias (K, Di): causal depthwise conv per order
      x_proj_weight (K, R + 2N, Di): per order, x -> (dt, B, C)
      dt_proj_weight (K, Di, R), dt_proj_bias (K, Di)
      A_log (K, Di, N), D (K, Di)
      out_proj: Linear(Di, dim)
    Output: out_proj(Σ_k scan_k(silu(conv_k(x))) · silu(z)), each order's scan
    written back at native positions; equal to SegMamba's flip/permute form with
    the same weights (its ``bimamba_type="v3"`` with orders ("zyx", "-zyx", "yxz")).

    Initialised as Mamba: dt = softplus(dt_proj_bias) log-uniform in
    [dt_min, dt_max] (floored at dt_init_floor), A = -(1..N), D = 1, other
    weights as PyTorch's Linear/Conv1d defaults.

    orders: scan orders (see :mod:`anatokernels.scan_order`).
    dt_rank: "auto" for ceil(dim / 16), or an int.
    checkpoint: recompute the layer in the backward instead of keeping its
        activations (only the input is stored). This is the one checkpointing
        level: a block wrapping Mamba3d passes ``checkpoint`` through instead of
        checkpointing itself.
    backend: passed to both ops ("auto", "reference", "triton", "cpu", "cuda"); any backend name of
        the library is accepted (``"chunked"``, which these ops lack, means ``"auto"``).
    device, dtype: factory kwargs of the parameters (``device="meta"``, then ``to_empty`` and
        :meth:`reset_parameters`, builds it without allocating twice).
    The orders are saved in the state dict (buffer ``scan_orders``): loading weights saved with
    other orders raises a ValueError.
    """

    def __init__(self, dim: int, d_state: int = 16, d_conv: int = 4, expand: int = 2,
                 orders: Sequence[str] = ("zyx", "-zyx", "yxz"), dt_rank: int | str = "auto", *,
                 dt_min: float = 1e-3, dt_max: float = 1e-1, dt_init_floor: float = 1e-4, conv_bias: bool = True,
                 bias: bool = False, checkpoint: bool = False, backend: str = "auto", device=None, dtype=None):
        super().__init__()
        for name, value in (("dim", dim), ("d_state", d_state), ("expand", expand)):
            if not isinstance(value, int) or value <= 0:
                raise ValueError(f"Mamba3d: {name} must be a positive int, got {value!r}")
        if d_conv not in (2, 3, 4):
            raise ValueError(f"Mamba3d: d_conv must be 2, 3 or 4, got {d_conv!r}")
        if dt_rank == "auto":
            dt_rank = math.ceil(dim / 16)
        if not isinstance(dt_rank, int) or dt_rank <= 0:
            raise ValueError(f"Mamba3d: dt_rank must be 'auto' or a positive int, got {dt_rank!r}")
        if not 0 < dt_min <= dt_max:
            raise ValueError(f"Mamba3d: need 0 < dt_min <= dt_max, got {dt_min}, {dt_max}")
        orders = (orders,) if isinstance(orders, str) else tuple(orders)
        if not orders:
            raise ValueError("Mamba3d: give at least one scan order")
        self.orders = check_orders("Mamba3d", orders, len(orders))
        self.dim, self.d_state, self.d_conv, self.dt_rank = dim, d_state, d_conv, dt_rank
        self.d_inner = expand * dim
        self.dt_min, self.dt_max, self.dt_init_floor = dt_min, dt_max, dt_init_floor
        self.checkpoint, self.backend = checkpoint, backend
        self._op_backends = _dispatch.prepare("Mamba3d", backend, ("order_conv1d", "selective_scan3d"))
        k, di = len(self.orders), self.d_inner
        factory = dict(device=device, dtype=dtype)
        self.in_proj = nn.Linear(dim, 2 * di, bias=bias, **factory)
        self.conv_weight = nn.Parameter(torch.empty(k, di, d_conv, **factory))
        self.conv_bias = nn.Parameter(torch.empty(k, di, **factory)) if conv_bias else None
        self.x_proj_weight = nn.Parameter(torch.empty(k, dt_rank + 2 * d_state, di, **factory))
        self.dt_proj_weight = nn.Parameter(torch.empty(k, di, dt_rank, **factory))
        self.dt_proj_bias = nn.Parameter(torch.empty(k, di, **factory))
        self.A_log = nn.Parameter(torch.empty(k, di, d_state, **factory))
        self.D = nn.Parameter(torch.empty(k, di, **factory))
        self.A_log._no_weight_decay = True
        self.D._no_weight_decay = True
        self.out_proj = nn.Linear(di, dim, bias=bias, **factory)
        register_config(self, _CONFIG, [ALL_ORDERS.index(o) for o in self.orders], _describe, device=device)
        self._reset_scan_parameters()

    def reset_parameters(self) -> None:
        """Initialise every parameter as at construction (and the orders buffer): after ``to_empty``."""
        self.in_proj.reset_parameters()
        self.out_proj.reset_parameters()
        self._reset_scan_parameters()
        reset_config(self, _CONFIG, [ALL_ORDERS.index(o) for o in self.orders])

    @torch.no_grad()
    def _reset_scan_parameters(self) -> None:
        """Mamba's initialisation of the per-order parameters (the projections keep Linear's)."""
        conv_bound = 1.0 / math.sqrt(self.d_conv)  # Conv1d default, fan_in = W (depthwise)
        self.conv_weight.uniform_(-conv_bound, conv_bound)
        if self.conv_bias is not None:
            self.conv_bias.uniform_(-conv_bound, conv_bound)
        x_bound = 1.0 / math.sqrt(self.d_inner)  # Linear default, fan_in = Di
        self.x_proj_weight.uniform_(-x_bound, x_bound)
        dt_std = self.dt_rank ** -0.5
        self.dt_proj_weight.uniform_(-dt_std, dt_std)
        log_min, log_max = math.log(self.dt_min), math.log(self.dt_max)
        dt = torch.exp(torch.rand_like(self.dt_proj_bias) * (log_max - log_min) + log_min)
        dt = dt.clamp(min=self.dt_init_floor)
        self.dt_proj_bias.copy_(dt + torch.log(-torch.expm1(-dt)))  # inverse softplus
        a = torch.arange(1, self.d_state + 1, dtype=torch.float32, device=self.A_log.device)
        self.A_log.copy_(torch.log(a).expand_as(self.A_log))
        self.D.fill_(1.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, dim, Z, Y, X) -> (B, dim, Z, Y, X)."""
        if not isinstance(x, torch.Tensor) or x.dim() != 5 or x.shape[1] != self.dim:
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"Mamba3d: input must be (B, {self.dim}, Z, Y, X), got {shape}")
        if self.checkpoint and torch.is_grad_enabled():
            return run_checkpointed(self._mix, x, use_reentrant=False)
        return self._mix(x)

    def _mix(self, x: torch.Tensor) -> torch.Tensor:
        b, c, *spatial = x.shape
        length = spatial[0] * spatial[1] * spatial[2]
        k, n, r = len(self.orders), self.d_state, self.dt_rank
        xz = self._project(self.in_proj, x.reshape(b, c, length))  # (B, 2Di, L)
        u, z = xz.chunk(2, dim=1)  # (B, Di, L) each
        conv_bias = None if self.conv_bias is None else self.conv_bias.to(u.dtype)
        u = order_conv1d(u.unsqueeze(1).expand(b, k, self.d_inner, length), self.conv_weight.to(u.dtype), conv_bias,
                         spatial_shape=spatial, orders=self.orders, activation="silu",
                         backend=self._op_backends["order_conv1d"])  # (B, K, Di, L)
        x_dbl = torch.matmul(self.x_proj_weight.to(u.dtype), u)  # (B, K, R + 2N, L)
        dt, b_ssm, c_ssm = x_dbl.split([r, n, n], dim=2)
        delta = torch.matmul(self.dt_proj_weight.to(dt.dtype), dt)  # (B, K, Di, L)
        y = selective_scan3d(u, delta, -torch.exp(_at_least_fp32(self.A_log)), b_ssm, c_ssm,
                             _at_least_fp32(self.D), z, delta_bias=_at_least_fp32(self.dt_proj_bias),
                             delta_softplus=True, spatial_shape=spatial, orders=self.orders,
                             backend=self._op_backends["selective_scan3d"])  # (B, Di, L)
        return self._project(self.out_proj, y).reshape(b, c, *spatial)

    @staticmethod
    def _project(linear: nn.Linear, tokens: torch.Tensor) -> torch.Tensor:
        """A Linear applied along the channel dim of (B, C_in, L) -> (B, C_out, L), no transposes."""
        out = torch.matmul(linear.weight.to(tokens.dtype), tokens)
        return out if linear.bias is None else out + linear.bias.to(out.dtype)[:, None]

    def extra_repr(self) -> str:
        return (f"dim={self.dim}, d_state={self.d_state}, d_conv={self.d_conv}, d_inner={self.d_inner}, "
                f"dt_rank={self.dt_rank}, orders={self.orders}, checkpoint={self.checkpoint}")


def _at_least_fp32(t: torch.Tensor) -> torch.Tensor:
    """The scan's own parameters stay in float32 (float64 kept) whatever the activations' dtype."""
    return t if t.dtype == torch.float64 else t.float()
