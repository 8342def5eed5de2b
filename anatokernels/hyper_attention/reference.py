"""Plain PyTorch definition of hyper cross-attention: what ``backend="reference"`` runs.

The op written out as stated (unfused, one shot, autograd for every
gradient). Tests use it in float64 as the ground truth for every other
backend. It materialises q, the scores and o; the memory-lean PyTorch
evaluation is the ``chunked`` backend (:mod:`anatokernels.hyper_attention.chunked`).
"""

from __future__ import annotations

import torch


def scaled_bias(bias: torch.Tensor, bias_scale: torch.Tensor | None) -> torch.Tensor:
    """The logit bias as added: ``bias_scale·bias`` on finite entries, −inf kept −inf whatever the scale
    (an excluded key stays excluded; its gradient for the scale is 0, not NaN). bias_scale broadcasts to
    bias (e.g. (1, H, 1, 1) against (B, 1 or H, L, M)), or None (1)."""
    if bias_scale is None:
        return bias
    excluded = bias == float("-inf")
    return (bias.masked_fill(excluded, 0.0) * bias_scale).masked_fill(excluded, float("-inf"))


def hyper_cross_attention(x: torch.Tensor, k: torch.Tensor, v: torch.Tensor, w_q: torch.Tensor,
                          w_o: torch.Tensor, b_q: torch.Tensor | None, b_o: torch.Tensor | None,
                          key_ignore_mask: torch.Tensor | None, num_heads: int, scale: float,
                          attn_bias: torch.Tensor | None = None,
                          attn_bias_scale: torch.Tensor | None = None) -> torch.Tensor:
    """The definition, unfused: x (B, L, C), k/v (B, M, E), w_q (B, C, E), w_o (E, C) or (B, E, C),
    b_q (B, E), b_o (C,), key_ignore_mask (B, M) bool (True = ignore), attn_bias (B, H, L, M) or
    (B, 1, L, M) or None, attn_bias_scale (H,) or None -> (B, L, C).

    Materialises q (B, L, E), the scores (B, H, L, M) and o (B, L, E). A row (token, head) whose keys are
    all excluded (ignored by the mask or −inf in the bias) gets a zero attention output, so a sample
    without keys gives out = b_o.
    """
    b, n, _ = x.shape
    m, e = k.shape[1], k.shape[2]
    dh = e // num_heads
    q = torch.einsum("blc,bce->ble", x, w_q)
    if b_q is not None:
        q = q + b_q[:, None, :]
    q = q.reshape(b, n, num_heads, dh)
    kh = k.reshape(b, m, num_heads, dh)
    vh = v.reshape(b, m, num_heads, dh)
    scores = torch.einsum("blhd,bmhd->bhlm", q, kh) * scale
    if attn_bias is not None:
        scores = scores + scaled_bias(attn_bias, None if attn_bias_scale is None
                                      else attn_bias_scale[None, :, None, None])
    if key_ignore_mask is not None:
        scores = scores.masked_fill(key_ignore_mask[:, None, None, :], float("-inf"))
    any_key = (scores > float("-inf")).any(dim=-1, keepdim=True)
    # A row without keys softmaxes over zeros (finite, no NaN gradient) and is then zeroed.
    probs = torch.softmax(scores.masked_fill(~any_key, 0.0), dim=-1) * any_key.to(scores.dtype)
    o = torch.einsum("bhlm,bmhd->blhd", probs, vh).reshape(b, n, e)
    out = torch.einsum("ble,ec->blc" if w_o.dim() == 2 else "ble,bec->blc", o, w_o)
    return out if b_o is None else out + b_o
