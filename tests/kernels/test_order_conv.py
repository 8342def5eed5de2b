"""order_conv1d: every backend against the reference, the reference against explicit permutations."""

import pytest
import torch
import torch.nn.functional as F

import anatokernels as ak
from anatokernels import _dispatch
from anatokernels.order_conv import reference
from anatokernels.order_conv import triton as triton_backend
from anatokernels.scan_order import ALL_ORDERS

from kernel_testing import assert_rel_close, backend_cases

# (B, D, (Z, Y, X), orders, W, bias, activation): odd volumes, 1x1xL, K 1..4 with repeated and reversed orders.
SHAPES = [
    (2, 3, (3, 4, 5), ("zyx", "-zyx", "yxz", "-yxz"), 4, True, "silu"),
    (1, 5, (1, 1, 11), ("zyx",), 3, False, None),
    (2, 2, (2, 1, 6), ("xzy", "xzy", "-xzy"), 2, True, None),
    (3, 7, (3, 4, 5), ("-zxy", "yzx"), 4, False, "silu"),
]
SHAPE_IDS = [f"B{b}-D{d}-Z{s[0]}Y{s[1]}X{s[2]}-K{len(o)}-{'_'.join(o)}-W{w}-{'bias' if bias else 'nobias'}-{act}"
             for b, d, s, o, w, bias, act in SHAPES]
CASES = backend_cases("order_conv1d")
DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def _length(spatial):
    return spatial[0] * spatial[1] * spatial[2]


def _inputs(b, d, spatial, orders, width, with_bias, dtype, device):
    k = len(orders)
    x = torch.randn(b, k, d, _length(spatial), device=device).to(dtype).requires_grad_()
    w = (torch.randn(k, d, width, device=device) / width).to(dtype).requires_grad_()
    bias = torch.randn(k, d, device=device).to(dtype).requires_grad_() if with_bias else None
    return x, w, bias


def _leaves(*tensors):
    return [t for t in tensors if t is not None]


def _double_leaves(*tensors):
    return [None if t is None else t.detach().double().requires_grad_() for t in tensors]


@pytest.mark.parametrize("device, backend", CASES)
@pytest.mark.parametrize("b, d, spatial, orders, width, with_bias, activation", SHAPES, ids=SHAPE_IDS)
def test_matches_reference_forward_and_backward(device, backend, b, d, spatial, orders, width, with_bias,
                                                activation):
    for dtype in DTYPES:
        x, w, bias = _inputs(b, d, spatial, orders, width, with_bias, dtype, device)
        out = ak.order_conv1d(x, w, bias, spatial_shape=spatial, orders=orders, activation=activation,
                              backend=backend)
        rx, rw, rb = _double_leaves(x, w, bias)
        ref = reference.order_conv1d(rx, rw, rb, spatial, orders, activation)
        assert out.dtype == dtype
        assert_rel_close(out, ref, dtype, f"out {dtype}")
        grad = torch.randn_like(ref)
        got = torch.autograd.grad(out, _leaves(x, w, bias), grad.to(dtype))
        want = torch.autograd.grad(ref, _leaves(rx, rw, rb), grad)
        for name, g, r in zip(("d_x", "d_weight", "d_bias"), got, want):
            assert g.dtype == dtype
            assert_rel_close(g, r, dtype, f"{name} {dtype}", factor=2.0)


# Triton tiles: (Z, Y, X), W, runs per tile. All 12 orders, so every axis is the fastest one somewhere: runs of
# 1 to 5 steps, cut into tiles of 2 steps; with runs shorter than W-1 a shifted step lands up to 3 runs away.
# One run per tile is the GPU launch (a scalar run start), 8 the interpreter's default.
TILE_CASES = [((3, 2, 5), 4, 1), ((2, 3, 1), 4, 1), ((3, 1, 2), 2, 1), ((3, 2, 5), 3, 8)]


@pytest.mark.parametrize("device, backend", backend_cases("order_conv1d", ("triton",)))
@pytest.mark.parametrize("spatial, width, runs_per_tile", TILE_CASES,
                         ids=[f"Z{s[0]}Y{s[1]}X{s[2]}-W{w}-{r}runs" for s, w, r in TILE_CASES])
