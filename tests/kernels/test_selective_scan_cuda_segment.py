"""The CUDA segment-parallel scan's arithmetic (csrc/selective_scan_segment/) on the CPU, and its kernels on a GPU.

The CUDA kernels are thin: each thread calls one ``__host__ __device__`` function of ``segment_walk.h`` for
its task (b, k, d, segment) or (b, k, d, state). ``cpp/selective_scan_segment_check.cpp`` runs the same
functions over the same tasks with plain loops, built with g++ and called through ctypes, so the arithmetic
the GPU runs is the arithmetic checked here: outputs and last state against the float64 reference, and each
phase's intermediate results (segment summaries, carries, reverse summaries, reverse carries) against the
float64 segment model of ``test_selective_scan_segment``. The backward's functions (``segment_backward.h``)
are checked the same way: every gradient against float64 autograd through the reference, then every task run
again as a GPU block's idle warps run it (which must change nothing). Segments of 3 and 4 steps cut rows of 5
and 7 unevenly; outputs are NaN-poisoned (unused slots of orders with fewer segments stay NaN and are not read).

``-m gpu``: the CUDA kernels themselves (backend ``cuda_segment``, segments of 64) through the op's autograd,
forward and every gradient against the float64 reference, float32/float64/bfloat16, NaN-poisoned buffers. They
have never run: passing there is what verifies the backend (record its digest in ``CUDA_TESTED_SOURCES``).
"""

import ctypes
import shutil
import subprocess
from pathlib import Path

import pytest
import torch
from test_selective_scan_segment import _inputs, _model, _reference, _reference_case

import anatokernels as ak
from anatokernels import _extension, _memory
from anatokernels.scan_order import ALL_ORDERS, geometry_tensor, join_orders, order_geometry
from anatokernels.selective_scan import cuda_segment
from anatokernels.selective_scan.function import selective_scan3d_forward

from kernel_testing import assert_rel_close

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.skipif(shutil.which("g++") is None, reason="no g++")


@pytest.fixture(scope="module")
def lib(tmp_path_factory):
    path = tmp_path_factory.mktemp("segment") / "selective_scan_segment_check.so"
    subprocess.run(["g++", "-std=c++17", "-O1", "-shared", "-fPIC", "-Wall", "-Werror", "-I", str(ROOT / "csrc"),
                    "-o", str(path), str(Path(__file__).parent / "cpp" / "selective_scan_segment_check.cpp")],
                   check=True)
    return ctypes.CDLL(str(path))


def _slots(spatial, orders, seg):
    return 1 + max(g.sizes[0] * g.sizes[1] * -(-g.sizes[2] // seg) for g in (order_geometry(spatial, o)
                                                                               for o in orders))


def test_backend_slot_count():
    """The backend module's slot count (from the geometry rows, or from the orders for the fake kernel)."""
    spatial, orders = (3, 5, 70), ("zyx", "-yxz", "xzy")
    geo = geometry_tensor(spatial, orders, torch.device("cpu"))
    expected = 1 + 5 * 70  # "-yxz": 350 rows of 3 (z) steps; "zyx" has 15 rows of 70 = 2 segments each: 30
    assert cuda_segment.checkpoint_slots(spatial, orders, 64) == cuda_segment._slots(geo, 64) == expected
    assert _slots(spatial, orders, 64) == expected


def _ptr(t):
    return None if t is None else ctypes.c_void_p(t.data_ptr())


def _host_forward(lib, inputs, spatial, orders, seg, softplus=True, phases=3):
    """(out (Bt, Dm, L), last (Bt, K, Dm, N), states, sums) of the host build; every buffer NaN-poisoned."""
    inputs = tuple(None if t is None else t.contiguous() for t in inputs)
    u, _delta, A, B = inputs[:4]
    bt, k, dm, length = u.shape
    n, g, slots = A.shape[2], B.shape[2], _slots(spatial, orders, seg)
    dt = u.dtype
    nan = dict(dtype=dt)
    states = torch.full((bt, k, dm, slots, n), float("nan"), **nan)
    sums = torch.full((bt, k, dm, slots), float("nan"), **nan)
    y = torch.full((bt, k, dm, length), float("nan"), **nan)
    last = torch.full((bt, k, dm, n), float("nan"), **nan)
    out = torch.full((bt, dm, length), float("nan"), **nan)
    geo = geometry_tensor(tuple(spatial), tuple(orders), torch.device("cpu"))
    sizes = torch.tensor([bt, k, dm, length, n, g, seg, slots], dtype=torch.int32)
    fn = lib.segment_forward_f64 if dt == torch.float64 else lib.segment_forward_f32
    rc = fn(*(_ptr(t) for t in inputs), _ptr(geo), _ptr(sizes), int(softplus), phases, _ptr(states), _ptr(sums),
            _ptr(y), _ptr(last), _ptr(out))
    assert rc == 0, "state count above the widest instantiation"
    return out, last, states, sums


