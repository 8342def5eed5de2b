"""selective_scan / selective_scan3d: every backend against the float64 reference, every gradient.

Triton runs through the interpreter here (about 0.05 ms per scanned element), so
its shapes are the smallest that still cover several chunks (16 steps each in
the interpreter, and in the C++ kernels through a fixture), partial last chunks,
odd channel counts and every order kind.
"""

import pytest
import torch

import anatokernels as ak
from anatokernels import scan_order
from anatokernels.selective_scan import cpu as cpu_backend
from anatokernels.selective_scan import reference

from kernel_testing import assert_rel_close, backend_cases, rel_err

CASES = backend_cases("selective_scan3d")
NAMES = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")


@pytest.fixture(autouse=True)
def _short_cpu_chunks(monkeypatch):
    """The C++ kernels checkpoint every 16 steps here (256 by default), so that every test crosses chunks."""
    monkeypatch.setattr(cpu_backend, "CHUNK", 16)


def _inputs3d(b, k, d, length, n, dtype, device, optional=True, softplus=True):
    """(u, delta, A, B, C, D, z, delta_bias) in the selective_scan3d layout; D, z, delta_bias None if not optional."""
    u = torch.randn(b, k, d, length)
    # pre-softplus δ around 0; without softplus a positive step
    delta = torch.randn(b, k, d, length) * 0.5 if softplus else torch.rand(b, k, d, length) * 0.5 + 0.05
    A = -(torch.rand(k, d, n) * 2 + 0.1)
    B = torch.randn(b, k, n, length)
    C = torch.randn(b, k, n, length)
    extra = (torch.randn(k, d), torch.randn(b, d, length), torch.randn(k, d) * 0.3) if optional else (None,) * 3
    tensors = (u, delta, A, B, C, *extra)
    # activations in the tested dtype; A, D, delta_bias stay float32 parameters as in a mixed-precision model
    act = {0, 1, 3, 4, 6}
    return tuple(None if t is None else t.to(device, dtype if i in act or dtype == torch.float64 else torch.float32)
                 for i, t in enumerate(tensors))


def _leaves(tensors):
    return tuple(None if t is None else t.detach().clone().requires_grad_() for t in tensors)


def _float64(tensors):
    return tuple(None if t is None else t.detach().double().requires_grad_() for t in tensors)


def _check_grads(fast_inputs, ref_inputs, dtype, factor=1.0):
    """Every gradient against the reference's, within the bound of the activations' dtype."""
    for name, fast, ref in zip(NAMES, fast_inputs, ref_inputs):
        if ref is None:
            continue
        assert fast.grad is not None, f"no gradient for {name}"
        assert fast.grad.dtype == fast.dtype, f"d{name} has dtype {fast.grad.dtype}, {name} {fast.dtype}"
        assert_rel_close(fast.grad, ref.grad, dtype, f"d{name}", factor=factor)


def _run3d(inputs, spatial, orders, softplus, backend):
    u, delta, A, B, C, D, z, bias = inputs
    return ak.selective_scan3d(u, delta, A, B, C, D, z, bias, softplus, spatial_shape=spatial, orders=orders,
                               backend=backend)


def _dtypes(device, backend):
    if backend == "triton" and device == "cpu":
        return [torch.float32]  # the interpreter is slow: one dtype (fp16 is covered below)
    return [torch.float32, torch.float16, torch.bfloat16]


# (B, K, D, spatial, N, orders): odd volumes, a 1x1xL line, K from 1 to 4 with repeated and reversed orders
SHAPES3D = [
    (1, 3, 3, (3, 4, 5), 16, ("zyx", "-zyx", "yxz")),
    (2, 4, 6, (2, 1, 6), 4, ("zyx", "zyx", "-xzy", "-zyx")),
    (2, 2, 5, (1, 1, 37), 1, ("-zyx", "zyx")),
    (1, 1, 7, (3, 4, 5), 4, ("-yzx",)),
]
IDS3D = [f"B{b}-K{k}-D{d}-Z{s[0]}Y{s[1]}X{s[2]}-N{n}" for b, k, d, s, n, _ in SHAPES3D]


@pytest.mark.parametrize("device, backend", CASES)
@pytest.mark.parametrize("b, k, d, spatial, n, orders", SHAPES3D, ids=IDS3D)
def test_selective_scan3d_matches_reference(device, backend, b, k, d, spatial, n, orders):
    length = spatial[0] * spatial[1] * spatial[2]
    for dtype in _dtypes(device, backend):
        inputs = _leaves(_inputs3d(b, k, d, length, n, dtype, device))
        _check_against_reference(inputs, spatial, orders, True, backend, dtype)


