"""Mamba3d: shapes, initialisation, and equality with SegMamba's flip/permute form using the same weights."""

import math

import pytest
import torch
import torch.nn.functional as F

from anatokernels import _dispatch, _extension
from anatokernels.nn import Mamba3d

from kernel_testing import assert_rel_close

SHAPE = (2, 8, 6, 10, 12)  # (B, C, Z, Y, X)
SMALL = (2, 8, 4, 5, 6)  # for the comparisons that run a sequential Python scan


def _ssm(u, delta, A, B, C, D, delta_bias):
    """Sequential Mamba scan of one direction: u, delta (b, Di, L); A (Di, N); B, C (b, N, L)."""
    delta = F.softplus(delta + delta_bias[:, None])
    h = u.new_zeros(u.shape[0], u.shape[1], A.shape[1])
    ys = []
    for t in range(u.shape[-1]):
        d_t = delta[:, :, t, None]
        h = torch.exp(d_t * A) * h + d_t * B[:, None, :, t] * u[:, :, t, None]
        ys.append((h * C[:, None, :, t]).sum(-1))
    return torch.stack(ys, dim=-1) + D[:, None] * u


def _segmamba_style(m: Mamba3d, x: torch.Tensor) -> torch.Tensor:
    """SegMamba's tri-oriented Mamba (bimamba v3) written out with flips, slice stacking and permutes."""
    b, c, z, y, x_ = x.shape
    length, di, n, r, w = z * y * x_, m.d_inner, m.d_state, m.dt_rank, m.d_conv
    tokens = x.reshape(b, c, length).transpose(1, 2)  # (B, L, C)
    xz = F.linear(tokens, m.in_proj.weight).transpose(1, 2)  # (B, 2Di, L)

    def direction(k, xz_k):
        u, gate = xz_k.chunk(2, dim=1)
        u = F.silu(F.conv1d(u, m.conv_weight[k].unsqueeze(1), m.conv_bias[k], padding=w - 1, groups=di)[..., :length])
        dt, b_ssm, c_ssm = F.linear(u.transpose(1, 2), m.x_proj_weight[k]).split([r, n, n], dim=-1)
        delta = F.linear(dt, m.dt_proj_weight[k]).transpose(1, 2)
        out = _ssm(u, delta, -torch.exp(m.A_log[k]), b_ssm.transpose(1, 2), c_ssm.transpose(1, 2), m.D[k],
                   m.dt_proj_bias[k])
        return out * F.silu(gate)

    out = direction(0, xz)
    out_b = direction(1, xz.flip([-1])).flip(-1)
    xz_s = torch.stack(xz.chunk(z, dim=-1), dim=-1).flatten(-2)  # inter-slice order
    out_s = direction(2, xz_s).reshape(b, di, length // z, z).permute(0, 1, 3, 2).flatten(-2)
    merged = (out + out_b + out_s).transpose(1, 2)
    return F.linear(merged, m.out_proj.weight).transpose(1, 2).reshape(b, c, z, y, x_)


def test_forward_backward_on_cpu():
    m = Mamba3d(8)
    x = torch.randn(*SHAPE, requires_grad=True)
    out = m(x)
    assert out.shape == SHAPE and torch.isfinite(out).all()
    out.square().mean().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    for name, p in m.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, f"{name} got a zero gradient"


def test_parameter_shapes():
    m = Mamba3d(12, d_state=4, d_conv=3, expand=3, orders=("zyx", "-zyx", "yxz", "-xzy"), dt_rank=5)
    k, di = 4, 36
    expected = {"in_proj.weight": (2 * di, 12), "conv_weight": (k, di, 3), "conv_bias": (k, di),
                "x_proj_weight": (k, 5 + 8, di), "dt_proj_weight": (k, di, 5), "dt_proj_bias": (k, di),
                "A_log": (k, di, 4), "D": (k, di), "out_proj.weight": (12, di)}
    assert {name: tuple(p.shape) for name, p in m.named_parameters()} == expected
    assert Mamba3d(40).dt_rank == math.ceil(40 / 16)
    assert Mamba3d(16, orders="yxz").orders == ("yxz",)


def test_mamba_initialisation():
    m = Mamba3d(32, d_state=8, dt_min=2e-3, dt_max=5e-2)
    dt = F.softplus(m.dt_proj_bias)
    assert dt.min() >= 2e-3 * (1 - 1e-5) and dt.max() <= 5e-2 * (1 + 1e-5)
    assert dt.max() / dt.min() > 5, "dt should spread over the log-uniform range"
    torch.testing.assert_close(-torch.exp(m.A_log), -torch.arange(1.0, 9.0).expand(3, 64, 8))
    assert torch.all(m.D == 1)
    assert m.dt_proj_weight.abs().max() <= m.dt_rank ** -0.5
    assert m.conv_weight.abs().max() <= 0.5 and m.x_proj_weight.abs().max() <= 64 ** -0.5


@pytest.mark.parametrize("backend", ["reference", "auto"])
def test_equals_segmamba_style_computation(backend):
    m = Mamba3d(8, d_state=4, backend=backend).double()
    x = torch.randn(*SMALL, dtype=torch.float64, requires_grad=True)
    out = m(x)
    grad = torch.randn_like(out)
    params = [x, *m.parameters()]
    got = torch.autograd.grad(out, params, grad)
    ref = _segmamba_style(m, x)
    want = torch.autograd.grad(ref, params, grad)
    assert_rel_close(out, ref, torch.float64, "output")
    names = ["x"] + [name for name, _ in m.named_parameters()]
    for name, g, r in zip(names, got, want):
        assert_rel_close(g, r, torch.float64, f"d_{name}")


def test_auto_backend_and_checkpointing_match_reference():
    _extension.load(build=True)
    assert _dispatch.resolve("order_conv1d", "auto", torch.device("cpu")) == "cpu"
    ref_m = Mamba3d(8, backend="reference")
    fast_m = Mamba3d(8, checkpoint=True)
    fast_m.load_state_dict(ref_m.state_dict())
    x = torch.randn(*SMALL, requires_grad=True)
    ref = ref_m(x)
    ref_grads = torch.autograd.grad(ref.square().sum(), [x, *ref_m.parameters()])
    out = fast_m(x)
    grads = torch.autograd.grad(out.square().sum(), [x, *fast_m.parameters()])
    assert_rel_close(out, ref, torch.float32, "output", factor=10)
    for name, g, r in zip(["x"] + [n for n, _ in ref_m.named_parameters()], grads, ref_grads):
        assert_rel_close(g, r, torch.float32, f"d_{name}", factor=10)


@pytest.mark.parametrize("kwargs, match", [
    (dict(d_conv=5), "d_conv must be 2, 3 or 4"),
    (dict(orders=("zyx", "zzy")), "invalid scan order"),
    (dict(orders=()), "at least one scan order"),
    (dict(dt_rank=0), "dt_rank"),
    (dict(expand=0), "expand must be a positive int"),
], ids=["d_conv-5", "bad-order", "no-orders", "dt_rank-0", "expand-0"])
def test_bad_construction(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Mamba3d(8, **kwargs)


def test_bad_input_shape():
    m = Mamba3d(8)
    with pytest.raises(ValueError, match=r"input must be \(B, 8, Z, Y, X\)"):
        m(torch.randn(2, 4, 3, 3, 3))
    with pytest.raises(ValueError, match="input must be"):
        m(torch.randn(2, 8, 27))
