"""The segment-parallel Triton scan (backend ``triton_segment``) against float64 references.

Backend-level tests call the backend contract (``forward``/``backward`` in the canonical layout, see
``selective_scan/function.py``) with grouped B/C, and check every output and gradient (the last state's
included) against a float64 autograd reference; the phase tests check each phase's intermediate results
(segment summaries, carries, reverse summaries, reverse carries) against a float64 model in plain PyTorch.
Segments are SEG = 4 steps under the interpreter: rows of 7, 5 and 3 steps give uneven, single and
short segments. Outputs are NaN-poisoned. Shapes are tiny: the interpreter is slow.
"""

import pytest
import torch
import torch.nn.functional as F

import anatokernels as ak
from anatokernels import _memory
from anatokernels.scan_order import ALL_ORDERS, geometry_tensor, order_geometry, scan_order
from anatokernels.selective_scan import reference

from kernel_testing import _triton_interpreter_marks, assert_rel_close

pytestmark = list(_triton_interpreter_marks())
NAMES = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")


def _ts():
    from anatokernels.selective_scan import triton_segment

    return triton_segment


def _inputs(b, k, d, g, n, length, dtype=torch.float32, optional=True):
    """Canonical layout: u, delta (B, K, D, L); A (K, D, N); B, C (B, K, G, N, L); D, bias (K, D); z (B, D, L)."""
    t = (torch.randn(b, k, d, length), torch.randn(b, k, d, length) * 0.5, -(torch.rand(k, d, n) * 2 + 0.1),
         torch.randn(b, k, g, n, length), torch.randn(b, k, g, n, length))
    extra = (torch.randn(k, d), torch.randn(b, d, length), torch.randn(k, d) * 0.3) if optional else (None,) * 3
    return tuple(None if x is None else x.to(dtype) for x in (*t, *extra))


def _reference(inputs, spatial, orders, softplus):
    """float64 (out, last) of the canonical layout with grouped B/C, through the reference's 1-D scan."""
    u, delta, A, B, C, D, z, bias = inputs
    total, lasts = 0, []
    for k, order in enumerate(orders):
        pi = scan_order(spatial, order)
        y, last = reference._scan(u[:, k][..., pi], delta[:, k][..., pi], A[k], B[:, k][..., pi], C[:, k][..., pi],
                                  None if D is None else D[k], None if bias is None else bias[k], softplus,
                                  torch.float64)
        total = total + torch.zeros_like(y).index_copy(-1, pi, y)
        lasts.append(last)
    return (total * F.silu(z) if z is not None else total), torch.stack(lasts, 1)


def _reference_case(spatial, orders, b, d, g, n, dtype, softplus, optional):
    """Fresh inputs in ``dtype`` and their float64 reference with random output gradients already run back:
    ``(inputs, float64 leaves with .grad, ref_out, ref_last, dout, dlast)``."""
    inputs = _inputs(b, len(orders), d, g, n, spatial[0] * spatial[1] * spatial[2], dtype, optional)
    leaves = tuple(None if t is None else t.double().requires_grad_() for t in inputs)
    ref_out, ref_last = _reference(leaves, spatial, orders, softplus)
    dout, dlast = torch.randn_like(ref_out), torch.randn_like(ref_last)
    torch.autograd.backward((ref_out, ref_last), (dout, dlast))
    return inputs, leaves, ref_out, ref_last, dout, dlast


def _run_backend(inputs, spatial, orders, softplus, dout, dlast):
    ts = _ts()
    u = inputs[0]
    geo = geometry_tensor(spatial, tuple(orders), u.device)
    chunk = ts.chunk_length(u.shape[-1], inputs[2].shape[-1], u.device)
    with _memory.poison_outputs():
        out, last, ck = ts.forward(*inputs, geo, softplus, chunk)
        grads = ts.backward(dout.to(out.dtype), dlast.to(last.dtype), *inputs, ck, geo, softplus, chunk,
                            tuple(t is not None for t in inputs))
    return out, last, ck, grads


def _check(spatial, orders, b, d, g, n, softplus=True, optional=True, dtype=torch.float32):
    inputs, ref_inputs, ref_out, ref_last, dout, dlast = _reference_case(spatial, orders, b, d, g, n, dtype, softplus,
                                                                         optional)
    out, last, _ck, grads = _run_backend(inputs, spatial, orders, softplus, dout, dlast)
    assert out.dtype == dtype
    assert_rel_close(out, ref_out, dtype, "out")
    assert_rel_close(last, ref_last, dtype, "last_state")
    for name, grad, x, ref in zip(NAMES, grads, inputs, ref_inputs):
        if ref is None:
            assert grad is None, name
            continue
        assert grad.dtype == x.dtype and grad.shape == x.shape, name
        assert_rel_close(grad, ref.grad, dtype, f"d{name}", factor=2.0)


