"""The fast backends as ``torch.library`` custom ops: ``opcheck`` of every op on every CPU backend,
``torch.compile(fullgraph=True)`` of a small model using Mamba3d, HyperCrossAttention and the masked patch
ops (no graph break; forward and backward equal to eager), ``torch.export`` with a dynamic spatial dim
run on another shape, ``torch.jit.trace``, and tracing that never takes the extension's load lock."""

import warnings

import pytest
import torch
from torch import nn

import anatokernels as ak
from anatokernels import _extension
from anatokernels.hyper_attention import chunked
from anatokernels.hyper_attention.function import absorb
from anatokernels.nn import HyperCrossAttention, Mamba3d

from kernel_testing import backend_cases

OPS = torch.ops.anatokernels
SPATIAL, ORDERS = [2, 3, 4], "zyx,-yxz"
L = 24


def _fast(op_name):
    return [case for case in backend_cases(op_name) if case.values[0] == "cpu" and case.values[1] != "reference"]


def _r(*shape, grad=True, scale=1.0):
    return (torch.randn(*shape) * scale).requires_grad_(grad)


def _patch_samples(backend):
    index, unique = torch.tensor([[0, 5, 5], [1, 2, 7]]), torch.tensor([[0, 5, 3], [1, 2, 7]])
    return [(OPS.masked_patch_gather, (_r(2, 3, 4, 4, 6), index, [2, 2, 3], backend)),
            (OPS.masked_patch_scatter_sum, (_r(2, 3, 36), index, [2, 2, 3], [4, 4, 6], backend)),
            (OPS.masked_patch_scatter, (_r(2, 3, 36), _r(3), unique, [2, 2, 3], [4, 4, 6], backend))]


def _conv_samples(backend):
    x, weight, bias = _r(1, 2, 3, L), _r(2, 3, 3), _r(2, 3)
    return [(OPS.order_conv1d_forward, (x, weight, bias, SPATIAL, ORDERS, True, backend)),
            (OPS.order_conv1d_backward, (_r(1, 2, 3, L, grad=False), *(t.detach() for t in (x, weight, bias)),
                                         SPATIAL, ORDERS, True, backend))]


def _scan_samples(backend):
    inputs = [_r(1, 2, 3, L), _r(1, 2, 3, L, scale=0.5), -torch.rand(2, 3, 4).add(0.2).requires_grad_(),
              _r(1, 2, 1, 4, L), _r(1, 2, 1, 4, L), _r(2, 3), _r(1, 3, L), _r(2, 3)]
    out, last, checkpoints = OPS.selective_scan3d_forward(*inputs, SPATIAL, ORDERS, True, backend)
    plain = [t.detach() for t in inputs]
    return [(OPS.selective_scan3d_forward, (*inputs, SPATIAL, ORDERS, True, backend)),
            (OPS.selective_scan3d_backward, (torch.randn_like(out), torch.randn_like(last), *plain, checkpoints,
                                             SPATIAL, ORDERS, True, [True] * 8, backend))]


def _attention_samples(backend):
    """Unbiased, and with a head-shared bias times a per-head scale and with a per-head bias (gradients of
    the bias asked for)."""
    k, v, w_q, w_o, b_q = torch.randn(2, 3, 4), torch.randn(2, 3, 4), torch.randn(2, 6, 4), torch.randn(4, 6), None
    mp = 16 if backend == "triton" else 3
    A, a, Bv = absorb(k, v, w_q, w_o, b_q, torch.tensor([[False, True, False], [True, True, True]]), 2, 0.5,
                      2, mp)
    x, b_o = _r(2, 5, 6), _r(6)
    samples = []
    for bias, scale in ((None, None), (_r(2, 1, 5, 3), _r(2)), (_r(2, 2, 5, 3), None)):
        samples += [
            (OPS.hyper_cross_attention_forward, (x, A.requires_grad_(), a.requires_grad_(), Bv.requires_grad_(),
                                                 b_o, bias, scale, mp, backend)),
            (OPS.hyper_cross_attention_backward, (x.detach(), torch.randn(2, 5, 6), A.detach(), a.detach(),
                                                  Bv.detach(), b_o.detach(), None if bias is None else bias.detach(),
                                                  None if scale is None else scale.detach(), bias is not None, mp,
                                                  backend))]
    return samples


SAMPLES = {"masked_patch_gather": _patch_samples, "order_conv1d": _conv_samples,
           "selective_scan3d": _scan_samples, "hyper_cross_attention": _attention_samples}


@pytest.mark.parametrize("op_name, device, backend",
                         [pytest.param(op, *case.values, id=f"{op}-{case.values[1]}", marks=case.marks)
                          for op in SAMPLES for case in _fast(op)])