def test_triton_tiles_cross_runs_in_every_order(monkeypatch, device, backend, spatial, width, runs_per_tile):
    """Every order, tiles that cut runs, halos that cross tiles and runs: output and every gradient."""
    monkeypatch.setattr(triton_backend, "_INTERPRETER_LAUNCH", (runs_per_tile, 2, 1 << 12, 3))
    x, w, bias = _inputs(1, 2, spatial, ALL_ORDERS, width, True, torch.float64, device)
    out = ak.order_conv1d(x, w, bias, spatial_shape=spatial, orders=ALL_ORDERS, backend=backend)
    leaves = _double_leaves(x, w, bias)
    ref = reference.order_conv1d(*leaves, spatial, ALL_ORDERS, "silu")
    assert_rel_close(out, ref, torch.float64, "out")
    grad = torch.randn_like(ref)
    got = torch.autograd.grad(out, [x, w, bias], grad)
    want = torch.autograd.grad(ref, leaves, grad)
    for name, g, r in zip(("d_x", "d_weight", "d_bias"), got, want):
        assert_rel_close(g, r, torch.float64, name)


@pytest.mark.parametrize("device, backend", CASES)
def test_float64_and_strided_input(device, backend):
    """A (B, D, L) tensor expanded over K (stride 0) and a transposed one are read in place."""
    spatial, orders = (2, 3, 4), ("zyx", "-yxz", "xyz")
    base = torch.randn(2, 5, 24, dtype=torch.float64, device=device, requires_grad=True)
    w = torch.randn(3, 5, 3, dtype=torch.float64, device=device, requires_grad=True)
    bias = torch.randn(3, 5, dtype=torch.float64, device=device, requires_grad=True)
    expanded = base.unsqueeze(1).expand(2, 3, 5, 24)
    out = ak.order_conv1d(expanded, w, bias, spatial_shape=spatial, orders=orders, backend=backend)
    ref = reference.order_conv1d(expanded.detach().contiguous(), w.detach(), bias.detach(), spatial, orders, "silu")
    assert_rel_close(out, ref, torch.float64, "expanded")
    out.square().sum().backward()
    ref_base = base.detach().clone().requires_grad_()
    reference.order_conv1d(ref_base.unsqueeze(1).expand(2, 3, 5, 24), w.detach(), bias.detach(), spatial, orders,
                           "silu").square().sum().backward()
    assert_rel_close(base.grad, ref_base.grad, torch.float64, "d_base")

    transposed = torch.randn(2, 24, 3, 5, dtype=torch.float64, device=device).permute(0, 2, 3, 1)
    out = ak.order_conv1d(transposed, w.detach(), None, spatial_shape=spatial, orders=orders, activation=None,
                          backend=backend)
    assert_rel_close(out, reference.order_conv1d(transposed.contiguous(), w.detach(), None, spatial, orders, None),
                     torch.float64, "transposed")


@pytest.mark.parametrize("device, backend", CASES)
def test_empty_batch(device, backend):
    x = torch.randn(0, 2, 3, 6, device=device, requires_grad=True)
    w = torch.randn(2, 3, 2, device=device, requires_grad=True)
    bias = torch.randn(2, 3, device=device, requires_grad=True)
    out = ak.order_conv1d(x, w, bias, spatial_shape=(1, 2, 3), orders=("zyx", "-zyx"), backend=backend)
    assert out.shape == (0, 2, 3, 6)
    out.sum().backward()
    assert torch.count_nonzero(w.grad) == 0 and torch.count_nonzero(bias.grad) == 0


def _causal(xs, w, b):
    """xs (B, D, L) in scan order, w (D, W) -> causal depthwise conv (B, D, L)."""
    return F.conv1d(F.pad(xs, (w.shape[1] - 1, 0)), w.unsqueeze(1), b, groups=w.shape[0])


def test_reference_equals_explicit_permutations():
    """zyx: plain causal conv; -zyx: flip/conv/flip; yxz: SegMamba's slice stacking; xzy: a 3D permute."""
    z, y, x_ = 3, 4, 5
    x = torch.randn(2, 4, 6, z * y * x_, dtype=torch.float64)
    w = torch.randn(4, 6, 4, dtype=torch.float64)
    bias = torch.randn(4, 6, dtype=torch.float64)
    out = reference.order_conv1d(x, w, bias, (z, y, x_), ("zyx", "-zyx", "yxz", "xzy"), None)
    torch.testing.assert_close(out[:, 0], _causal(x[:, 0], w[0], bias[0]))
    torch.testing.assert_close(out[:, 1], _causal(x[:, 1].flip(-1), w[1], bias[1]).flip(-1))
    slices = torch.stack(x[:, 2].chunk(z, dim=-1), dim=-1).flatten(-2)  # (B, D, Y*X*Z), z fastest
    ys = _causal(slices, w[2], bias[2]).reshape(2, 6, y * x_, z).transpose(-1, -2).flatten(-2)
    torch.testing.assert_close(out[:, 2], ys)
    vol = x[:, 3].reshape(2, 6, z, y, x_).permute(0, 1, 4, 2, 3).flatten(2)  # x slowest, then z, then y
    ys = _causal(vol, w[3], bias[3]).reshape(2, 6, x_, z, y).permute(0, 1, 3, 4, 2).flatten(2)
    torch.testing.assert_close(out[:, 3], ys)


