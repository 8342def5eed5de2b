"""HyperCrossAttention layer: both input forms, forward and backward on CPU, prompt masking, errors."""

import os

import pytest
import torch

from anatokernels.hyper_attention import reference
from anatokernels.nn import HyperCrossAttention

DIM, PROMPT_DIM, HEADS, RANK = 20, 12, 4, 3
SPATIAL = (3, 5, 7)


pytestmark = pytest.mark.usefixtures("one_thread")


def _layer(**kw):
    layer = HyperCrossAttention(DIM, PROMPT_DIM, num_heads=HEADS, rank=RANK, hyper_hidden=16, **kw)
    with torch.no_grad():  # move away from the initial state so every generated quantity matters
        for param in layer.parameters():
            param.add_(0.1 * torch.randn_like(param))
    return layer


def _inputs(b=3, m=5):
    x = torch.randn(b, DIM, *SPATIAL, dtype=torch.float64)
    prompts = torch.randn(b, m, PROMPT_DIM, dtype=torch.float64)
    mask = torch.rand(b, m) <= 0.3  # True = ignore (an absent prompt), as in nn.MultiheadAttention
    mask[0, 0] = False
    mask[1] = True  # a sample without any organ prompt
    return x, prompts, mask


@pytest.mark.parametrize("form", ["volume", "tokens"])
def test_forward_backward_reaches_every_parameter(form):
    layer = _layer().double()
    x, prompts, mask = _inputs()
    inp = x if form == "volume" else x.flatten(2).transpose(1, 2).contiguous()
    inp.requires_grad_()
    prompts.requires_grad_()
    y = layer(inp, prompts, key_padding_mask=mask)
    assert y.shape == inp.shape and y.dtype == inp.dtype and torch.isfinite(y).all()
    (y * torch.randn_like(y)).sum().backward()
    for name, param in layer.named_parameters():
        assert param.grad is not None and torch.isfinite(param.grad).all(), name
        assert param.grad.abs().sum() > 0, f"{name} gets no gradient"
    assert torch.isfinite(inp.grad).all() and torch.isfinite(prompts.grad).all()
    assert torch.equal(prompts.grad[1], torch.zeros_like(prompts.grad[1])), "absent prompts must not matter"


def test_volume_and_token_forms_agree():
    layer = _layer().double()
    x, prompts, mask = _inputs()
    tokens = x.flatten(2).transpose(1, 2)
    y_volume = layer(x, prompts, key_padding_mask=mask)
    y_tokens = layer(tokens, prompts, key_padding_mask=mask)
    torch.testing.assert_close(y_volume.flatten(2).transpose(1, 2), y_tokens, rtol=1e-12, atol=1e-12)


