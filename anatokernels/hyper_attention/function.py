"""The absorbed form that the fast paths evaluate, and its custom ops with their autograd.

Per sample b and head h (dh = E/H, s = scale), the scores and the output are

    q_h·k_hᵀ·s = x·(s·W_q,h·k_hᵀ) + s·b_q,h·k_hᵀ = x·A_h + a_h
    o·W_o      = Σ_h P_h·v_h·W_o,h             = Σ_h P_h·Bv_h

with A_h (C, M), a_h (M,) and Bv_h (M, C) depending only on the sample, not on
the token. :func:`absorb` builds them once per call (O(B·C·E·M) work, autograd
carries their gradients back to w_q, b_q, k, v and w_o); the per-token work is
then two (L, C)×(C, H·M) products and a softmax per head, H·M ≤ E in the
intended use (M ≈ 12 prompts, H = 4), instead of the (L, C)×(C, E) products of
the unfused op, and q, the scores and o are never stored.

Columns are laid out as HP heads × MP keys (both padded, e.g. to the ``tl.dot``
minimum of 16 keys); padded and excluded keys get a = −inf, so their
probability is exactly 0, and a head without any key gets probabilities 0
(its attention output is 0, out = b_o).

An additive logit bias (per token, so it cannot be absorbed) is read by the
kernels tile by tile as it is given: bias (B, H, L, M), or (B, 1, L, M) shared
by the heads (its gradient is summed over the heads in the kernel, never
expanded to (B, H, L, M)), times an optional per-head bias_scale (H,); −inf
entries exclude the key for that token (see ``reference.scaled_bias``).

A backend module (``chunked``, ``triton``) provides

    unsupported(m, num_heads, dtype) -> None, or why it cannot run the problem
    padded_heads(h) -> HP,  padded_keys(m) -> MP
    SCORE_UNIT: the backend takes A and a absorbed with scale·SCORE_UNIT (1, or log2 e for exp2 kernels;
        the logit bias stays in natural units)
    forward(x, A, a, Bv, b_o, mp, bias=None, bias_scale=None) -> out (B, L, C)
    backward(x, dout, A, a, Bv, b_o, mp, bias=None, bias_scale=None, bias_grad=False)
        -> (dx, dA, da, dBv, db_o, dbias, dscale)

(see :mod:`anatokernels.hyper_attention.chunked` for the exact contract). They run as the custom ops
``torch.ops.anatokernels.hyper_cross_attention_{forward,backward}`` (see :mod:`anatokernels._library`),
the backend's name last; db_o, dbias and dscale are empty tensors where absent. The backward is
once-differentiable: differentiating the gradients raises; the ``reference`` backend is differentiable
any number of times.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from anatokernels import _dispatch, _library
from anatokernels._checks import accumulation_dtype
from anatokernels.hyper_attention import chunked

OP = "hyper_cross_attention"


def absorb(k: torch.Tensor, v: torch.Tensor, w_q: torch.Tensor, w_o: torch.Tensor, b_q: torch.Tensor | None,
           key_ignore_mask: torch.Tensor | None, num_heads: int, scale: float, hp: int, mp: int):
    """(A (B, C, hp·mp), a (B, hp·mp), Bv (B, hp·mp, C)) in float32 (float64 for float64 inputs).

    k, v (B, M, E); w_q (B, C, E); w_o (E, C) or (B, E, C); b_q (B, E) or None;
    key_ignore_mask (B, M) bool (True = ignore) or None. hp ≥ num_heads and mp ≥ M pad the columns.
    """
    b, m, e = k.shape
    c = w_q.shape[1]
    h, dh = num_heads, e // num_heads
    work = accumulation_dtype(k)
    kh = k.to(work).reshape(b, m, h, dh)
    vh = v.to(work).reshape(b, m, h, dh)
    A = torch.einsum("bchd,bmhd->bchm", w_q.to(work).reshape(b, c, h, dh), kh) * scale
    if b_q is None:
        a = torch.zeros(b, h, m, dtype=work, device=k.device)
    else:
        a = torch.einsum("bhd,bmhd->bhm", b_q.to(work).reshape(b, h, dh), kh) * scale
    if key_ignore_mask is not None:
        a = a.masked_fill(key_ignore_mask[:, None, :], float("-inf"))
    wo = w_o.to(work)
    if wo.dim() == 2:
        Bv = torch.einsum("bmhd,hdc->bhmc", vh, wo.reshape(h, dh, c))
    else:
        Bv = torch.einsum("bmhd,bhdc->bhmc", vh, wo.reshape(b, h, dh, c))
    A = F.pad(A, (0, mp - m, 0, hp - h)).reshape(b, c, hp * mp)
    a = F.pad(a, (0, mp - m, 0, hp - h), value=float("-inf")).reshape(b, hp * mp)
    Bv = F.pad(Bv, (0, 0, 0, mp - m, 0, hp - h)).reshape(b, hp * mp, c)
    return A, a, Bv


def _forward_fake(x, A, a, Bv, b_o, bias, bias_scale, mp, backend):
    return x.new_empty(x.shape)


def _backward_fake(x, dout, A, a, Bv, b_o, bias, bias_scale, bias_grad, mp, backend):
    dbo = A.new_empty(0) if b_o is None else b_o.new_empty(b_o.shape)
    dbias = bias.new_empty(bias.shape) if bias_grad else A.new_empty(0)
    dscale = A.new_empty(0) if bias_scale is None else bias_scale.new_empty(bias_scale.shape)
    return x.new_empty(x.shape), A.new_empty(A.shape), A.new_empty(a.shape), A.new_empty(Bv.shape), dbo, dbias, dscale


@_library.custom_op("hyper_cross_attention_backward", fake=_backward_fake)
def hyper_cross_attention_backward(x: torch.Tensor, dout: torch.Tensor, A: torch.Tensor, a: torch.Tensor,
                                   Bv: torch.Tensor, b_o: torch.Tensor | None, bias: torch.Tensor | None,
                                   bias_scale: torch.Tensor | None, bias_grad: bool, mp: int,
                                   backend: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor,
                                                          torch.Tensor, torch.Tensor, torch.Tensor]:
    """(dx, dA, da, dBv, db_o, dbias, dscale) of the backend contract; db_o, dbias and dscale are empty
    when b_o is None, ``bias_grad`` is False and bias_scale is None. If the Triton kernel fails to compile
    on the GPU, the ``chunked`` backward runs instead."""
    args = (x, dout, A, a, Bv, b_o, mp, bias, bias_scale, bias_grad)
    impl = _dispatch.module(OP, backend)
    grads = _dispatch.run_with_fallback(OP, backend, lambda: impl.backward(*args),
                                        lambda: _natural_units_backward(impl.SCORE_UNIT, *args))
    return (*grads[:4], *(A.new_empty(0) if g is None else g for g in grads[4:]))


def _natural_units_backward(unit: float, x, dout, A, a, Bv, *rest):
    """``chunked.backward`` of A, a given in ``unit`` (S·unit = x·A + a): the gradients of A and a in it."""
    dx, dA, da, *grads = chunked.backward(x, dout, A / unit, a / unit, Bv, *rest)
    return (dx, dA / unit, da / unit, *grads)


def _context(ctx, inputs, output):
    ctx.save_for_backward(*inputs[:7])
    ctx.mp, ctx.backend = inputs[7], inputs[8]


def _backward(ctx, dout):
    x, A, a, Bv, b_o, bias, bias_scale = ctx.saved_tensors
    bias_grad = bias is not None and ctx.needs_input_grad[5]
    grads = hyper_cross_attention_backward(x, dout, A, a, Bv, b_o, bias, bias_scale, bias_grad, ctx.mp,
                                           ctx.backend)
    dbo = None if b_o is None else grads[4]
    return (*grads[:4], dbo, grads[5] if bias_grad else None, None if bias_scale is None else grads[6], None, None)


@_library.custom_op("hyper_cross_attention_forward", fake=_forward_fake, backward=_backward, setup_context=_context)
def hyper_cross_attention_forward(x: torch.Tensor, A: torch.Tensor, a: torch.Tensor, Bv: torch.Tensor,
                                  b_o: torch.Tensor | None, bias: torch.Tensor | None,
                                  bias_scale: torch.Tensor | None, mp: int, backend: str) -> torch.Tensor:
    """out = softmax_heads(x·A + a + bias_scale·bias)·Bv + b_o (B, L, C) in x's dtype through the backend
    ``backend``."""
    return _dispatch.module(OP, backend).forward(x, A, a, Bv, b_o, mp, bias, bias_scale)


def absorbed_attention(impl, x, k, v, w_q, w_o, b_q, b_o, key_ignore_mask, num_heads: int, scale: float,
                       explicit: bool, attn_bias=None, attn_bias_scale=None) -> torch.Tensor:
    """The op through a backend module ``impl`` of the absorbed form (``chunked`` or ``triton``);
    attn_bias (B, H or 1, L, M) or None, attn_bias_scale (H,) or None.

    A problem ``impl`` cannot take (see its ``unsupported``) is a ValueError when
    its backend was asked for by name (``explicit``), else it runs ``chunked``.
    """
    backend = _library.backend_name(impl)
    problem = impl.unsupported(k.shape[1], num_heads, x.dtype)
    if problem is not None:
        if explicit:
            raise ValueError(f"{OP}: backend={backend!r} {problem}; use backend='chunked' or 'reference'")
        impl, backend = chunked, "chunked"
    mp = impl.padded_keys(k.shape[1])
    A, a, Bv = absorb(k, v, w_q, w_o, b_q, key_ignore_mask, num_heads, scale * impl.SCORE_UNIT,
                      impl.padded_heads(num_heads), mp)
    return hyper_cross_attention_forward(x, A, a, Bv, b_o, attn_bias, attn_bias_scale, mp, backend)