# (spatial, orders, B, D, G, N, seg): the 12 orders (reversed included), K 1-4, N not a power of two
# (widths 4, 8 and 64 padded, 4 and 16 full), groups, segments that do not divide the rows
CASES = [
    ((3, 5, 7), ("zyx", "zxy", "yzx", "yxz"), 1, 2, 1, 3, 4),
    ((3, 5, 7), ("xzy", "xyz", "-zyx", "-zxy"), 1, 2, 2, 5, 3),
    ((3, 5, 7), ("-yzx", "-yxz", "-xzy", "-xyz"), 2, 2, 1, 16, 4),
    ((3, 5, 7), ("yxz", "yxz"), 1, 3, 3, 33, 4),
    ((3, 5, 7), ("-xzy",), 2, 4, 2, 6, 3),
    ((3, 5, 7), ("-zyx", "xzy", "yxz"), 1, 2, 1, 4, 64),
    ((1, 1, 37), ("zyx", "-zyx", "-zyx"), 1, 2, 1, 3, 4),
    ((1, 1, 37), ("zyx",), 2, 3, 3, 7, 8),
]
IDS = [f"Z{s[0]}Y{s[1]}X{s[2]}-{'_'.join(o)}-B{b}-D{d}-G{g}-N{n}-SEG{seg}" for s, o, b, d, g, n, seg in CASES]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("spatial, orders, b, d, g, n, seg", CASES, ids=IDS)
def test_forward_matches_reference(lib, spatial, orders, b, d, g, n, seg, dtype):
    length = spatial[0] * spatial[1] * spatial[2]
    inputs = _inputs(b, len(orders), d, g, n, length, dtype)
    ref_out, ref_last = _reference(tuple(None if t is None else t.double() for t in inputs), spatial, orders, True)
    out, last, _states, _sums = _host_forward(lib, inputs, spatial, orders, seg)
    assert_rel_close(out, ref_out, dtype, "out")
    assert_rel_close(last, ref_last, dtype, "last_state")


def test_all_orders_covered():
    assert {o for case in CASES for o in case[1]} == set(ALL_ORDERS)


def test_without_optional_inputs(lib):
    spatial, orders = (2, 3, 5), ("-xzy", "yzx")
    inputs = _inputs(1, 2, 2, 1, 3, 30, torch.float64, optional=False)
    ref_out, ref_last = _reference(inputs, spatial, orders, False)
    out, last, _states, _sums = _host_forward(lib, inputs, spatial, orders, 4, softplus=False)
    assert_rel_close(out, ref_out, torch.float64, "out")
    assert_rel_close(last, ref_last, torch.float64, "last_state")


def test_phases_against_float64_model(lib):
    """Phase 1 (zero-start end states and Σδ per segment) and phase 2 (entering states, last state)."""
    spatial, orders, seg = (3, 5, 7), ("zyx", "-yxz", "xzy"), 4
    inputs = _inputs(2, 3, 2, 1, 3, 105, torch.float64)
    model = _model(inputs, spatial, orders, seg, torch.zeros(2, 2, 105, dtype=torch.float64),
                   torch.zeros(2, 3, 2, 3, dtype=torch.float64))
    _out, _last, summaries, sums = _host_forward(lib, inputs, spatial, orders, seg, phases=1)
    _out, last, carries, _sums = _host_forward(lib, inputs, spatial, orders, seg, phases=2)
    assert summaries.shape[3] == max(m[0].shape[2] for m in model) + 1
    for k, (hend, sd, H, _R, _G) in enumerate(model):
        count = hend.shape[2]
        assert_rel_close(summaries[:, k, :, 1:count + 1], hend, torch.float64, f"order {k}: segment end states")
        assert_rel_close(sums[:, k, :, 1:count + 1], sd, torch.float64, f"order {k}: segment Σδ")
        assert_rel_close(carries[:, k, :, :count + 1], H, torch.float64, f"order {k}: carries")
        assert_rel_close(last[:, k], H[:, :, -1], torch.float64, f"order {k}: last state")


