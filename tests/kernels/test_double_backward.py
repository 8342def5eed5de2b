"""Second-order gradients (``create_graph=True``, e.g. a gradient penalty) on every op and backend.

The references are differentiable twice (``gradgradcheck`` in float64). A fast
backend either differentiates its gradients correctly (masked patch: linear ops
whose backwards are built from the same Functions; checked against the
reference) or is once-differentiable and a second backward raises, never a
gradient with no graph that silently contributes nothing.
"""

import pytest
import torch

import anatokernels as ak
from anatokernels.masked_patch import reference as patch_reference

from kernel_testing import assert_rel_close, backend_cases

ONCE = "once_differentiable"


def _fast(cases):
    return [case for case in cases if case.values[1] not in ("reference",)]


def _scan_inputs(dtype, b=1, d=2, n=3, length=5):
    g = torch.Generator().manual_seed(0)
    r = lambda *s: torch.randn(*s, generator=g, dtype=dtype)
    return [r(b, d, length), r(b, d, length) * 0.5, -(torch.rand(d, n, generator=g, dtype=dtype) + 0.2),
            r(b, n, length), r(b, n, length), r(d), r(b, d, length), r(d) * 0.3]


def _scan(backend):
    return lambda u, delta, A, B, C, D, z, bias: ak.selective_scan(u, delta, A, B, C, D, z, bias, True,
                                                                   backend=backend)


def _scan3d(backend):
    def run(u, delta, A, B, C, D, z, bias):
        args = (u[:, None], delta[:, None], A[None], B[:, None], C[:, None], D[None], z, bias[None])
        return ak.selective_scan3d(*args, delta_softplus=True, spatial_shape=(1, 1, u.shape[-1]),
                                   orders=("-zyx",), backend=backend)
    return run


def _attention(backend):
    return lambda x, k, v, w_q, w_o: ak.hyper_cross_attention(x, k, v, w_q, w_o, num_heads=2, backend=backend)


def _attention_inputs(dtype):
    g = torch.Generator().manual_seed(1)
    r = lambda *s: torch.randn(*s, generator=g, dtype=dtype) * 0.5
    return [r(1, 3, 4), r(1, 2, 4), r(1, 2, 4), r(1, 4, 4), r(4, 4)]


OPS = {"selective_scan": (_scan, _scan_inputs), "selective_scan3d": (_scan3d, _scan_inputs),
       "hyper_cross_attention": (_attention, _attention_inputs)}


@pytest.mark.parametrize("op", sorted(OPS))
def test_reference_gradgradcheck(op):
    make, inputs = OPS[op]
    leaves = [t.requires_grad_() for t in inputs(torch.float64)]
    assert torch.autograd.gradgradcheck(make("reference"), leaves, eps=1e-6, atol=1e-5)


@pytest.mark.parametrize("op, device, backend",
                         [pytest.param(op, *case.values, id=f"{op}-{case.id}", marks=case.marks)
                          for op in sorted(OPS) for case in _fast(backend_cases(op))])
def test_fast_backend_second_backward_is_a_clear_error(op, device, backend):
    make, inputs = OPS[op]
    leaves = [t.to(device).requires_grad_() for t in inputs(torch.float32)]
    out = make(backend)(*leaves)
    grads = torch.autograd.grad(out.square().sum(), leaves, create_graph=True)
    penalty = sum(g.square().sum() for g in grads)
    with pytest.raises(RuntimeError, match=ONCE):
        penalty.backward()


def _patch_problem(device, dtype):
    g = torch.Generator().manual_seed(2)
    x = torch.randn(2, 2, 4, 6, 3, generator=g, dtype=dtype).to(device)
    w = torch.randn(2, 1, 1, 1, 1, generator=g, dtype=dtype).to(device)
    gather_index = torch.tensor([[5, 0, 5], [1, 2, 3]], device=device)  # a duplicate id
    scatter_index = torch.tensor([[5, 0, 4], [1, 2, 3]], device=device)
    patches = torch.randn(2, 3, 2 * 2 * 3 * 1, generator=g, dtype=dtype).to(device)
    fill = torch.randn(2, generator=g, dtype=dtype).to(device)
    return x, w, gather_index, scatter_index, patches, fill


def _patch_penalty(backend, x, w, gather_index, scatter_index, patches, fill):
    """‖∇_x L‖² + ‖∇_patches L‖² for L built from a gather and a scatter through a weight w."""
    out = ak.masked_patch_gather(x * w, gather_index, (2, 3, 1), backend=backend)
    vol = ak.masked_patch_scatter(patches * w.view(1, 1, 2).repeat_interleave(6, dim=2), scatter_index,
                                  (2, 3, 1), (4, 6, 3), fill=fill * w.view(2), backend=backend)
    loss = out.square().sum() + (vol.square() * vol).sum()
    gx, gp, gf = torch.autograd.grad(loss, (x, patches, fill), create_graph=True)
    return gx.square().sum() + gp.square().sum() + gf.square().sum()


def test_masked_patch_reference_gradgradcheck():
    x, _, index, scatter_index, patches, fill = _patch_problem("cpu", torch.float64)
    leaves = [x.requires_grad_(), patches.requires_grad_(), fill.requires_grad_()]
    def fn(x, p, f):
        vol = patch_reference.masked_patch_scatter(p, scatter_index, (2, 3, 1), (4, 6, 3), f)
        return patch_reference.masked_patch_gather(x, index, (2, 3, 1)).square().sum() + vol.pow(3).sum()

    assert torch.autograd.gradgradcheck(fn, leaves)


@pytest.mark.parametrize("device, backend", _fast(backend_cases("masked_patch_gather")))
def test_masked_patch_double_backward_matches_reference(device, backend):
    problem = _patch_problem(device, torch.float32)
    leaves = [t.requires_grad_() for t in problem[:2]] + list(problem[2:4]) + [t.requires_grad_() for t in problem[4:]]
    ref_leaves = [t.detach().double().requires_grad_() if t.is_floating_point() else t for t in leaves]
    penalty = _patch_penalty(backend, *leaves)
    ref_penalty = _patch_penalty("reference", *ref_leaves)
    assert_rel_close(penalty, ref_penalty, torch.float32, "penalty")
    penalty.backward()
    ref_penalty.backward()
    for name, got, want in zip(("x", "w", "", "", "patches", "fill"), leaves, ref_leaves):
        if want.is_floating_point():
            assert_rel_close(got.grad, want.grad, torch.float32, f"d penalty / d {name}")
