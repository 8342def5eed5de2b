"""Hypernet-controlled cross-attention: image tokens attend to a few prompt tokens with per-sample weights.

Per sample b, with H heads of width dh = E/H:
    q = x_b·W_q(b) + b_q(b)                      x_b (L, C), W_q(b) (C, E)
    a_h = softmax over kept keys of q_h·k_hᵀ·scale  (default scale dh^-1/2)
    out = concat_h(a_h·v_h)·W_o(b) + b_o           W_o (E, C) shared or (B, E, C)
An optional additive logit bias (B, H or 1, L, M), times an optional per-head
scale, enters the scores before the softmax. A row whose keys are all masked
(or −inf in the bias) has attention output 0, so a sample without keys gives out = b_o.

Backends: ``reference`` (the unfused definition, autograd through plain
PyTorch ops, :mod:`anatokernels.hyper_attention.reference`), ``chunked``
(PyTorch; evaluates the op in chunks of L rows with a recomputing backward, so
its peak memory beyond inputs, output and gradients is O(chunk·H·M); what
``auto`` picks on CPU, :mod:`anatokernels.hyper_attention.chunked`) and
``triton`` (fused forward and backward kernels,
:mod:`anatokernels.hyper_attention.triton`). The last two evaluate the
absorbed form described in :mod:`anatokernels.hyper_attention.function`.
"""

from __future__ import annotations

import math

import torch

from anatokernels import _checks, _dispatch
from anatokernels.hyper_attention import reference
from anatokernels.hyper_attention.function import OP, absorbed_attention

SPEC = _dispatch.register(_dispatch.OpSpec(
    name=OP, package="anatokernels.hyper_attention", backends=("reference", "chunked", "triton"),
    gpu_preference=("triton",), fallback="chunked"))

__all__ = ["hyper_cross_attention"]