def _host_backward_carries(lib, inputs, spatial, orders, seg, dout, dlast, phases):
    """gb (Bt, K, Dm, slots, N): slot j = R_j after phase 1, slot j + 1 = G_j after phase 2 (NaN-poisoned)."""
    _u, delta, A, B, C, _D, z, bias = inputs
    bt, k, dm, length = delta.shape
    n, slots = A.shape[2], _slots(spatial, orders, seg)
    gb = torch.full((bt, k, dm, slots, n), float("nan"), dtype=delta.dtype)
    sums = torch.full((bt, k, dm, slots), float("nan"), dtype=delta.dtype)
    geo = geometry_tensor(tuple(spatial), tuple(orders), torch.device("cpu"))
    sizes = torch.tensor([bt, k, dm, length, n, B.shape[2], seg, slots], dtype=torch.int32)
    fn = lib.segment_backward_carries_f64 if delta.dtype == torch.float64 else lib.segment_backward_carries_f32
    assert fn(*(_ptr(t) for t in (delta, A, C, z, bias, geo, sizes)), 1, _ptr(dout), _ptr(dlast), phases, _ptr(gb),
              _ptr(sums)) == 0
    return gb


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
def test_backward_phases_against_float64_model(lib, dtype):
    """Backward phase 1 (reverse summaries R_j) and phase 2 (reverse carries G_j from dlast)."""
    spatial, orders, seg = (3, 5, 7), ("zyx", "-yxz", "xzy", "-xzy"), 3
    inputs = _inputs(2, 4, 2, 1, 5, 105, dtype)
    dout, dlast = torch.randn(2, 2, 105, dtype=dtype), torch.randn(2, 4, 2, 5, dtype=dtype)
    model = _model(inputs, spatial, orders, seg, dout.double(), dlast.double())
    r_buf = _host_backward_carries(lib, inputs, spatial, orders, seg, dout, dlast, 1)
    g_buf = _host_backward_carries(lib, inputs, spatial, orders, seg, dout, dlast, 2)
    for k, (hend, _sd, _H, R, G) in enumerate(model):
        count = hend.shape[2]
        assert_rel_close(r_buf[:, k, :, :count], R, dtype, f"order {k}: reverse summaries")
        assert_rel_close(g_buf[:, k, :, 1:count + 1], G, dtype, f"order {k}: reverse carries")


def _host_backward(lib, inputs, spatial, orders, seg, dout, dlast, softplus=True):
    """Every gradient (du, ddelta, dA, dB, dC, dD, dz, dbias) of the host build, float64; None where no input."""
    inputs = tuple(None if t is None else t.contiguous() for t in inputs)
    u, _delta, A, B, _C, D, z, bias = inputs
    _out, _last, H, _sums = _host_forward(lib, inputs, spatial, orders, seg, softplus)
    nan = lambda t: torch.full_like(t, float("nan"))
    grads = [nan(u), nan(u), torch.zeros_like(A), torch.zeros_like(B), torch.zeros_like(B),
             torch.zeros_like(D) if D is not None else None, torch.zeros_like(bias) if bias is not None else None,
             nan(u), torch.full((u.shape[0], u.shape[2], u.shape[3]), float("nan"), dtype=u.dtype)]
    geo = geometry_tensor(tuple(spatial), tuple(orders), torch.device("cpu"))
    sizes = torch.tensor([*u.shape[:2], u.shape[2], u.shape[3], A.shape[2], B.shape[2], seg, H.shape[3]],
                         dtype=torch.int32)
    pointers = lambda ts: (ctypes.c_void_p * len(ts))(*(None if t is None else t.data_ptr() for t in ts))
    gb, sums = nan(H), nan(H[..., 0])  # the backward's state-gradient and Σδ buffers
    rc = lib.segment_backward_f64(pointers(inputs), _ptr(geo), _ptr(sizes), int(softplus), _ptr(dout), _ptr(dlast),
                                  _ptr(H), _ptr(gb), _ptr(sums), pointers(grads))
    assert rc == 0
    du, ddelta, dA, dB, dC, dD, dbias, _y, dz = grads
    return du, ddelta, dA, dB, dC, dD, dz if z is not None else None, dbias


