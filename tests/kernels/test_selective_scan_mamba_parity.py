"""selective_scan as a drop-in for mamba-ssm's ``selective_scan_fn``: time-invariant B/C and half precision.

Time-invariant B and C (mamba's ``is_variable_B/C=False``, shape (D, N)) are checked on every backend against
mamba's own reference formulation (einsum over (D, N) weights), written out here in float64, gradients included
(those of a (D, N) B or C sum over batch and time).

Half precision follows mamba-ssm's ``tests/ops/test_selective_scan.py``: float16/bfloat16 activations, A, D and
delta_bias float32 parameters, the reference in float32 on the same (rounded) inputs, and its tolerances
(fp16 rtol/atol 3e-3/5e-3, bf16 3e-2/5e-2; weights 1e-3/1e-3, raised to the activation tolerance when z is
given; du 2x, ddelta 5x/10x, dA atol 5x).
"""

import pytest
import torch
import torch.nn.functional as F

import anatokernels as ak
from anatokernels.selective_scan import cpu as cpu_backend

from kernel_testing import _triton_interpreter_marks, assert_rel_close, backend_cases

NAMES = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")
SEGMENT = pytest.param("cpu", "triton_segment", id="cpu-triton_segment", marks=_triton_interpreter_marks())
CASES = [*backend_cases("selective_scan"), SEGMENT]


@pytest.fixture(autouse=True)
def _short_cpu_chunks(monkeypatch):
    monkeypatch.setattr(cpu_backend, "CHUNK", 16)  # several chunks on the C++ kernels at these lengths