def test_matches_definition_and_sample_without_prompts_adds_b_o():
    """Rebuilds W_q(b), the gated w_o, k and v by hand and checks the layer against the unfused definition."""
    layer = _layer().double()
    x, prompts, mask = _inputs()
    tokens = x.flatten(2).transpose(1, 2)
    y = layer(x, prompts, key_padding_mask=mask).flatten(2).transpose(1, 2)
    normed, p = layer.norm(tokens), layer.prompt_norm(prompts)
    w = (~mask).double()[..., None]
    mean = (p * w).sum(1) / w.sum(1).clamp_min(1)
    u, v_low, g = layer.hyper(torch.cat([normed.mean(1), mean], -1)).split([DIM * RANK, DIM * RANK, HEADS], -1)
    w_q = layer.w_q + torch.einsum("bcr,ber->bce", u.reshape(-1, DIM, RANK), v_low.reshape(-1, DIM, RANK))
    w_o = (2 * torch.sigmoid(g)).repeat_interleave(DIM // HEADS, 1)[:, :, None] * layer.w_o
    attn = reference.hyper_cross_attention(normed, layer.to_k(p), layer.to_v(p), w_q, w_o,
                                           layer.b_q.expand(3, DIM), layer.b_o, mask, HEADS,
                                           (DIM // HEADS) ** -0.5)
    torch.testing.assert_close(y, tokens + attn, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(y[1], tokens[1] + layer.b_o, rtol=1e-12, atol=1e-12)


def test_attn_bias_with_per_head_scale_reaches_the_op():
    """A head-shared (B, 1, L, M) bias times an (H,) scale (L in x.flatten(2) order) equals the (B, H, L, M)
    product passed as the bias, changes the output, and gives the scale and the bias gradients."""
    layer = _layer().double()
    x, prompts, mask = _inputs()
    bias = torch.randn(3, 1, x[0, 0].numel(), 5, dtype=torch.float64, requires_grad=True)
    scale = torch.randn(HEADS, dtype=torch.float64, requires_grad=True)
    y = layer(x, prompts, key_padding_mask=mask, attn_bias=bias, attn_bias_scale=scale)
    product = bias.detach().clone().requires_grad_()
    scale_ref = scale.detach().clone().requires_grad_()
    y_ref = layer(x, prompts, key_padding_mask=mask, attn_bias=scale_ref[None, :, None, None] * product)
    torch.testing.assert_close(y, y_ref, rtol=1e-12, atol=1e-12)
    assert not torch.allclose(y, layer(x, prompts, key_padding_mask=mask)), "the bias changes nothing"
    g = torch.randn_like(y)
    (y * g).sum().backward()
    (y_ref * g).sum().backward()
    torch.testing.assert_close(scale.grad, scale_ref.grad, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(bias.grad, product.grad, rtol=1e-10, atol=1e-12)
    assert scale.grad.abs().sum() > 0


@pytest.mark.interpret
@pytest.mark.skipif(os.environ.get("TRITON_INTERPRET") != "1", reason="needs TRITON_INTERPRET=1")
@pytest.mark.parametrize("with_bias", [False, True], ids=["noBias", "sharedBiasScale"])
def test_triton_backend_matches_reference_backend(with_bias):
    x, prompts, mask = (t.float() if t.is_floating_point() else t for t in _inputs())
    torch.manual_seed(1)
    fused = _layer(backend="triton")
    plain = _layer(backend="reference")
    plain.load_state_dict(fused.state_dict())
    bias = torch.randn(3, 1, x[0, 0].numel(), 5) if with_bias else None
    scale = torch.randn(HEADS) if with_bias else None
    outs = []
    for layer in (fused, plain):
        inp = x.clone().requires_grad_()
        b, sc = (None, None) if bias is None else (bias.clone().requires_grad_(), scale.clone().requires_grad_())
        y = layer(inp, prompts, key_padding_mask=mask, attn_bias=b, attn_bias_scale=sc)
        y.square().sum().backward()
        outs.append((y, inp.grad, layer.w_q.grad, layer.hyper[-1].weight.grad)
                    + (() if b is None else (b.grad, sc.grad)))
    for got, want in zip(*outs):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("args, message", [
    (dict(x=torch.randn(2, DIM + 1, 3, 3, 3)), "must be"),
    (dict(x=torch.randn(2, DIM, 9)), "must be"),
    (dict(prompts=torch.randn(2, 4, PROMPT_DIM + 1)), "prompts must be"),
    (dict(prompts=torch.randn(3, 4, PROMPT_DIM)), "prompts must be"),
    (dict(key_padding_mask=torch.ones(2, 4)), "key_padding_mask must be"),
    (dict(key_padding_mask=torch.ones(2, 5, dtype=torch.bool)), "key_padding_mask must be"),
], ids=["channels", "rank-3-volume-like", "prompt-width", "prompt-batch", "mask-float", "mask-shape"])
def test_bad_inputs(args, message):
    call = dict(x=torch.randn(2, DIM, 3, 3, 3), prompts=torch.randn(2, 4, PROMPT_DIM), key_padding_mask=None)
    call.update(args)
    with pytest.raises(ValueError, match=message):
        _layer()(**call)


def test_bad_construction():
    with pytest.raises(ValueError, match="not divisible"):
        HyperCrossAttention(10, 4, num_heads=4)
    with pytest.raises(ValueError, match="rank must be"):
        HyperCrossAttention(8, 4, rank=0)


def test_old_keep_mask_is_an_error_not_an_inverted_mask():
    """prompt_mask (True = present) became key_padding_mask (True = ignore): the old call must fail loudly."""
    layer, x, prompts = _layer(), torch.randn(2, DIM, 3, 3, 3), torch.randn(2, 4, PROMPT_DIM)
    present = torch.ones(2, 4, dtype=torch.bool)
    with pytest.raises(TypeError, match=r"prompt_mask \(True = keep\) was removed.*True = ignore"):
        layer(x, prompts, prompt_mask=present)
    with pytest.raises(TypeError):
        layer(x, prompts, present)  # the mask is keyword-only: a positional one is not silently reinterpreted