def _check_backward(lib, spatial, orders, b, d, g, n, seg, softplus=True, optional=True):
    length = spatial[0] * spatial[1] * spatial[2]
    inputs = _inputs(b, len(orders), d, g, n, length, torch.float64, optional)
    leaves = tuple(None if t is None else t.clone().requires_grad_() for t in inputs)
    ref_out, ref_last = _reference(leaves, spatial, orders, softplus)
    dout, dlast = torch.randn_like(ref_out), torch.randn_like(ref_last)
    torch.autograd.backward((ref_out, ref_last), (dout, dlast))
    grads = _host_backward(lib, inputs, spatial, orders, seg, dout, dlast, softplus)
    for name, grad, leaf in zip(("u", "delta", "A", "B", "C", "D", "z", "delta_bias"), grads, leaves):
        if leaf is None:
            assert grad is None, name
        else:
            assert_rel_close(grad, leaf.grad, torch.float64, f"d{name}")


@pytest.mark.parametrize("spatial, orders, b, d, g, n, seg", CASES, ids=IDS)
def test_backward_matches_reference(lib, spatial, orders, b, d, g, n, seg):
    """Every gradient (the last state's included) against float64 autograd through the reference."""
    _check_backward(lib, spatial, orders, b, d, g, n, seg)


def test_backward_without_optional_inputs(lib):
    _check_backward(lib, (2, 3, 5), ("-xzy", "yzx"), 1, 2, 1, 3, 4, softplus=False, optional=False)
    _check_backward(lib, (1, 1, 11), ("zyx",), 2, 2, 2, 5, 4, softplus=False, optional=False)


def test_state_count_above_64_is_refused(lib):
    inputs = _inputs(1, 1, 1, 1, 65, 5, torch.float64)
    with pytest.raises(AssertionError, match="widest instantiation"):
        _host_forward(lib, inputs, (1, 1, 5), ("zyx",), 4)


def _require_cuda_segment():
    if not _extension.load(build=True) or not all(
            _extension.has_op(f"selective_scan3d_segment_{p}_cuda") for p in ("fwd", "bwd")):
        pytest.fail(f"the CUDA extension with the segment scan is unavailable ({_extension.status()})")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("spatial, orders, b, d, g, n, seg", CASES[:6], ids=IDS[:6])
def test_cuda_forward_matches_reference(spatial, orders, b, d, g, n, seg):
    """The CUDA kernels themselves (segments of 64: one per row here), float32, NaN-poisoned buffers."""
    _require_cuda_segment()
    length = spatial[0] * spatial[1] * spatial[2]
    inputs = _inputs(b, len(orders), d, g, n, length)
    ref_out, ref_last = _reference(tuple(None if t is None else t.double() for t in inputs), spatial, orders, True)
    cuda = tuple(None if t is None else t.cuda() for t in inputs)
    geo = geometry_tensor(spatial, tuple(orders), torch.device("cuda"))
    with _memory.poison_outputs():
        out, last, _states = cuda_segment.forward(*cuda, geo, True, cuda_segment.CHUNK)
    assert_rel_close(out, ref_out, torch.float32, "out")
    assert_rel_close(last, ref_last, torch.float32, "last_state")


# The GPU cases of the backend (segments of 64): CASES (rows of at most 7 steps, one segment each) plus rows of 70
# (a 64-step segment and a 6-step one), Dm/G channels per group not a multiple of the backward's 4 channels per
# block (idle warps), and N = 16 (the benchmark's exact width) and 64.
GPU_CASES = [case[:6] for case in CASES] + [
    ((2, 3, 70), ("zyx", "-zyx", "yxz", "-xzy"), 1, 5, 1, 16),
    ((1, 2, 70), ("-yxz", "xyz"), 2, 6, 2, 64),
    ((1, 1, 131), ("zyx",), 2, 9, 3, 16),
]
GPU_IDS = [f"Z{s[0]}Y{s[1]}X{s[2]}-{'_'.join(o)}-B{b}-D{d}-G{g}-N{n}" for s, o, b, d, g, n in GPU_CASES]


