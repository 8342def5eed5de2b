"""hyper_cross_attention: every backend (chunked, triton, the reference itself) against the unfused
definition in float64, every gradient, errors."""

import functools
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import anatokernels as ak
from anatokernels.hyper_attention import chunked, reference
from anatokernels.hyper_attention.function import absorb

from kernel_testing import assert_rel_close, backend_cases, rel_err

CASES = backend_cases("hyper_cross_attention")


pytestmark = pytest.mark.usefixtures("one_thread")


NAMES = ("x", "k", "v", "w_q", "w_o", "b_q", "b_o", "attn_bias", "attn_bias_scale")

# (B, L, C, M, E, H, per-sample w_o, biases, mask, logit bias): odd L, C and E off multiples of 16, M in
# {1, 3, 17}, H in {1, 4} and one H=3.
# mask: "none" (argument omitted), "empty0" (random, sample 0 has no key), "random".
# logit bias: "none", "shared" (B, 1, L, M), "shared3d" (B, L, M), "heads" (B, H, L, M), "+scale" with a
# per-head attn_bias_scale; the last sample's bias is −inf on key 0 at every third token and on every key
# at token 1 (a row without keys).
SHAPES = [
    (2, 37, 40, 3, 24, 4, False, True, "empty0", "shared+scale"),
    (3, 71, 20, 17, 20, 1, True, True, "empty0", "heads"),
    (2, 45, 33, 17, 36, 4, True, False, "random", "heads+scale"),
    (1, 1, 24, 1, 8, 4, False, True, "none", "none"),
    (2, 5, 500, 3, 508, 4, False, True, "random", "shared3d"),
    (2, 19, 30, 3, 18, 3, True, True, "empty0", "shared"),  # H=3: the Triton path pads the heads to 4
]
SHAPE_IDS = [f"B{b}-L{n}-C{c}-M{m}-E{e}-H{h}-wo{'B' if per else 'shared'}-{'bias' if bias else 'nobias'}-{mask}"
             f"-logit{logit.replace('+', '')}" for b, n, c, m, e, h, per, bias, mask, logit in SHAPES]


def _logit_bias(b, n, m, h, kind, r):
    """(attn_bias, attn_bias_scale) float64 of the kind (see SHAPES), or Nones."""
    if kind == "none":
        return None, None
    bias = r(b, h if kind.startswith("heads") else 1, n, m)
    bias[-1, :, ::3, 0] = float("-inf")
    bias[-1, :, min(1, n - 1)] = float("-inf")
    return bias[:, 0].clone() if kind == "shared3d" else bias, r(h) if kind.endswith("+scale") else None


def _problem(b, n, c, m, e, h, per_sample_wo, biases, mask_kind, device, logit="none"):
    """float64 leaves (x, k, v, w_q, w_o, b_q, b_o, attn_bias, attn_bias_scale) with unit-scale activations,
    and the key mask (True = ignore)."""
    g = torch.Generator().manual_seed(b * 1000 + n * 10 + m)
    r = lambda *s, scale=1.0: (torch.randn(*s, generator=g, dtype=torch.float64) * scale).to(device)
    tensors = [r(b, n, c), r(b, m, e), r(b, m, e), r(b, c, e, scale=c ** -0.5),
               r(b, e, c, scale=e ** -0.5) if per_sample_wo else r(e, c, scale=e ** -0.5),
               r(b, e) if biases else None, r(c) if biases else None, *_logit_bias(b, n, m, h, logit, r)]
    mask = None
    if mask_kind != "none":
        mask = (torch.rand(b, m, generator=g) <= 0.4).to(device)
        if mask_kind == "empty0":
            mask[0] = True
    return [t.requires_grad_() if t is not None else None for t in tensors], mask