def _validate(x, k, v, w_q, w_o, b_q, b_o, key_ignore_mask, num_heads, scale) -> float:
    """Checks every argument; returns the scale to use."""
    _checks.check_tensor(OP, "x", x, ndim=3, layout="(B, L, C)")
    _checks.check_tensor(OP, "k", k, ndim=3, layout="(B, M, E)")
    b, _, c = x.shape
    m, e = k.shape[1], k.shape[2]
    if k.shape[0] != b:
        raise ValueError(f"{OP}: k has batch {k.shape[0]}, x has batch {b}")
    if c == 0 or m == 0 or e == 0:
        raise ValueError(f"{OP}: C, M and E must be non-empty, got x {_checks.shape_str(x.shape)} and "
                         f"k {_checks.shape_str(k.shape)} (mask every key instead of passing M=0)")
    _checks.check_shape(OP, "v", v, (b, m, e), "(B, M, E)")
    _checks.check_shape(OP, "w_q", w_q, (b, c, e), "(B, C, E)")
    _checks.check_tensor(OP, "w_o", w_o)
    if tuple(w_o.shape) not in ((e, c), (b, e, c)):
        raise ValueError(f"{OP}: w_o must have shape (E, C) = ({e}, {c}) or (B, E, C) = ({b}, {e}, {c}), "
                         f"got {_checks.shape_str(w_o.shape)}")
    if b_q is not None:
        _checks.check_shape(OP, "b_q", b_q, (b, e), "(B, E)")
    if b_o is not None:
        _checks.check_shape(OP, "b_o", b_o, (c,), "(C,)")
    if key_ignore_mask is not None:
        _checks.check_tensor(OP, "key_ignore_mask", key_ignore_mask, ndim=2, layout="(B, M)",
                             dtypes=(torch.bool,))
        if tuple(key_ignore_mask.shape) != (b, m):
            raise ValueError(f"{OP}: key_ignore_mask must have shape (B, M) = ({b}, {m}), "
                             f"got {_checks.shape_str(key_ignore_mask.shape)}")
    _checks.check_same_device(OP, x=x, k=k, v=v, w_q=w_q, w_o=w_o, b_q=b_q, b_o=b_o,
                              key_ignore_mask=key_ignore_mask)
    _checks.check_same_dtype(OP, x=x, k=k, v=v, w_q=w_q, w_o=w_o, b_q=b_q, b_o=b_o)
    if not isinstance(num_heads, int) or isinstance(num_heads, bool) or num_heads <= 0:
        raise TypeError(f"{OP}: num_heads must be a positive int, got {num_heads!r}")
    if e % num_heads:
        raise ValueError(f"{OP}: E={e} is not divisible by num_heads={num_heads}")
    if scale is None:
        return (e // num_heads) ** -0.5
    if not isinstance(scale, (int, float)) or isinstance(scale, bool) or not math.isfinite(scale):
        raise TypeError(f"{OP}: scale must be a finite number or None, got {scale!r}")
    return float(scale)


def _bias(attn_bias, attn_bias_scale, x, k, num_heads) -> torch.Tensor | None:
    """Checks the logit bias and its per-head scale; returns the bias as (B, H or 1, L, M) (a view)."""
    if attn_bias is None:
        if attn_bias_scale is not None:
            raise ValueError(f"{OP}: attn_bias_scale needs attn_bias (it multiplies the bias per head)")
        return None
    (b, n, _), m = x.shape, k.shape[1]
    layouts = f"(B, H, L, M) = ({b}, {num_heads}, {n}, {m}), (B, 1, L, M) or (B, L, M)"
    _checks.check_tensor(OP, "attn_bias", attn_bias)
    if attn_bias.dim() == 3:
        attn_bias = attn_bias.unsqueeze(1)
    if attn_bias.dim() != 4 or tuple(attn_bias.shape) not in ((b, num_heads, n, m), (b, 1, n, m)):
        raise ValueError(f"{OP}: attn_bias must have shape {layouts}, got {_checks.shape_str(attn_bias.shape)}")
    if attn_bias_scale is not None:
        _checks.check_shape(OP, "attn_bias_scale", attn_bias_scale, (num_heads,), "(H,)")
    _checks.check_same_device(OP, x=x, attn_bias=attn_bias, attn_bias_scale=attn_bias_scale)
    _checks.check_same_dtype(OP, x=x, attn_bias=attn_bias, attn_bias_scale=attn_bias_scale)
    return attn_bias


def hyper_cross_attention(x: torch.Tensor, k: torch.Tensor, v: torch.Tensor, w_q: torch.Tensor,
                          w_o: torch.Tensor, *, b_q: torch.Tensor | None = None, b_o: torch.Tensor | None = None,
                          key_ignore_mask: torch.Tensor | None = None, num_heads: int,
                          scale: float | None = None, attn_bias: torch.Tensor | None = None,
                          attn_bias_scale: torch.Tensor | None = None, backend: str = "auto",
                          key_padding_mask: None = None) -> torch.Tensor:
    """Cross-attention of image tokens to prompt keys with per-sample projections, fused.

    x: (B, L, C) image tokens, any strides (e.g. a transposed (B, C, L) view).
    k, v: (B, M, E) prompt keys and values, M ≥ 1 (the Triton backend takes M ≤ 64).
    w_q: (B, C, E) per-sample query projection; b_q: (B, E) or None.
    w_o: (E, C) shared or (B, E, C) per-sample output projection; b_o: (C,) or None.
    key_ignore_mask: (B, M) bool, True = ignore that key (``nn.MultiheadAttention``'s
        ``key_padding_mask`` convention); None keeps every key.
    key_padding_mask: removed; it meant True = keep. Passing it raises a TypeError (so no caller
        gets the inverted mask silently): pass ``key_ignore_mask=~mask``.
    num_heads: H, dividing E. scale: default (E/H)^-1/2.
    attn_bias: additive logit bias (B, H, L, M), or (B, 1, L, M) / (B, L, M) shared by the heads (e.g.
        log(occupancy + ε) of each prompt organ at each token), any strides; None adds nothing. A shared
        bias is read per tile and its gradient summed over the heads in the kernel: it is never expanded
        to (B, H, L, M). −inf entries exclude that key for that token; a token whose keys are all
        excluded (by the bias or key_ignore_mask) gets attention output 0 in that head.
    attn_bias_scale: (H,) per-head factor of the bias (e.g. a learned scale), or None (1); it scales the
        finite entries only (−inf stays −inf whatever the sign).
    All floating tensors share one dtype (float16, bfloat16, float32, float64;
    the Triton backend takes the first three) and one device.
    Returns (B, L, C) in x's dtype; differentiable in x, k, v, w_q, w_o, b_q, b_o, attn_bias and
    attn_bias_scale.

    ``auto`` runs ``triton`` on CUDA tensors once that backend is verified on a
    GPU (see :func:`anatokernels.backends`), and ``chunked`` otherwise,
    including problems outside the Triton limits (float64, M > 64, or
    next_pow2(H)·max(16, next_pow2(M)) > 1024). ``reference`` runs the plain definition.
    """
    _checks.removed_keep_mask(OP, "key_padding_mask", "key_ignore_mask", key_padding_mask)
    scale = _validate(x, k, v, w_q, w_o, b_q, b_o, key_ignore_mask, num_heads, scale)
    bias = _bias(attn_bias, attn_bias_scale, x, k, num_heads)
    return _dispatch.dispatch(
        OP, backend, x.device,
        fast=lambda impl: absorbed_attention(impl, x, k, v, w_q, w_o, b_q, b_o, key_ignore_mask, num_heads, scale,
                                             explicit=backend != "auto", attn_bias=bias,
                                             attn_bias_scale=attn_bias_scale),
        reference=lambda: reference.hyper_cross_attention(x, k, v, w_q, w_o, b_q, b_o, key_ignore_mask, num_heads,
                                                          scale, bias, attn_bias_scale))