def _cuda_segment_grads(inputs, spatial, orders, softplus, dout, dlast):
    """(out, last) and every gradient through the op's autograd with backend cuda_segment, NaN-poisoned buffers."""
    leaves = tuple(None if t is None else t.cuda().requires_grad_() for t in inputs)
    with _memory.poison_outputs():
        out, last, _ = selective_scan3d_forward(*leaves, list(spatial), join_orders(orders), softplus, "cuda_segment")
        torch.autograd.backward((out, last), (dout.cuda().to(out.dtype), dlast.cuda().to(last.dtype)))
    return out, last, tuple(None if t is None else t.grad for t in leaves)


def _check_cuda_segment(spatial, orders, b, d, g, n, dtype, softplus=True, optional=True):
    inputs, leaves, ref_out, ref_last, dout, dlast = _reference_case(spatial, orders, b, d, g, n, dtype, softplus,
                                                                     optional)
    out, last, grads = _cuda_segment_grads(inputs, spatial, orders, softplus, dout, dlast)
    assert_rel_close(out, ref_out, dtype, "out")
    assert_rel_close(last, ref_last, torch.float64 if dtype == torch.float64 else torch.float32, "last_state")
    for name, grad, leaf, given in zip(("u", "delta", "A", "B", "C", "D", "z", "delta_bias"), grads, leaves, inputs):
        if leaf is not None:
            assert grad.dtype == given.dtype, f"d{name}: {grad.dtype}, input {given.dtype}"
            assert_rel_close(grad, leaf.grad, dtype, f"d{name}")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("spatial, orders, b, d, g, n", GPU_CASES, ids=GPU_IDS)
def test_cuda_backend_forward_and_backward(spatial, orders, b, d, g, n, dtype):
    """Backend cuda_segment through the op's autograd: the output, the last state and every gradient against
    float64 autograd through the reference."""
    _require_cuda_segment()
    _check_cuda_segment(spatial, orders, b, d, g, n, dtype)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_backend_variants():
    """Without D, z, delta_bias and softplus; bfloat16 activations (float32 accumulation)."""
    _require_cuda_segment()
    _check_cuda_segment((2, 3, 70), ("-xzy", "yzx"), 1, 3, 1, 5, torch.float32, softplus=False, optional=False)
    _check_cuda_segment((1, 1, 67), ("zyx",), 2, 4, 2, 16, torch.float32, softplus=False, optional=False)
    _check_cuda_segment((3, 5, 7), ("zyx", "-yxz", "xzy"), 1, 4, 2, 16, torch.bfloat16)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_backend_through_the_public_ops():
    """``backend="cuda_segment"`` by name in selective_scan (grouped B/C, L = 2049: 33 segments) and
    selective_scan3d, float32, against the reference backend in float64 on the same GPU."""
    _require_cuda_segment()
    gen = torch.Generator().manual_seed(0)
    rand = lambda *shape: torch.randn(*shape, generator=gen).cuda()
    inputs = (rand(2, 6, 2049), rand(2, 6, 2049) * 0.5, -(rand(6, 7).abs() + 0.1), rand(2, 2, 7, 2049),
              rand(2, 2, 7, 2049), rand(6), rand(2, 6, 2049), rand(6))  # u, delta, A, B, C, D, z, delta_bias
    results = []
    for backend, dtype in (("cuda_segment", torch.float32), ("reference", torch.float64)):
        leaves = [t.to(dtype).clone().requires_grad_() for t in inputs[:5]]
        D, z, bias = (t.to(dtype) for t in inputs[5:])
        with _memory.poison_outputs():
            y, last = ak.selective_scan(*leaves, D=D, z=z, delta_bias=bias, delta_softplus=True,
                                        return_last_state=True, backend=backend)
            (y.square().sum() + last.sum()).backward()
        results.append((y, last, *(t.grad for t in leaves)))
    for name, value, ref in zip(("y", "last", "du", "ddelta", "dA", "dB", "dC"), *results):
        assert_rel_close(value, ref, torch.float32, name)
    u3, A3, B3 = rand(1, 3, 4, 5 * 6 * 7), -(rand(3, 4, 5).abs() + 0.1), rand(1, 3, 5, 5 * 6 * 7)
    out, ref = (ak.selective_scan3d(u3.to(dtype), u3.to(dtype) * 0.1, A3.to(dtype), B3.to(dtype), B3.to(dtype),
                                    spatial_shape=(5, 6, 7), orders=("zyx", "-yxz", "xzy"), backend=backend)
                for backend, dtype in (("cuda_segment", torch.float32), ("reference", torch.float64)))
    assert_rel_close(out, ref, torch.float32, "selective_scan3d out")