@pytest.mark.parametrize("device, backend", CASES)
def test_selective_scan3d_without_optional_inputs(device, backend):
    spatial, orders = (2, 3, 3), ("xyz", "-yxz")
    inputs = _leaves(_inputs3d(2, 2, 4, 18, 4, torch.float32, device, optional=False, softplus=False))
    _check_against_reference(inputs, spatial, orders, False, backend, torch.float32)


@pytest.mark.parametrize("device, backend", backend_cases("selective_scan3d", ("triton",)))
def test_triton_float16(device, backend):
    spatial, orders = (2, 3, 3), ("zyx", "-yxz")
    inputs = _leaves(_inputs3d(1, 2, 4, 18, 4, torch.float16, device))
    _check_against_reference(inputs, spatial, orders, True, backend, torch.float16)


def _check_against_reference(inputs, spatial, orders, softplus, backend, dtype):
    """selective_scan3d on ``backend`` against the float64 reference: the output and every gradient."""
    out = _run3d(inputs, spatial, orders, softplus, backend)
    ref_inputs = _float64(inputs)
    ref = _run3d(ref_inputs, spatial, orders, softplus, "reference")
    assert out.dtype == dtype
    assert_rel_close(out, ref, dtype, "out")
    grad = torch.randn_like(out)
    out.backward(grad)
    ref.backward(grad.double())
    _check_grads(inputs, ref_inputs, dtype)


# (B, D, L, N, G): grouped B/C, N in {1, 4, 16}, D odd
SHAPES1D = [(2, 6, 40, 4, 2), (1, 5, 33, 16, 1), (2, 3, 21, 1, 3)]
IDS1D = [f"B{b}-D{d}-L{length}-N{n}-G{g}" for b, d, length, n, g in SHAPES1D]


@pytest.mark.parametrize("device, backend", backend_cases("selective_scan"))
@pytest.mark.parametrize("b, d, length, n, groups", SHAPES1D, ids=IDS1D)
def test_selective_scan_matches_reference(device, backend, b, d, length, n, groups):
    u, delta = torch.randn(b, d, length), torch.randn(b, d, length) * 0.5
    A = -(torch.rand(d, n) * 2 + 0.1)
    shape = (b, groups, n, length) if groups > 1 else (b, n, length)
    B, C = torch.randn(shape), torch.randn(shape)
    D, z, bias = torch.randn(d), torch.randn(b, d, length), torch.randn(d) * 0.3
    inputs = _leaves(tuple(t.to(device) for t in (u, delta, A, B, C, D, z, bias)))
    y, last = ak.selective_scan(*inputs, delta_softplus=True, return_last_state=True, backend=backend)
    ref_inputs = _float64(inputs)
    ref_y, ref_last = ak.selective_scan(*ref_inputs, delta_softplus=True, return_last_state=True,
                                        backend="reference")
    assert last.shape == (b, d, n) and last.dtype == torch.float32
    assert_rel_close(y, ref_y, torch.float32, "y")
    assert_rel_close(last, ref_last, torch.float32, "last_state")
    grad_y, grad_last = torch.randn_like(ref_y), torch.randn_like(ref_last)
    torch.autograd.backward((y, last), (grad_y.float(), grad_last.float()))
    torch.autograd.backward((ref_y, ref_last), (grad_y, grad_last))
    _check_grads(inputs, ref_inputs, torch.float32)


@pytest.mark.parametrize("device, backend", CASES)
def test_k1_zyx_equals_selective_scan(device, backend):
    spatial = (2, 3, 4)
    u, delta, A, B, C, D, z, bias = _inputs3d(2, 1, 5, 24, 4, torch.float32, device)
    out3d = ak.selective_scan3d(u, delta, A, B, C, D, z, bias, True, spatial_shape=spatial, orders=("zyx",),
                                backend=backend)
    out1d = ak.selective_scan(u[:, 0], delta[:, 0], A[0], B[:, 0], C[:, 0], D[0], z, bias[0], True,
                              backend=backend)
    assert rel_err(out3d, out1d) <= 1e-6


def test_reference_3d_equals_permute_scan_unpermute():
    """Order k of the 3D reference is the 1-D scan of the volume permuted with torch.permute (and flipped)."""
    spatial, orders = (2, 3, 4), ("yxz", "-xzy")
    u, delta, A, B, C, D, _, bias = _inputs3d(1, 2, 3, 24, 4, torch.float64, "cpu")
    total = torch.zeros(1, 3, 24, dtype=torch.float64)
    for k, order in enumerate(orders):
        axes = ["zyx".index(a) for a in order.lstrip("-")]
        native = torch.arange(24).view(spatial).permute(*axes).reshape(-1)  # step -> native position
        if order.startswith("-"):
            native = native.flip(0)
        assert torch.equal(native, scan_order(spatial, order))
        y = reference.selective_scan(u[:, k][..., native], delta[:, k][..., native], A[k], B[:, k][..., native],
                                     C[:, k][..., native], D[k], None, bias[k], True)
        total[..., native] += y
    out = reference.selective_scan3d(u, delta, A, B, C, D, None, bias, True, spatial_shape=spatial, orders=orders)
    assert rel_err(out, total) <= 1e-12