def test_reference_gradcheck_float64():
    x = torch.randn(1, 2, 3, 12, dtype=torch.float64, requires_grad=True)
    w = torch.randn(2, 3, 3, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(2, 3, dtype=torch.float64, requires_grad=True)
    fn = lambda *args: reference.order_conv1d(*args, (2, 3, 2), ("-yzx", "zxy"), "silu")
    assert torch.autograd.gradcheck(fn, (x, w, bias))


def test_auto_picks_cpu_when_built():
    from anatokernels import _extension

    _extension.load(build=True)
    assert _dispatch.resolve("order_conv1d", "auto", torch.device("cpu")) == "cpu"
    x = torch.randn(1, 2, 4, 20)
    w = torch.randn(2, 4, 4)
    args = dict(spatial_shape=(1, 4, 5), orders=("yxz", "-zyx"))
    torch.testing.assert_close(ak.order_conv1d(x, w, **args), ak.order_conv1d(x, w, **args, backend="reference"))
    single = ak.order_conv1d(x[:, :1], w[:1], spatial_shape=(1, 4, 5), orders="yxz")
    torch.testing.assert_close(single, ak.order_conv1d(x, w, **args)[:, :1])


_GOOD = dict(x=(2, 2, 3, 12), weight=(2, 3, 4), bias=(2, 3))
BAD = [
    ("x-3d", dict(x=(2, 3, 12)), {}, ValueError, "x must be 4-D"),
    ("weight-2d", dict(weight=(2, 3)), {}, ValueError, "weight must be 3-D"),
    ("width-5", dict(weight=(2, 3, 5)), {}, ValueError, "conv width W"),
    ("width-1", dict(weight=(2, 3, 1)), {}, ValueError, "conv width W"),
    ("weight-K", dict(weight=(3, 3, 4)), {}, ValueError, "K \\(number of orders\\)"),
    ("weight-D", dict(weight=(2, 4, 4)), {}, ValueError, "D \\(channels\\)"),
    ("bias-shape", dict(bias=(2, 4)), {}, ValueError, "bias must be \\(K, D\\)"),
    ("L-mismatch", {}, dict(spatial_shape=(2, 2, 2)), ValueError, "L=12 does not match"),
    ("orders-count", {}, dict(orders=("zyx",)), ValueError, "K=2"),
    ("orders-string", {}, dict(orders="zyx"), ValueError, "K=2"),
    ("orders-type", {}, dict(orders=3), TypeError, "sequence of order strings"),
    ("orders-invalid", {}, dict(orders=("zyx", "zzx")), ValueError, "invalid scan order"),
    ("activation", {}, dict(activation="relu"), ValueError, "activation must be"),
    ("backend", {}, dict(backend="fast"), ValueError, "unknown backend"),
]


@pytest.mark.parametrize("shapes, kwargs, exc, match", [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_inputs(shapes, kwargs, exc, match):
    tensors = {name: torch.randn(*shapes.get(name, shape)) for name, shape in _GOOD.items()}
    args = dict(spatial_shape=(1, 3, 4), orders=("zyx", "-zyx"), backend="reference") | kwargs
    with pytest.raises(exc, match=match):
        ak.order_conv1d(tensors["x"], tensors["weight"], tensors["bias"], **args)


def test_bad_dtype_and_type():
    x, w = torch.randn(1, 1, 2, 4), torch.randn(1, 2, 2)
    with pytest.raises(TypeError, match="share one dtype"):
        ak.order_conv1d(x, w.double(), spatial_shape=(1, 2, 2), orders=("zyx",))
    with pytest.raises(TypeError, match="dtype in"):
        ak.order_conv1d(x.int(), w.int(), spatial_shape=(1, 2, 2), orders=("zyx",))
    with pytest.raises(TypeError, match="must be a torch.Tensor"):
        ak.order_conv1d(x.numpy(), w, spatial_shape=(1, 2, 2), orders=("zyx",))
