"""order_conv1d through the causal-conv1d package: availability, the glue (with a fake package), the real one."""

import os
import subprocess
import sys
import types

import pytest
import torch
import torch.nn.functional as F

import anatokernels as ak
from anatokernels import _dispatch
from anatokernels.order_conv import reference

from kernel_testing import assert_rel_close

ORDERS = ("zyx", "zyx", "zyx")
SPATIAL = (3, 4, 5)
_has_package = _dispatch._external_availability("causal_conv1d").is_available


def _fake_causal_conv1d_fn(x, weight, bias=None, activation=None):
    """causal-conv1d's documented equivalent: x (B, D, L), weight (D, W), bias (D,) or None."""
    assert x.dim() == 3 and weight.dim() == 2 and weight.shape[0] == x.shape[1]
    width = weight.shape[1]
    out = F.conv1d(x, weight.unsqueeze(1), bias, padding=width - 1, groups=x.shape[1])[..., :x.shape[-1]]
    return F.silu(out) if activation == "silu" else out


@pytest.fixture
def fake_package(monkeypatch):
    fake = types.ModuleType("causal_conv1d")
    fake.causal_conv1d_fn = _fake_causal_conv1d_fn
    monkeypatch.setitem(sys.modules, "causal_conv1d", fake)
    return fake


def _inputs(b, k, d, width, with_bias, device, dtype=torch.float32):
    length = SPATIAL[0] * SPATIAL[1] * SPATIAL[2]
    x = torch.randn(b, k, d, length, device=device, dtype=dtype, requires_grad=True)
    w = (torch.randn(k, d, width, device=device, dtype=dtype) / width).requires_grad_()
    bias = torch.randn(k, d, device=device, dtype=dtype, requires_grad=True) if with_bias else None
    return x, w, bias


def _check_against_reference(backend, device, width, with_bias, activation, dtype=torch.float32):
    x, w, bias = _inputs(2, len(ORDERS), 5, width, with_bias, device, dtype)
    leaves = [t for t in (x, w, bias) if t is not None]
    out = ak.order_conv1d(x, w, bias, spatial_shape=SPATIAL, orders=ORDERS, activation=activation, backend=backend)
    ref_leaves = [t.detach().double().requires_grad_() for t in leaves]
    rx, rw, rb = (ref_leaves + [None])[:3]
    ref = reference.order_conv1d(rx, rw, rb, SPATIAL, ORDERS, activation)
    assert out.dtype == dtype
    assert_rel_close(out, ref, dtype, "out")
    grad = torch.randn_like(ref)
    got = torch.autograd.grad(out, leaves, grad.to(dtype))
    want = torch.autograd.grad(ref, ref_leaves, grad)
    for name, g, r in zip(("dx", "dweight", "dbias"), got, want):
        assert_rel_close(g, r, dtype, name, factor=4.0)


def test_reported_unavailable_without_the_package(monkeypatch):
    monkeypatch.setitem(sys.modules, "causal_conv1d", None)  # `import causal_conv1d` now fails as if absent
    table = ak.backends()
    assert str(table["order_conv1d"]["causal_conv1d"]) == "causal-conv1d not installed"
    assert table["selective_scan"]["causal_conv1d"].state == "unimplemented"
    with pytest.raises(RuntimeError, match="causal-conv1d not installed"):
        x, w, bias = _inputs(1, 3, 2, 4, True, "cpu")
        ak.order_conv1d(x, w, bias, spatial_shape=SPATIAL, orders=ORDERS, backend="causal_conv1d")


def test_never_picked_by_auto(fake_package):
    assert ak.backends()["order_conv1d"]["causal_conv1d"].is_available
    assert _dispatch._auto(_dispatch._REGISTRY["order_conv1d"], torch.device("cpu")) != "causal_conv1d"


def test_anatokernels_import_does_not_import_the_package(tmp_path):
    """A package that fails on import (as it does on CPU machines) must not break ``import anatokernels``."""
    (tmp_path / "causal_conv1d.py").write_text("raise ImportError('undefined symbol: fake')\n")
    code = ("import sys, anatokernels as ak; assert 'causal_conv1d' not in sys.modules; "
            "print(ak.backends()['order_conv1d']['causal_conv1d'])")
    env = {**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "causal-conv1d installed but fails to import" in result.stdout and "undefined symbol" in result.stdout


@pytest.mark.parametrize("width, with_bias, activation", [(4, True, "silu"), (2, False, None), (3, True, None)],
                         ids=["W4-bias-silu", "W2-nobias-none", "W3-bias-none"])
def test_glue_matches_reference_with_a_fake_package(fake_package, width, with_bias, activation):
    _check_against_reference("causal_conv1d", "cpu", width, with_bias, activation)


def test_glue_reads_an_expanded_x(fake_package):
    base = torch.randn(2, 1, 4, 60)
    w, bias = torch.randn(3, 4, 4), torch.randn(3, 4)
    out = ak.order_conv1d(base.expand(2, 3, 4, 60), w, bias, spatial_shape=SPATIAL, orders=ORDERS,
                          backend="causal_conv1d")
    ref = reference.order_conv1d(base.expand(2, 3, 4, 60), w, bias, SPATIAL, ORDERS, "silu")
    assert_rel_close(out, ref, torch.float32)


@pytest.mark.parametrize("orders", [("zyx", "-zyx"), ("yxz",)], ids=["zyx_-zyx", "yxz"])
def test_other_orders_are_a_clear_error(fake_package, orders):
    x, w, bias = _inputs(1, len(orders), 2, 4, True, "cpu")
    with pytest.raises(ValueError, match="native raster order 'zyx' only"):
        ak.order_conv1d(x, w, bias, spatial_shape=SPATIAL, orders=orders, backend="causal_conv1d")


def test_float64_is_a_clear_error(fake_package):
    x, w, bias = _inputs(1, 3, 2, 4, True, "cpu", torch.float64)
    with pytest.raises(ValueError, match="float16/bfloat16/float32"):
        ak.order_conv1d(x, w, bias, spatial_shape=SPATIAL, orders=ORDERS, backend="causal_conv1d")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available() or not _has_package, reason="needs CUDA and causal-conv1d")
@pytest.mark.parametrize("dtype", (torch.float32, torch.float16, torch.bfloat16), ids=str)
@pytest.mark.parametrize("width, with_bias, activation", [(4, True, "silu"), (2, False, None)],
                         ids=["W4-bias-silu", "W2-nobias-none"])
def test_real_package_matches_reference(width, with_bias, activation, dtype):
    _check_against_reference("causal_conv1d", "cuda", width, with_bias, activation, dtype)
