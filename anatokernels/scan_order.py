"""Scan orders over a 3D volume stored in native raster order (z slowest, x fastest).

An order names the axes from slowest to fastest, e.g. ``"zyx"`` (the native
raster), ``"yxz"`` (SegMamba's inter-slice scan: every in-slice position is
visited across all slices in a row), with an optional leading ``-`` for the
reversed traversal. All 12 orders are valid.

Kernels never build a permuted copy: scan step t of an order maps to a native
position arithmetically through :class:`OrderGeometry`::

    s = L-1-t if reverse else t
    c0, c1, c2 = s // (n1*n2), (s // n2) % n1, s % n2
    native(t) = c0*stride0 + c1*stride1 + c2*stride2

This module is the one order parser (:func:`parse_order`; ``NetConfig`` and
``Mamba3d`` validate with it too). The kernels get the (K, 7) rows of
:func:`geometry_tensor`; the Triton side of the mapping is
:mod:`anatokernels._triton_common`, the C++/CUDA side ``csrc/*/`` ``ScanOrder``/``ScanGeometry``.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import permutations

import torch

from anatokernels._checks import positive_ints

AXES = "zyx"
ALL_ORDERS = tuple(sign + "".join(p) for sign in ("", "-") for p in permutations(AXES))


@dataclass(frozen=True)
class OrderGeometry:
    """Step-to-native mapping of one order: axis sizes and native strides, slowest first."""

    sizes: tuple[int, int, int]
    strides: tuple[int, int, int]
    reverse: bool

    def as_ints(self) -> tuple[int, ...]:
        """(n0, n1, n2, stride0, stride1, stride2, reverse) for kernel arguments."""
        return (*self.sizes, *self.strides, int(self.reverse))


def parse_order(order: str) -> tuple[tuple[int, int, int], bool]:
    """``"-yxz"`` -> ((1, 2, 0), True): native axis indices slowest first, and reversal."""
    if not isinstance(order, str):
        raise TypeError(f"scan order must be a string such as 'zyx' or '-yxz', got {type(order).__name__}")
    reverse = order.startswith("-")
    letters = order[1:] if reverse else order
    if len(letters) != 3 or sorted(letters) != sorted(AXES):
        raise ValueError(f"invalid scan order {order!r}: write the axes z, y, x once each from slowest to "
                         f"fastest, optionally prefixed by '-' (valid: {', '.join(ALL_ORDERS)})")
    return tuple(AXES.index(a) for a in letters), reverse  # type: ignore[return-value]


def is_valid_order(order) -> bool:
    """Whether :func:`parse_order` accepts ``order``."""
    try:
        parse_order(order)
    except (TypeError, ValueError):
        return False
    return True


def check_orders(op: str, orders: Sequence[str] | str, count: int) -> tuple[str, ...]:
    """``orders`` (one order string, or a sequence of them) as a tuple of ``count`` valid orders."""
    if isinstance(orders, str):
        orders = (orders,)
    if not isinstance(orders, Sequence):
        raise TypeError(f"{op}: orders must be a sequence of order strings such as ('zyx', '-zyx'), "
                        f"got {orders!r}")
    orders = tuple(orders)
    if len(orders) != count:
        raise ValueError(f"{op}: got {len(orders)} orders {orders} but the tensors have K={count} orders")
    for order in orders:
        parse_order(order)
    return orders


def check_spatial(spatial_shape: Sequence[int], length: int | None = None, op: str = "scan") -> tuple[int, int, int]:
    """Validate (Z, Y, X); if ``length`` is given it must equal Z·Y·X."""
    spatial = positive_ints(op, "spatial_shape", spatial_shape, 3, "3 positive sizes (Z, Y, X)")
    if length is not None and spatial[0] * spatial[1] * spatial[2] != length:
        raise ValueError(f"{op}: sequence length L={length} does not match spatial_shape {spatial} "
                         f"(Z·Y·X = {spatial[0] * spatial[1] * spatial[2]})")
    return spatial  # type: ignore[return-value]


def order_geometry(spatial_shape: Sequence[int], order: str) -> OrderGeometry:
    spatial = check_spatial(spatial_shape)
    axes, reverse = parse_order(order)
    native_strides = (spatial[1] * spatial[2], spatial[2], 1)
    return OrderGeometry(sizes=tuple(spatial[a] for a in axes),  # type: ignore[arg-type]
                         strides=tuple(native_strides[a] for a in axes),  # type: ignore[arg-type]
                         reverse=reverse)


def scan_order(spatial_shape: Sequence[int], order: str) -> torch.Tensor:
    """π for ``order``: int64 tensor of length L, π[t] = native position visited at scan step t."""
    geo = order_geometry(spatial_shape, order)
    n0, n1, n2 = geo.sizes
    s0, s1, s2 = geo.strides
    pi = (torch.arange(n0).view(-1, 1, 1) * s0 + torch.arange(n1).view(1, -1, 1) * s1
          + torch.arange(n2).view(1, 1, -1) * s2).reshape(-1)
    return pi.flip(0) if geo.reverse else pi


@functools.lru_cache(maxsize=64)
def geometry_tensor(spatial: tuple[int, int, int], orders: tuple[str, ...], device: torch.device) -> torch.Tensor:
    """(K, 7) int64 rows :meth:`OrderGeometry.as_ints` of ``orders`` on ``device``: what the kernels read.

    The kernels index positions inside one volume with 32-bit integers (offsets into tensors stay
    64-bit), so Z·Y·X must stay below 2^31.
    """
    if spatial[0] * spatial[1] * spatial[2] >= 2**31:
        raise ValueError(f"scan: the volume {spatial} has {spatial[0] * spatial[1] * spatial[2]} positions; the "
                         "fast kernels take fewer than 2^31 per volume (use backend='reference')")
    rows = [order_geometry(spatial, order).as_ints() for order in orders]
    return torch.tensor(rows, dtype=torch.int64, device=device)


def join_orders(orders: Sequence[str]) -> str:
    """Checked orders as one string, e.g. ``"zyx,-zyx,yxz"``: how the custom ops take them."""
    return ",".join(orders)


def geometry_of(spatial: Sequence[int], orders: str, device: torch.device) -> torch.Tensor:
    """:func:`geometry_tensor` of :func:`join_orders`' string ``orders``: what the custom ops build inside."""
    return geometry_tensor(tuple(int(s) for s in spatial), tuple(orders.split(",")), device)
