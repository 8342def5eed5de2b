"""Plain PyTorch definition of hyper cross-attention: what ``backend="reference"`` runs.

The op written out as stated (unfused, one shot, autograd for every
gradient). Tests use it in float64 as the ground truth for every other
backend. It materialises q, the scores and o; the memory-lean PyTorch
evaluation is the ``chunked`` backend (:mod:`anatokernels.hyper_attention.chunked`).
"""

from __future__ import annotations

import torch


def hyper_cross_attention(x: torch.Tensor, k: torch.Tensor, v: torch.Tensor, w_q: torch.Tensor,
                          w_o: torch.Tensor, b_q: torch.Tensor | None, b_o: torch.Tensor | None,
                          key_ignore_mask: torch.Tensor | None, num_heads: int, scale: float) -> torch.Tensor:
    """The definition, unfused: x (B, L, C), k/v (B, M, E), w_q (B, C, E), w_o (E, C) or (B, E, C),
    b_q (B, E), b_o (C,), key_ignore_mask (B, M) bool (True = ignore) -> (B, L, C).

    Materialises q (B, L, E), the scores (B, H, L, M) and o (B, L, E). A sample
    whose keys are all excluded gets a zero attention output (out = b_o).
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
    keep = torch.ones(b, m, dtype=torch.bool, device=x.device) if key_ignore_mask is None else ~key_ignore_mask
    any_key = keep.any(dim=1)
    # A sample without keys softmaxes over all of them (finite, no NaN gradient) and is then zeroed.
    keep = keep | ~any_key[:, None]
    scores = scores.masked_fill(~keep[:, None, None, :], float("-inf"))
    probs = torch.softmax(scores, dim=-1) * any_key[:, None, None, None].to(scores.dtype)
    o = torch.einsum("bhlm,bmhd->blhd", probs, vh).reshape(b, n, e)
    out = torch.einsum("ble,ec->blc" if w_o.dim() == 2 else "ble,bec->blc", o, w_o)
    return out if b_o is None else out + b_o