# (spatial, orders, B, D, G, N): the 12 orders (reversed included), K 1-4, repeats, N not a power of two
CASES = [
    ((3, 5, 7), ("zyx", "zxy", "yzx", "yxz"), 1, 2, 1, 3),
    ((3, 5, 7), ("xzy", "xyz", "-zyx", "-zxy"), 1, 2, 2, 5),
    ((3, 5, 7), ("-yzx", "-yxz", "-xzy", "-xyz"), 2, 2, 1, 3),
    ((3, 5, 7), ("yxz", "yxz"), 1, 3, 3, 5),
    ((3, 5, 7), ("-xzy",), 2, 2, 1, 4),
    ((1, 1, 37), ("zyx", "-zyx", "-zyx"), 1, 2, 1, 3),
    # channel blocks of the backward (BLOCK_D 2 under the interpreter): 2 groups of 4 channels, 1 group of 6
    ((2, 3, 5), ("yzx", "-zyx"), 1, 8, 2, 3),
    ((2, 3, 5), ("xyz",), 1, 6, 1, 2),
]
IDS = [f"Z{s[0]}Y{s[1]}X{s[2]}-{'_'.join(o)}-B{b}-D{d}-G{g}-N{n}" for s, o, b, d, g, n in CASES]


@pytest.mark.parametrize("spatial, orders, b, d, g, n", CASES, ids=IDS)
def test_matches_reference(spatial, orders, b, d, g, n):
    _check(spatial, orders, b, d, g, n)


def test_all_orders_covered():
    assert {o for case in CASES for o in case[1]} == set(ALL_ORDERS)


def test_without_optional_inputs_and_float64():
    _check((3, 5, 7), ("zyx", "-yxz"), 1, 2, 1, 3, softplus=False, optional=False)
    _check((2, 3, 5), ("-xzy", "yzx"), 1, 2, 2, 3, dtype=torch.float64)


def test_segments_longer_than_rows(monkeypatch):
    """SEG = 8: every row of the fastest axis is one segment."""
    monkeypatch.setattr(_ts(), "_INTERPRETER_SEG", 8)
    _check((3, 5, 7), ("zyx", "-xyz"), 1, 2, 1, 3)


def test_channel_block():
    """The backward's channels per program: a power of two dividing the group's channels, at most the cap."""
    ts = _ts()
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    assert [ts.channel_block(pg, cuda) for pg in (96, 6, 3, 1, 8)] == [4, 2, 1, 1, 4]
    assert [ts.channel_block(pg, cpu) for pg in (96, 6, 3, 1)] == [2, 2, 1, 1]


# ----------------------------------------------------------------------------- the phases, one by one