def mamba_reference(u, delta, A, B, C, D, z, delta_bias, delta_softplus):
    """mamba-ssm's ``selective_scan_ref`` (real A), B/C (D, N), (B, N, L) or (B, G, N, L), in u's dtype."""
    delta = delta + delta_bias[..., None] if delta_bias is not None else delta
    delta = F.softplus(delta) if delta_softplus else delta
    dim = u.shape[1]

    def per_channel(t):  # variable B/C -> (B, D, N, L)
        t = t.unsqueeze(1) if t.dim() == 3 else t
        return t.repeat_interleave(dim // t.shape[1], dim=1)

    delta_a = torch.exp(torch.einsum("bdl,dn->bdln", delta, A))
    if B.dim() == 2:
        delta_b_u = torch.einsum("bdl,dn,bdl->bdln", delta, B, u)
    else:
        delta_b_u = torch.einsum("bdl,bdnl,bdl->bdln", delta, per_channel(B), u)
    C = C if C.dim() == 2 else per_channel(C)
    x = u.new_zeros(u.shape[0], dim, A.shape[1])
    ys = []
    for i in range(u.shape[2]):
        x = delta_a[:, :, i] * x + delta_b_u[:, :, i]
        ys.append(torch.einsum("bdn,dn->bd", x, C) if C.dim() == 2 else torch.einsum("bdn,bdn->bd", x, C[..., i]))
    y = torch.stack(ys, dim=2)
    y = y + u * D[:, None] if D is not None else y
    return y * F.silu(z) if z is not None else y


def _leaves(tensors, dtype=None):
    return tuple(None if t is None else t.detach().to(dtype or t.dtype).clone().requires_grad_() for t in tensors)


# (B shape, C shape) per case: "inv" (D, N), "var" (B, N, L), "grp2" (B, 2, N, L)
LAYOUTS = [("inv", "inv"), ("inv", "var"), ("grp2", "inv")]


def _bc(kind, b, d, n, length):
    return {"inv": (d, n), "var": (b, n, length), "grp2": (b, 2, n, length)}[kind]


@pytest.mark.parametrize("device, backend", CASES)
@pytest.mark.parametrize("b_kind, c_kind", LAYOUTS, ids=[f"B_{b}-C_{c}" for b, c in LAYOUTS])
def test_time_invariant_b_c(device, backend, b_kind, c_kind):
    b, d, n, length = 2, 4, 4, 37
    tensors = (torch.randn(b, d, length), torch.randn(b, d, length) * 0.5, -(torch.rand(d, n) * 2 + 0.1),
               torch.randn(_bc(b_kind, b, d, n, length)), torch.randn(_bc(c_kind, b, d, n, length)),
               torch.randn(d), torch.randn(b, d, length), torch.randn(d) * 0.3)
    inputs = _leaves(tuple(t.to(device) for t in tensors))
    y, last = ak.selective_scan(*inputs, delta_softplus=True, return_last_state=True, backend=backend)
    ref_inputs = _leaves(inputs, torch.float64)
    ref = mamba_reference(*ref_inputs, delta_softplus=True)
    assert_rel_close(y, ref, torch.float32, "y")
    grad = torch.randn_like(ref)
    y.backward(grad.float())
    ref.backward(grad)
    for name, got, want in zip(NAMES, inputs, ref_inputs):
        assert got.grad.shape == got.shape and got.grad.dtype == got.dtype, f"d{name}"
        assert_rel_close(got.grad, want.grad, torch.float32, f"d{name}", factor=4.0)


def test_time_invariant_b_is_not_copied():
    """The (D, N) weight reaches the kernels as a stride-0 view over batch and time."""
    from anatokernels.selective_scan import _variable_b_c

    u, A = torch.randn(2, 4, 9), torch.randn(4, 3)
    B, C = _variable_b_c("selective_scan", u, A, torch.randn(4, 3), torch.randn(4, 3))
    assert B.shape == (2, 4, 3, 9) and B.stride(0) == 0 and B.stride(3) == 0 and C.stride(3) == 0


def test_time_invariant_b_wrong_shape_is_named():
    u, delta, A = torch.randn(1, 4, 5), torch.randn(1, 4, 5), torch.randn(4, 3)
    with pytest.raises(ValueError, match=r"B must be .* time-invariant \(D, N\) = A.s shape \(4, 3\), got \(4, 2\)"):
        ak.selective_scan(u, delta, A, torch.randn(4, 2), torch.randn(4, 3), backend="reference")


# mamba-ssm's tolerances for its CUDA kernel against its float32 reference (tests/ops/test_selective_scan.py)
MAMBA_TOL = {torch.float16: (3e-3, 5e-3), torch.bfloat16: (3e-2, 5e-2)}
HALF_CASES = [c for c in backend_cases("selective_scan", ("cpu", "triton"))]


def _mamba_inputs(dtype, device, b=2, d=4, n=8, length=128, seed=0):
    """mamba's test inputs: activations in ``dtype``; A, D, delta_bias float32 parameters."""
    gen = torch.Generator().manual_seed(seed)
    act = [torch.randn(b, d, length, generator=gen), 0.5 * torch.rand(b, d, length, generator=gen),
           torch.randn(b, n, length, generator=gen), torch.randn(b, n, length, generator=gen),
           torch.randn(b, d, length, generator=gen)]
    u, delta, B, C, z = (t.to(device, dtype) for t in act)
    A = -0.5 * torch.rand(d, n, generator=gen)
    D, bias = torch.randn(d, generator=gen), 0.5 * torch.rand(d, generator=gen)
    return _leaves((u, delta, A.to(device), B, C, D.to(device), z, bias.to(device)))


def _assert_allclose(got, want, rtol, atol, name):
    got, want = got.float(), want.float()
    err = ((got - want).abs() - rtol * want.abs()).max().item()
    assert err <= atol, f"{name}: max(|got - want| - rtol·|want|) = {err:.3e} > atol {atol:.1e} (rtol {rtol:.1e})"


@pytest.mark.parametrize("device, backend", HALF_CASES)
@pytest.mark.parametrize("dtype", (torch.float16, torch.bfloat16), ids=("fp16", "bf16"))
@pytest.mark.parametrize("has_z", (True, False), ids=("z", "noz"))
@pytest.mark.parametrize("length", (128, 512), ids=("L128", "L512"))
def test_half_precision_within_mamba_tolerances(device, backend, dtype, has_z, length):
    if backend == "triton" and length > 128:
        pytest.skip("the interpreter is slow: L=128 only")
    inputs = list(_mamba_inputs(dtype, device, length=length))
    if not has_z:
        inputs[6] = None
    out = ak.selective_scan(*inputs, delta_softplus=True, backend=backend)
    ref_inputs = _leaves(inputs, torch.float32)
    ref = mamba_reference(*ref_inputs, delta_softplus=True)
    rtol, atol = MAMBA_TOL[dtype]
    rtolw, atolw = (max(1e-3, rtol), max(1e-3, atol)) if has_z else (1e-3, 1e-3)
    _assert_allclose(out, ref, rtol, atol, "out")
    grad = torch.randn_like(out)
    out.backward(grad)
    ref.backward(grad.float())
    u, delta, A, B, C, D, z, bias = inputs
    ru, rdelta, rA, rB, rC, rD, rz, rbias = ref_inputs
    assert A.grad.dtype == D.grad.dtype == bias.grad.dtype == torch.float32
    _assert_allclose(u.grad, ru.grad.to(dtype), rtol * 2, atol * 2, "du")
    _assert_allclose(delta.grad, rdelta.grad.to(dtype), rtol * 5, atol * 10, "ddelta")
    _assert_allclose(A.grad, rA.grad, rtolw, atolw * 5, "dA")
    _assert_allclose(B.grad, rB.grad, rtol, atol, "dB")
    _assert_allclose(C.grad, rC.grad, rtol, atol, "dC")
    _assert_allclose(D.grad, rD.grad, rtolw, atolw, "dD")
    _assert_allclose(bias.grad, rbias.grad, rtolw, atolw, "ddelta_bias")