def _definition(leaves, mask, h, scale=None):
    x, k, v, w_q, w_o, b_q, b_o, bias, bias_scale = (*leaves, None, None)[:9]
    bias = bias[:, None] if bias is not None and bias.dim() == 3 else bias
    return reference.hyper_cross_attention(x, k, v, w_q, w_o, b_q, b_o, mask, h,
                                           (k.shape[-1] // h) ** -0.5 if scale is None else scale, bias, bias_scale)


def _run(leaves, mask, h, backend, **kw):
    x, k, v, w_q, w_o, b_q, b_o, bias, bias_scale = (*leaves, None, None)[:9]
    return ak.hyper_cross_attention(x, k, v, w_q, w_o, b_q=b_q, b_o=b_o, key_ignore_mask=mask, num_heads=h,
                                    attn_bias=bias, attn_bias_scale=bias_scale, backend=backend, **kw)


def _cast(leaves, dtype):
    return [None if t is None else t.detach().to(dtype).requires_grad_() for t in leaves]


def _forward_backward(leaves, mask, h, grad, fn):
    out = fn(leaves, mask, h)
    out.backward(grad.to(out.dtype))
    return out, [None if t is None else t.grad for t in leaves]


def _dtypes(device):
    return [torch.float32, torch.float16] + ([torch.bfloat16] if device == "cuda" else [])


@pytest.mark.parametrize("device, backend", CASES)
@pytest.mark.parametrize("b, n, c, m, e, h, per_sample_wo, biases, mask_kind, logit", SHAPES, ids=SHAPE_IDS)
def test_matches_definition_with_every_gradient(device, backend, b, n, c, m, e, h, per_sample_wo, biases,
                                                mask_kind, logit):
    leaves, mask = _problem(b, n, c, m, e, h, per_sample_wo, biases, mask_kind, device, logit)
    ref_leaves = _cast(leaves, torch.float64)
    grad = torch.randn(b, n, c, dtype=torch.float64, device=device)
    ref, ref_grads = _forward_backward(ref_leaves, mask, h, grad, _definition)
    for dtype in _dtypes(device):
        out, grads = _forward_backward(_cast(leaves, dtype), mask, h, grad,
                                       functools.partial(_run, backend=backend))
        if dtype == torch.float32:
            assert_rel_close(out, ref, dtype, "out")
            for name, got, want in zip(NAMES, grads, ref_grads):
                if want is not None:
                    assert_rel_close(got, want, dtype, f"d_{name}")
            continue
        # Low precision: at most twice the error of the same unfused PyTorch code run in that dtype, plus
        # one rounding (unit roundoff): small outputs such as L=1 make the measured errors noisy.
        torch_out, torch_grads = _forward_backward(_cast(leaves, dtype), mask, h, grad, _definition)
        pairs = [("out", out, torch_out, ref)] + [(f"d_{n_}", g_, t_, w_) for n_, g_, t_, w_ in
                                                 zip(NAMES, grads, torch_grads, ref_grads) if w_ is not None]
        for name, got, torch_got, want in pairs:
            assert torch.isfinite(got).all(), f"{name}: non-finite values ({dtype})"
            bound = 2 * rel_err(torch_got, want) + torch.finfo(dtype).eps / 2
            err = rel_err(got, want)
            assert err <= bound, f"{name}: relative error {err:.2e} > 2 × unfused PyTorch's ({bound:.2e}, {dtype})"


@pytest.mark.parametrize("device, backend", CASES)
def test_sample_without_keys_gives_b_o(device, backend):
    leaves, _ = _problem(3, 19, 18, 3, 12, 4, True, True, "none", device)
    leaves = _cast(leaves, torch.float32)
    mask = torch.tensor([[False, True, False], [True, True, True], [True, False, True]], device=device)
    out = _run(leaves, mask, 4, backend)
    x, k, v, w_q, w_o, b_q, b_o = leaves[:7]
    assert torch.equal(out[1], b_o.detach().expand(19, 18)), "a sample with every key masked must output b_o"
    out.sum().backward()
    for name, t in zip(NAMES, leaves[:7]):
        assert torch.isfinite(t.grad).all(), f"d_{name} has NaN/inf"
    assert torch.equal(x.grad[1], torch.zeros_like(x.grad[1]))
    assert torch.equal(w_q.grad[1], torch.zeros_like(w_q.grad[1]))
    assert torch.equal(k.grad[1], torch.zeros_like(k.grad[1]))


@pytest.mark.parametrize("device, backend", [c for c in CASES if c.values[0] == "cpu"])
def test_bfloat16_and_strided_input(device, backend):
    """bf16 (the interpreter runs its dots in fp32) with x given as a transposed (B, C, L) view."""
    leaves, mask = _problem(2, 33, 20, 3, 16, 2, False, True, "random", device, "shared+scale")
    x_cl = leaves[0].detach().transpose(1, 2).contiguous().to(torch.bfloat16)
    low = _cast(leaves, torch.bfloat16)
    low[0] = x_cl.transpose(1, 2).requires_grad_()
    grad = torch.randn(2, 33, 20, dtype=torch.float64)
    out, grads = _forward_backward(low, mask, 2, grad, functools.partial(_run, backend=backend))
    ref, ref_grads = _forward_backward(_cast(leaves, torch.float64), mask, 2, grad, _definition)
    assert_rel_close(out, ref, torch.bfloat16, "out")
    for name, got, want in zip(NAMES, grads, ref_grads):
        assert_rel_close(got, want, torch.bfloat16, f"d_{name}", factor=2.0)


@pytest.mark.parametrize("device, backend", CASES)
@pytest.mark.parametrize("b, n", [(2, 0), (0, 5)], ids=["L0", "B0"])
def test_empty_batch_or_tokens(device, backend, b, n):
    shapes = [(b, n, 8), (b, 3, 8), (b, 3, 8), (b, 8, 8), (8, 8), (b, 8), (8,)]
    leaves = [torch.randn(s, device=device).requires_grad_() for s in shapes]
    out = _run(leaves, None, 2, backend)
    assert out.shape == (b, n, 8)
    out.sum().backward()
    assert torch.equal(leaves[4].grad, torch.zeros_like(leaves[4].grad))
    assert torch.equal(leaves[6].grad, torch.zeros_like(leaves[6].grad))


def test_gradcheck_definition():
    leaves, mask = _problem(2, 5, 6, 3, 4, 2, True, True, "empty0", "cpu", "shared+scale")
    assert torch.autograd.gradcheck(lambda *t: _definition(list(t), mask, 2), tuple(leaves))


@pytest.mark.parametrize("per_sample_wo", [False, True], ids=["woShared", "woB"])
def test_gradcheck_chunked_backend(per_sample_wo):
    """The chunked path's hand-written backward and the absorbed-form chain rule, in float64."""
    leaves, mask = _problem(2, 7, 5, 3, 6, 3, per_sample_wo, True, "random", "cpu",
                            "heads+scale" if per_sample_wo else "shared+scale")
    mask[1] = torch.tensor([False, True, False])
    assert torch.autograd.gradcheck(lambda *t: _run(list(t), mask, 3, "chunked", scale=0.7), tuple(leaves))


def test_reference_backend_is_the_plain_definition():
    """backend="reference" is the unfused definition itself, gradients by autograd through its PyTorch ops."""
    leaves, mask = _problem(2, 9, 6, 3, 8, 2, True, True, "empty0", "cpu")
    out = _run(leaves, mask, 2, "reference", scale=0.6)
    assert out.grad_fn is not None and "hyper_cross_attention_forward" not in type(out.grad_fn).__name__
    assert torch.equal(out, _definition(leaves, mask, 2, scale=0.6))


def test_chunked_equals_unchunked():
    leaves, mask = _problem(2, 23, 9, 3, 8, 2, True, True, "empty0", "cpu", "shared+scale")
    x, k, v, w_q, w_o, b_q, b_o, bias, bias_scale = (t.detach() for t in leaves)
    A, a, Bv = absorb(k, v, w_q, w_o, b_q, mask, 2, 0.5, 2, 3)
    dout = torch.randn_like(x)
    runs = [[chunked.forward(x, A, a, Bv, b_o, 3, bias, bias_scale, chunk=chunk),
             *chunked.backward(x, dout, A, a, Bv, b_o, 3, bias, bias_scale, True, chunk=chunk)] for chunk in (23, 4)]
    for got, want in zip(*runs):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(runs[0][0], reference.hyper_cross_attention(
        x, k, v, w_q, w_o, b_q, b_o, mask, 2, 0.5, bias, bias_scale), rtol=1e-12, atol=1e-12)


@pytest.mark.interpret
@pytest.mark.skipif(os.environ.get("TRITON_INTERPRET") != "1", reason="needs TRITON_INTERPRET=1")
def test_fallback_backward_matches_triton_backward():
    """The Triton kernels take A and a in log2 units; the chunked backward that replaces a kernel which fails
    to compile on a GPU gets them converted and returns the same gradients (every one, bias included)."""
    from anatokernels.hyper_attention import triton as triton_backend
    from anatokernels.hyper_attention.function import _natural_units_backward

    leaves, mask = _problem(2, 37, 20, 3, 16, 4, True, True, "random", "cpu", "heads+scale")
    x, k, v, w_q, w_o, b_q, b_o, bias, bias_scale = (t.detach().float() for t in leaves)
    mp, unit = triton_backend.padded_keys(3), triton_backend.SCORE_UNIT
    A, a, Bv = absorb(k, v, w_q, w_o, b_q, mask, 4, 0.5 * unit, 4, mp)
    args = (x, torch.randn_like(x), A, a, Bv, b_o, mp, bias, bias_scale, True)
    for got, want in zip(_natural_units_backward(unit, *args), triton_backend.backward(*args)):
        assert_rel_close(got, want, torch.float32)


@pytest.mark.parametrize("device, backend", CASES)
def test_row_without_keys_gives_b_o(device, backend):
    """A token whose kept keys are all −inf in the bias gets out = b_o, with finite gradients, none into its
    x, and a zero bias gradient; the scale's gradient ignores the −inf entries."""
    leaves, _ = _problem(2, 19, 18, 3, 12, 4, True, True, "none", device, "shared+scale")
    leaves = _cast(leaves, torch.float32)
    mask = torch.tensor([[False, True, False], [False, False, False]], device=device)
    with torch.no_grad():
        leaves[7][0, 0, 4, [0, 2]] = float("-inf")  # token 4 of sample 0: its two kept keys excluded
    out = _run(leaves, mask, 4, backend)
    assert torch.equal(out[0, 4], leaves[6].detach()), "a token with every key excluded must output b_o"
    out.square().sum().backward()
    for name, t in zip(NAMES, leaves):
        assert torch.isfinite(t.grad).all(), f"d_{name} has NaN/inf"
    assert torch.equal(leaves[0].grad[0, 4], torch.zeros_like(leaves[0].grad[0, 4]))
    assert torch.equal(leaves[7].grad[0, 0, 4], torch.zeros_like(leaves[7].grad[0, 0, 4]))


@pytest.mark.parametrize("device, backend", CASES)
def test_bias_scale_is_the_scaled_bias_through_autograd(device, backend):
    """attn_bias_scale (H,) times a shared (B, 1, L, M) bias equals passing the product (B, H, L, M) made
    by autograd, in the output and in the gradients of the scale and the shared bias."""
    leaves, mask = _problem(2, 21, 10, 3, 8, 2, False, True, "random", device, "shared+scale")
    leaves = _cast(leaves, torch.float32)
    grad = torch.randn(2, 21, 10, device=device)
    fused, fused_grads = _forward_backward(leaves, mask, 2, grad, functools.partial(_run, backend=backend))
    plain = _cast(leaves, torch.float32)
    bias, bias_scale = plain[7], plain[8]
    product = torch.where(bias == float("-inf"), bias, bias.masked_fill(bias == float("-inf"), 0)
                          * bias_scale[None, :, None, None])
    out = _run([*plain[:7], product], mask, 2, backend)
    out.backward(grad)
    torch.testing.assert_close(fused, out, rtol=1e-5, atol=1e-6)
    for name, got, want in (("attn_bias", fused_grads[7], bias.grad), ("attn_bias_scale", fused_grads[8],
                                                                      bias_scale.grad)):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5, msg=name)


def _bad(changes, dtype):
    leaves, mask = _problem(2, 5, 6, 3, 8, 2, False, True, "random", "cpu")
    args = dict(zip(NAMES, (t.detach().to(dtype) for t in leaves[:7])), key_ignore_mask=mask, num_heads=2)
    args.update(changes)
    return args


BAD = [
    ("x-2d", dict(x=torch.randn(5, 6, dtype=torch.float64)), ValueError, "x must be 3-D"),
    ("k-batch", dict(k=torch.randn(3, 3, 8, dtype=torch.float64)), ValueError, "k has batch 3"),
    ("v-shape", dict(v=torch.randn(2, 4, 8, dtype=torch.float64)), ValueError, "v must have shape"),
    ("wq-shape", dict(w_q=torch.randn(2, 8, 6, dtype=torch.float64)), ValueError, "w_q must have shape"),
    ("wo-transposed", dict(w_o=torch.randn(6, 8, dtype=torch.float64)), ValueError, "w_o must have shape"),
    ("bq-unbatched", dict(b_q=torch.randn(8, dtype=torch.float64)), ValueError, "b_q must be 2-D"),
    ("bo-shape", dict(b_o=torch.randn(8, dtype=torch.float64)), ValueError, "b_o must have shape"),
    ("mask-float", dict(key_ignore_mask=torch.ones(2, 3, dtype=torch.float64)), TypeError, "dtype in"),
    ("mask-shape", dict(key_ignore_mask=torch.ones(2, 4, dtype=torch.bool)), ValueError, "key_ignore_mask"),
    ("mask-old-keep", dict(key_padding_mask=torch.ones(2, 3, dtype=torch.bool)), TypeError,
     r"key_padding_mask \(True = keep\) was removed.*True = ignore: pass key_ignore_mask=~key_padding_mask"),
    ("heads-divide", dict(num_heads=3), ValueError, "not divisible by num_heads=3"),
    ("heads-float", dict(num_heads=2.0), TypeError, "positive int"),
    ("heads-zero", dict(num_heads=0), TypeError, "positive int"),
    ("mixed-dtype", dict(v=torch.randn(2, 3, 8)), TypeError, "share one dtype"),
    ("int-x", dict(x=torch.ones(2, 5, 6, dtype=torch.int64)), TypeError, "x must have dtype"),
    ("no-keys", dict(k=torch.randn(2, 0, 8, dtype=torch.float64), v=torch.randn(2, 0, 8, dtype=torch.float64),
                     key_ignore_mask=None), ValueError, "non-empty"),
    ("scale-str", dict(scale="0.5"), TypeError, "scale must be"),
    ("backend-name", dict(backend="cuDNN"), ValueError, "unknown backend"),
    ("triton-float64", dict(backend="triton"), ValueError, "not float64"),
    ("bias-heads", dict(attn_bias=torch.zeros(2, 3, 5, 3, dtype=torch.float64)), ValueError,
     r"attn_bias must have shape \(B, H, L, M\) = \(2, 2, 5, 3\).*got \(2, 3, 5, 3\)"),
    ("bias-keys", dict(attn_bias=torch.zeros(2, 5, 4, dtype=torch.float64)), ValueError, "attn_bias must have"),
    ("bias-2d", dict(attn_bias=torch.zeros(5, 3, dtype=torch.float64)), ValueError, "attn_bias must have"),
    ("bias-int", dict(attn_bias=torch.zeros(2, 5, 3, dtype=torch.int64)), TypeError, "attn_bias must have dtype"),
    ("bias-dtype", dict(attn_bias=torch.zeros(2, 5, 3)), TypeError, "share one dtype"),
    ("bias-scale-alone", dict(attn_bias_scale=torch.ones(2, dtype=torch.float64)), ValueError, "needs attn_bias"),
    ("bias-scale-shape", dict(attn_bias=torch.zeros(2, 1, 5, 3, dtype=torch.float64),
                              attn_bias_scale=torch.ones(1, dtype=torch.float64)), ValueError,
     "attn_bias_scale must have shape"),
    ("triton-65-keys", dict(k=torch.randn(2, 65, 8), v=torch.randn(2, 65, 8), key_ignore_mask=None,
                            backend="triton"), ValueError, "at most 64 keys"),
]


@pytest.mark.parametrize("changes, error, message", [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_inputs(request, changes, error, message):
    if changes.get("backend") == "triton" and os.environ.get("TRITON_INTERPRET") != "1":
        pytest.skip("backend='triton' on CPU tensors needs TRITON_INTERPRET=1")
    # float32 where the case is about the Triton key limit, so that the dtype check does not fire first
    dtype = torch.float32 if "65-keys" in request.node.callspec.id else torch.float64
    args = _bad(changes, dtype)
    x, k, v, w_q, w_o = (args.pop(n) for n in NAMES[:5])
    with pytest.raises(error, match=message):
        ak.hyper_cross_attention(x, k, v, w_q, w_o, **args)


_AOT = r"""
import sys
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from anatokernels.hyper_attention import triton as T

for config in sys.argv[1:]:
    dtype, arch, hp, mp, has_bo, bias, c = config.split(",")
    arch, hp, mp, has_bo, c = int(arch), int(hp), int(mp), has_bo == "1", int(c)
    io = {"x_ptr": dtype, "g_ptr": dtype, "bo_ptr": dtype, "out_ptr": dtype, "dx_ptr": dtype,
          "amat_ptr": dtype, "bv_ptr": dtype, "bias_ptr": dtype, "bscale_ptr": dtype, "dbias_ptr": dtype}
    for kernel, backward in ((T._hyper_cross_attention_forward_kernel, False),
                             (T._hyper_cross_attention_backward_kernel, True)):
        cfg = T._config(c, hp * mp, False, backward, half=dtype != "fp32")
        consts = dict(HAS_BO=has_bo, HAS_BIAS=bias != "none", HAS_BSCALE=bias.endswith("scale"), HP=hp, MP=mp,
                      BLOCK_L=cfg.block_l, BLOCK_C=cfg.block_c, NUM_CB=triton.cdiv(c, cfg.block_c),
                      DOT_PREC="ieee" if dtype == "fp32" else "tf32", FAST_EXP2=True)
        if backward:
            consts.update(STEPS=16, BIAS_GRAD=bias != "none", BIAS_SHARED=bias.startswith("shared"))
        sig = {}
        for arg in kernel.arg_names:
            if arg in consts:
                sig[arg] = "constexpr"
            elif arg.endswith("_ptr"):
                sig[arg] = "*" + io.get(arg, "fp32")
            else:
                sig[arg] = "i64" if arg.startswith("s") and arg != "n_split" else "i32"
        triton.compile(ASTSource(kernel, sig, consts), target=GPUTarget("cuda", arch, 32),
                       options=dict(num_warps=cfg.num_warps))
    print("ok", config, flush=True)
"""
# dtype, sm, HP, MP, b_o present, logit bias, C: the common case with a head-shared bias times a per-head
# scale (one C slice), the widest key padding with a per-head bias, and fp32 without b_o or bias.
AOT_CONFIGS = ["fp16,90,4,16,1,shared_scale,64", "bf16,80,1,64,1,heads,256", "fp32,90,8,16,0,none,256"]


def _ptxas_found() -> bool:
    try:
        import triton
    except ImportError:
        return False
    return (Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "ptxas").exists()


@pytest.mark.skipif(not _ptxas_found(), reason="triton's NVIDIA backend (ptxas) not installed")
def test_triton_kernels_compile_for_gpu():
    """Ahead-of-time compile of both kernels to cubin for sm_80/sm_90 (no GPU needed): catches what the
    interpreter accepts but the compiler rejects (dot shapes, layouts of the per-head reshape, dtypes)."""
    env = dict(os.environ, TRITON_INTERPRET="0")
    result = subprocess.run([sys.executable, "-c", _AOT, *AOT_CONFIGS], env=env, capture_output=True, text=True,
                            timeout=600)
    compiled = [line.split()[1] for line in result.stdout.splitlines() if line.startswith("ok ")]
    assert result.returncode == 0 and compiled == AOT_CONFIGS, \
        f"compiled {compiled} of {AOT_CONFIGS}\n{result.stderr[-4000:]}"