def test_gradcheck_reference():
    def scan1d(*args):
        return reference.selective_scan(*args, delta_softplus=True, return_last_state=True)

    u, delta, A, B, C, D, z, bias = _inputs3d(1, 1, 2, 5, 2, torch.float64, "cpu")
    grouped = (B.repeat(1, 2, 1, 1), C.repeat(1, 2, 1, 1))  # G = D = 2
    assert torch.autograd.gradcheck(scan1d, _leaves((u[:, 0], delta[:, 0], A[0], *grouped, D[0], z, bias[0])))

    def scan3d(*args):
        return reference.selective_scan3d(*args, True, spatial_shape=(1, 2, 3), orders=("zyx", "-xzy"))

    assert torch.autograd.gradcheck(scan3d, _leaves(_inputs3d(1, 2, 2, 6, 2, torch.float64, "cpu")))


@pytest.mark.parametrize("device, backend", CASES)
def test_extreme_steps_stay_finite(device, backend):
    """δ up to 20 after softplus and A down to -N: no overflow, no NaN, still the reference."""
    spatial, orders, n = (2, 2, 5), ("zyx", "-yxz"), 16
    u, delta, A, B, C, D, z, bias = _inputs3d(1, 2, 3, 20, n, torch.float32, device)
    delta = torch.linspace(-30.0, 20.0, 20, device=device).expand_as(u).contiguous()
    A = -torch.arange(1, n + 1, dtype=torch.float32, device=device).expand(2, 3, n).contiguous()
    inputs = _leaves((u * 10, delta, A, B, C, D, z, torch.zeros_like(bias)))
    out = _run3d(inputs, spatial, orders, True, backend)
    ref_inputs = _float64(inputs)
    ref = _run3d(ref_inputs, spatial, orders, True, "reference")
    assert_rel_close(out, ref, torch.float32, "out")
    out.backward(torch.ones_like(out))
    ref.backward(torch.ones_like(ref))
    _check_grads(inputs, ref_inputs, torch.float32)


@pytest.mark.parametrize("device, backend", [c for c in CASES if c.values[1] != "reference"])
def test_saved_state_is_chunk_checkpoints_only(device, backend):
    """What the backward keeps is the inputs plus (B, K, D, L/chunk, N) checkpoints, never (B, K, D, L, N)."""
    b, k, d, n, spatial = 1, 2, 3, 8, (4, 4, 4)
    inputs = _leaves(_inputs3d(b, k, d, 64, n, torch.float32, device))
    out = _run3d(inputs, spatial, ("zyx", "yxz"), True, backend)
    saved = out.grad_fn.saved_tensors
    extra = sum(t.numel() for t in saved) - sum(t.numel() for t in inputs)
    checkpoints = saved[-1]
    assert checkpoints.dim() == 5 and checkpoints.shape[3] < 64
    assert extra == checkpoints.numel() < b * k * d * 64 * n


CPU_ONLY = backend_cases("selective_scan3d", ("cpu",))


@pytest.mark.parametrize("device, backend", CPU_ONLY)
@pytest.mark.parametrize("isa", ["generic", "avx2"])
def test_cpu_instruction_sets_agree(device, backend, isa, monkeypatch):
    """Every compiled instruction-set variant (ANATO_CPU_ISA narrows the choice) gives the same result."""
    spatial, orders = (3, 4, 5), ("zyx", "-yxz")
    for n in (16, 5):  # a fixed-N kernel and the generic-N one
        inputs = _leaves(_inputs3d(1, 2, 3, 60, n, torch.float32, "cpu"))
        ref_inputs = _float64(inputs)
        ref = _run3d(ref_inputs, spatial, orders, True, "reference")
        ref.backward(torch.ones_like(ref))
        monkeypatch.setenv("ANATO_CPU_ISA", isa)
        out = _run3d(inputs, spatial, orders, True, "cpu")
        out.backward(torch.ones_like(out))
        assert_rel_close(out, ref, torch.float32, "out")
        _check_grads(inputs, ref_inputs, torch.float32)
        monkeypatch.delenv("ANATO_CPU_ISA")