def test_opcheck_every_op(op_name, device, backend):
    for op, args in SAMPLES[op_name](backend):
        torch.library.opcheck(op, args)


class Tiny(nn.Module):
    """A conv stem, Mamba3d, HyperCrossAttention, then a masked patch gather and scatter."""

    def __init__(self, channels=8, prompt_dim=6):
        super().__init__()
        self.stem = nn.Conv3d(2, channels, 1)
        self.mamba = Mamba3d(channels, d_state=4, d_conv=3, expand=1, orders=("zyx", "-yxz"))
        self.attn = HyperCrossAttention(channels, prompt_dim, num_heads=2, rank=2, hyper_hidden=8)
        self.token = nn.Parameter(torch.randn(channels))

    def forward(self, x, prompts, ignore, index):
        h = self.attn(self.mamba(self.stem(x)), prompts, key_padding_mask=ignore)
        patches = ak.masked_patch_gather(h, index, (1, 2, 2))
        return ak.masked_patch_scatter(patches * 2, index, (1, 2, 2), h.shape[2:], fill=self.token)


def _tiny_inputs(z=3):
    ignore = torch.tensor([[False, True, False], [True, True, True]])  # the second sample has no prompt
    return torch.randn(2, 2, z, 4, 6), torch.randn(2, 3, 6), ignore, torch.tensor([[0, 3, 5], [1, 2, 4]])


def _loss_and_grads(run, model, inputs):
    model.zero_grad()
    out = run(*inputs)
    (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()
    return out.detach(), {name: p.grad.clone() for name, p in model.named_parameters()}


@pytest.fixture
def tiny():
    if not _extension.load(build=True):
        pytest.skip(f"C++ extension unavailable: {_extension.status()}")
    assert ak.backends()["selective_scan3d"]["cpu"].is_available
    torch._dynamo.reset()
    return Tiny()


@pytest.mark.parametrize("compiler", ["eager", "aot_eager"])
def test_compile_fullgraph_matches_eager(tiny, compiler):
    inputs = _tiny_inputs()
    compiled = torch.compile(tiny, fullgraph=True, backend=compiler)  # a graph break is an error
    got, got_grads = _loss_and_grads(compiled, tiny, inputs)
    want, want_grads = _loss_and_grads(tiny, tiny, inputs)
    torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)
    for name, grad in want_grads.items():
        torch.testing.assert_close(got_grads[name], grad, rtol=1e-5, atol=1e-6, msg=name)


def test_export_with_a_dynamic_spatial_dim(tiny):
    z = torch.export.Dim("z", min=2, max=16)
    program = torch.export.export(tiny, _tiny_inputs(3), dynamic_shapes=({2: z}, None, None, None))
    names = {node.target.name() for node in program.graph.nodes if isinstance(node.target, torch._ops.OpOverload)}
    assert {"anatokernels::selective_scan3d_forward", "anatokernels::order_conv1d_forward",
            "anatokernels::hyper_cross_attention_forward", "anatokernels::masked_patch_gather"} <= names
    other = _tiny_inputs(5)
    with torch.no_grad():
        torch.testing.assert_close(program.module()(*other), tiny(*other), rtol=1e-6, atol=1e-6)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_jit_trace(tiny):
    inputs = _tiny_inputs()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        traced = torch.jit.trace(tiny, inputs, check_trace=False)
    torch.testing.assert_close(traced(*inputs), tiny(*inputs))


class _Forbidden:
    def __enter__(self):
        raise AssertionError("the extension's load lock was taken while tracing")

    def __exit__(self, *exc):
        return False


def test_tracing_never_takes_the_extension_lock(tiny, monkeypatch):
    """The extension is loaded when the modules are built; compile and export then only read its state."""
    monkeypatch.setattr(_extension, "_lock", _Forbidden())
    inputs = _tiny_inputs()
    torch.compile(tiny, fullgraph=True, backend="eager")(*inputs)
    torch.export.export(tiny, inputs)


def test_index_checks_stay_in_the_graph_without_a_host_read(tiny):
    """Under compile the CPU index check is a device-side assert (no graph break): a bad id still fails."""
    compiled = torch.compile(tiny, fullgraph=True, backend="eager")
    x, prompts, ignore, index = _tiny_inputs()
    with pytest.raises(RuntimeError, match="patch ids must lie in"):
        compiled(x, prompts, ignore, index + 100)


def test_chunked_absorbed_op_agrees_with_its_backend_module():
    """The custom op is the backend function: same numbers as calling ``chunked`` directly, with and
    without a logit bias."""
    for op, args in _attention_samples("chunked")[::2]:
        x, A, a, Bv, b_o, bias, bias_scale, mp, _ = args
        torch.testing.assert_close(op(*args), chunked.forward(x, A, a, Bv, b_o, mp, bias, bias_scale))
