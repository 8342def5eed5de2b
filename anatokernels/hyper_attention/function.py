"""The absorbed form that the fast paths evaluate, and its autograd Function.

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

A backend module (``chunked``, ``triton``) provides

    unsupported(m, num_heads, dtype) -> None, or why it cannot run the problem
    padded_heads(h) -> HP,  padded_keys(m) -> MP
    forward(x, A, a, Bv, b_o, mp) -> out (B, L, C)
    backward(x, dout, A, a, Bv, b_o, mp) -> (dx, dA, da, dBv, db_o)

(see :mod:`anatokernels.hyper_attention.chunked` for the exact contract).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

from anatokernels import _dispatch
from anatokernels._checks import accumulation_dtype
from anatokernels.hyper_attention import chunked

OP = "hyper_cross_attention"


def absorb(k: torch.Tensor, v: torch.Tensor, w_q: torch.Tensor, w_o: torch.Tensor, b_q: torch.Tensor | None,
           key_padding_mask: torch.Tensor | None, num_heads: int, scale: float, hp: int, mp: int):
    """(A (B, C, hp·mp), a (B, hp·mp), Bv (B, hp·mp, C)) in float32 (float64 for float64 inputs).

    k, v (B, M, E); w_q (B, C, E); w_o (E, C) or (B, E, C); b_q (B, E) or None;
    key_padding_mask (B, M) bool or None. hp ≥ num_heads and mp ≥ M pad the columns.
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
    if key_padding_mask is not None:
        a = a.masked_fill(~key_padding_mask[:, None, :], float("-inf"))
    wo = w_o.to(work)
    if wo.dim() == 2:
        Bv = torch.einsum("bmhd,hdc->bhmc", vh, wo.reshape(h, dh, c))
    else:
        Bv = torch.einsum("bmhd,bhdc->bhmc", vh, wo.reshape(b, h, dh, c))
    A = F.pad(A, (0, mp - m, 0, hp - h)).reshape(b, c, hp * mp)
    a = F.pad(a, (0, mp - m, 0, hp - h), value=float("-inf")).reshape(b, hp * mp)
    Bv = F.pad(Bv, (0, 0, 0, mp - m, 0, hp - h)).reshape(b, hp * mp, c)
    return A, a, Bv


class AbsorbedAttention(torch.autograd.Function):
    """out = softmax_heads(x·A + a)·Bv + b_o through the backend module ``impl`` named ``backend``.

    If the backward's Triton kernel fails to compile on the GPU, the ``chunked`` backward runs instead.
    Once-differentiable (the backwards return numbers, not a graph): a second backward through it
    raises; the ``reference`` backend is differentiable any number of times.
    """

    @staticmethod
    def forward(ctx, x, A, a, Bv, b_o, mp, impl, backend):
        ctx.save_for_backward(x, A, a, Bv, b_o)
        ctx.mp, ctx.impl, ctx.backend = mp, impl, backend
        return impl.forward(x, A, a, Bv, b_o, mp)

    @staticmethod
    @once_differentiable
    def backward(ctx, dout):
        x, A, a, Bv, b_o = ctx.saved_tensors
        args = (x, dout, A, a, Bv, b_o, ctx.mp)
        dx, dA, da, dBv, dbo = _dispatch.run_with_fallback(OP, ctx.backend, lambda: ctx.impl.backward(*args),
                                                           lambda: chunked.backward(*args))
        return dx, dA, da, dBv, dbo, None, None, None


def absorbed_attention(impl, x, k, v, w_q, w_o, b_q, b_o, key_padding_mask, num_heads: int, scale: float,
                       explicit: bool) -> torch.Tensor:
    """The op through a backend module ``impl`` of the absorbed form (``chunked`` or ``triton``).

    A problem ``impl`` cannot take (see its ``unsupported``) is a ValueError when
    its backend was asked for by name (``explicit``), else it runs ``chunked``.
    """
    backend = impl.__name__.rsplit(".", 1)[-1]
    problem = impl.unsupported(k.shape[1], num_heads, x.dtype)
    if problem is not None:
        if explicit:
            raise ValueError(f"{OP}: backend={backend!r} {problem}; use backend='chunked' or 'reference'")
        impl, backend = chunked, "chunked"
    mp = impl.padded_keys(k.shape[1])
    A, a, Bv = absorb(k, v, w_q, w_o, b_q, key_padding_mask, num_heads, scale, impl.padded_heads(num_heads), mp)
    return AbsorbedAttention.apply(x, A, a, Bv, b_o, mp, impl, backend)