@pytest.mark.parametrize("device, backend", CPU_ONLY)
def test_cpu_many_chunks_and_phases(device, backend, monkeypatch):
    """Odd chunk length and a sequence spanning two synchronisation phases of the C++ kernels."""
    # chunks of 16 (the fixture): phases of 65536 / (B·G·N·16) = 32 chunks, 512 steps
    spatial, orders = (1, 1, 600), ("-zyx", "zyx")
    inputs = _leaves(_inputs3d(8, 2, 2, 600, 16, torch.float32, "cpu"))
    out = _run3d(inputs, spatial, orders, True, "cpu")
    ref_inputs = _float64(inputs)
    ref = _run3d(ref_inputs, spatial, orders, True, "reference")
    assert_rel_close(out, ref, torch.float32, "out", factor=4.0)
    grad = torch.randn_like(out)
    out.backward(grad)
    ref.backward(grad.double())
    _check_grads(inputs, ref_inputs, torch.float32, factor=4.0)
    monkeypatch.setattr(cpu_backend, "CHUNK", 7)  # 73 chunks (511 steps) per phase
    inputs7 = _leaves(tuple(None if t is None else t.detach() for t in inputs))
    out7 = _run3d(inputs7, spatial, orders, True, "cpu")
    assert_rel_close(out7, ref, torch.float32, "out (chunk 7)", factor=4.0)


@pytest.mark.parametrize("device, backend", CPU_ONLY)
def test_auto_on_cpu_uses_the_extension(device, backend):
    from anatokernels import _dispatch

    assert _dispatch.resolve("selective_scan3d", "auto", torch.device("cpu")) == "cpu"
    assert _dispatch.resolve("selective_scan", "auto", torch.device("cpu")) == "cpu"


def test_bad_inputs():
    u, delta, A, B, C, D, z, bias = _inputs3d(1, 2, 3, 24, 4, torch.float32, "cpu")
    kw = dict(spatial_shape=(2, 3, 4), orders=("zyx", "yxz"), backend="reference")
    with pytest.raises(ValueError, match="L=24 does not match spatial_shape"):
        ak.selective_scan3d(u, delta, A, B, C, **{**kw, "spatial_shape": (2, 3, 5)})
    with pytest.raises(ValueError, match="got 1 orders"):
        ak.selective_scan3d(u, delta, A, B, C, **{**kw, "orders": ("zyx",)})
    with pytest.raises(ValueError, match="invalid scan order"):
        ak.selective_scan3d(u, delta, A, B, C, **{**kw, "orders": ("zyx", "zzx")})
    with pytest.raises(ValueError, match="delta must have shape"):
        ak.selective_scan3d(u, delta[..., :-1], A, B, C, **kw)
    with pytest.raises(ValueError, match=r"A must have shape \(K, D, N\)"):
        ak.selective_scan3d(u, delta, A[:, :2], B, C, **kw)
    with pytest.raises(ValueError, match=r"C must have shape \(B, K, N, L\)"):
        ak.selective_scan3d(u, delta, A, B, C[:, :, :3], **kw)
    with pytest.raises(ValueError, match="z must have shape"):
        ak.selective_scan3d(u, delta, A, B, C, D, z[:, :2], **kw)
    with pytest.raises(ValueError, match=r"delta_bias must be 2-D \(K, D\)"):
        ak.selective_scan3d(u, delta, A, B, C, D, z, bias[0], **kw)
    with pytest.raises(TypeError, match="must share one dtype"):
        ak.selective_scan3d(u, delta.double(), A, B, C, **kw)
    with pytest.raises(TypeError, match="u must be a torch.Tensor"):
        ak.selective_scan3d(u.numpy(), delta, A, B, C, **kw)
    with pytest.raises(TypeError, match="dtype in"):
        ak.selective_scan3d(u.long(), delta, A, B, C, **kw)
    with pytest.raises(ValueError, match="unknown backend"):
        ak.selective_scan3d(u, delta, A, B, C, **{**kw, "backend": "fast"})
    u1, d1, A1 = u[:, 0], delta[:, 0], A[0]
    with pytest.raises(ValueError, match="groups G=2 of B and C must divide D=3"):
        ak.selective_scan(u1, d1, A1, torch.randn(1, 2, 4, 24), torch.randn(1, 2, 4, 24))
    with pytest.raises(ValueError, match="C must have B's shape"):
        ak.selective_scan(u1, d1, A1, B[:, 0], C[:, 0, :3])
    with pytest.raises(ValueError, match=r"B must be 3-D \(B, N, L\), 4-D .* or time-invariant \(D, N\)"):
        ak.selective_scan(u1, d1, A1, B[0, 0], C[0, 0])
    with pytest.raises(ValueError, match="every dimension must be non-empty"):
        ak.selective_scan(u1[..., :0], d1[..., :0], A1, B[:, 0, :, :0], C[:, 0, :, :0])