def _segment_of_step(spatial, order, seg):
    """Scan-order segment index of every scan step, and S."""
    geo = order_geometry(spatial, order)
    n0, n1, n2 = geo.sizes
    length, spr = n0 * n1 * n2, -(-n2 // seg)
    t = torch.arange(length)
    s = length - 1 - t if geo.reverse else t
    unrev = (s // n2) * spr + (s % n2) // seg
    count = n0 * n1 * spr
    return (count - 1 - unrev if geo.reverse else unrev), count


def _model(inputs, spatial, orders, seg, dout, dlast):
    """Per order k: (end states, Σδ, entering states + last, R, G) of the float64 model, segment-wise."""
    u, delta, A, B, C, D, z, bias = (None if t is None else t.double() for t in inputs)
    g_out = dout * F.silu(z)
    result = []
    for k, order in enumerate(orders):
        pi = scan_order(spatial, order)
        seg_of, count = _segment_of_step(spatial, order, seg)
        dt = F.softplus(delta[:, k][..., pi] + bias[k][:, None])  # (B, D, L)
        a = torch.exp(dt[..., None] * A[k][:, None, :])  # (B, D, L, N)
        bu = (dt * u[:, k][..., pi])[..., None] * B[:, k, 0][..., pi].transpose(-1, -2)[:, None]
        c = g_out[..., pi][..., None] * C[:, k, 0][..., pi].transpose(-1, -2)[:, None]
        shape = (*dt.shape[:2], count)
        hend, sd, R = torch.zeros(*shape, A.shape[-1]), torch.zeros(shape), torch.zeros(*shape, A.shape[-1])
        hend, R = hend.double(), R.double()
        sd = sd.double()
        for t in range(dt.shape[-1]):
            j = seg_of[t]
            hend[:, :, j] = a[:, :, t] * hend[:, :, j] + bu[:, :, t]
            sd[:, :, j] += dt[:, :, t]
        for t in reversed(range(dt.shape[-1])):
            j = seg_of[t]
            R[:, :, j] = a[:, :, t] * (c[:, :, t] + R[:, :, j])
        P = torch.exp(sd[..., None] * A[k][:, None, :])
        H = [torch.zeros_like(hend[:, :, 0])]
        for j in range(count):
            H.append(P[:, :, j] * H[-1] + hend[:, :, j])
        G = [dlast[:, k]]
        for j in reversed(range(1, count)):
            G.insert(0, R[:, :, j] + P[:, :, j] * G[0])
        result.append((hend, sd, torch.stack(H, 2), R, torch.stack(G, 2)))
    return result


def test_phases_against_float64_model():
    ts = _ts()
    spatial, orders, seg = (3, 5, 7), ("zyx", "-yxz", "xzy"), 4
    assert ts.chunk_length(105, 3, torch.device("cpu")) == seg
    inputs = _inputs(2, 3, 2, 1, 3, 105)
    dout, dlast = torch.randn(2, 2, 105), torch.randn(2, 3, 2, 3)
    geo = geometry_tensor(spatial, orders, torch.device("cpu"))
    model = _model(inputs, spatial, orders, seg, dout.double(), dlast.double())
    with _memory.poison_outputs():
        ck1, sd1 = ts.forward_summaries(*inputs, geo, True, seg)
        _out, last, ck = ts.forward(*inputs, geo, True, seg)
        r_buf = ts.backward_carries(dout, dlast, inputs[1], inputs[2], inputs[4], inputs[6], inputs[7], geo, True,
                                    seg, ck.shape, carry=False)
        g_buf = ts.backward_carries(dout, dlast, inputs[1], inputs[2], inputs[4], inputs[6], inputs[7], geo, True,
                                    seg, ck.shape)
    assert ck.shape[3] == ts.checkpoint_slots(spatial, orders, seg) == max(m[0].shape[2] for m in model) + 1
    for k, (hend, sd, H, R, G) in enumerate(model):
        count = hend.shape[2]
        assert_rel_close(ck1[:, k, :, 1:count + 1], hend, torch.float32, f"order {k}: segment end states")
        assert_rel_close(sd1[:, k, :, 1:count + 1], sd, torch.float32, f"order {k}: segment Σδ")
        assert_rel_close(ck[:, k, :, :count + 1], H, torch.float32, f"order {k}: carries")
        assert_rel_close(last[:, k], H[:, :, -1], torch.float32, f"order {k}: last state")
        assert_rel_close(r_buf[:, k, :, :count], R, torch.float32, f"order {k}: reverse summaries")
        assert_rel_close(g_buf[:, k, :, 1:count + 1], G, torch.float32, f"order {k}: reverse carries")


# ----------------------------------------------------------------------------- through the public ops

REGISTERED = "triton_segment" in ak.backends()["selective_scan3d"] and \
    ak.backends()["selective_scan3d"]["triton_segment"].state != "unimplemented"


@pytest.mark.skipif(not REGISTERED, reason="triton_segment is not registered as a backend of the op")
def test_public_ops():
    spatial, orders = (3, 5, 7), ("zyx", "-yxz")
    u, delta, A, B, C, D, z, bias = _inputs(1, 2, 3, 1, 3, 105)
    leaves = tuple(t.requires_grad_() for t in (u, delta, A, B[:, :, 0], C[:, :, 0], D, z, bias))
    out = ak.selective_scan3d(*leaves, True, spatial_shape=spatial, orders=orders, backend="triton_segment")
    ref = ak.selective_scan3d(*(t.detach().double().requires_grad_() for t in leaves), True,
                              spatial_shape=spatial, orders=orders, backend="reference")
    assert_rel_close(out, ref, torch.float32, "out")
    out.backward(torch.ones_like(out))
    assert all(t.grad is not None and torch.isfinite(t.grad).all() for t in leaves)
    grouped = (u[:, 0].detach(), delta[:, 0].detach(), A[0].detach(), B[:, 0].repeat(1, 3, 1, 1),
               C[:, 0].repeat(1, 3, 1, 1))  # (B, G, N, L) with G = D = 3
    y, last = ak.selective_scan(*grouped, return_last_state=True, backend="triton_segment")
    y_ref, last_ref = ak.selective_scan(*grouped, return_last_state=True, backend="reference")
    assert_rel_close(y, y_ref, torch.float32, "y (1-D, grouped)")
    assert_rel_close(last, last_ref, torch.float32, "last state (1-D)")
