"""PyTorch versions of hyper cross-attention: the plain definition and the chunked ``reference`` backend.

:func:`hyper_cross_attention` is the op written out as the issue states it
(unfused, one shot, autograd for every gradient). Tests use it in float64 as
the ground truth.

:func:`forward` / :func:`backward` are what ``backend="reference"`` runs (on
CPU and as the GPU fallback). They evaluate the absorbed form (see
:mod:`anatokernels.hyper_attention.function`) in chunks of L rows with a
hand-written backward that recomputes each chunk, so that forward plus
backward never hold more than O(chunk·H·M) intermediates besides the inputs,
the output and the gradients. The Triton kernels compute the same thing per
block of rows.

Absorbed-form shapes: x (B, L, C); A (B, C, HP·MP); a (B, HP·MP) with −inf at
excluded keys; Bv (B, HP·MP, C); b_o (C,) or None. Column j belongs to head
j // MP, key j % MP.
"""

from __future__ import annotations

import torch

from anatokernels import _memory

# Rows per chunk are chosen so one (B, chunk, max(C, HP·MP)) intermediate holds about this many elements.
CHUNK_ELEMENTS = 1 << 20


def hyper_cross_attention(x: torch.Tensor, k: torch.Tensor, v: torch.Tensor, w_q: torch.Tensor,
                          w_o: torch.Tensor, b_q: torch.Tensor | None, b_o: torch.Tensor | None,
                          key_padding_mask: torch.Tensor | None, num_heads: int, scale: float) -> torch.Tensor:
    """The definition, unfused: x (B, L, C), k/v (B, M, E), w_q (B, C, E), w_o (E, C) or (B, E, C),
    b_q (B, E), b_o (C,), key_padding_mask (B, M) bool (True = keep) -> (B, L, C).

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
    keep = torch.ones(b, m, dtype=torch.bool, device=x.device) if key_padding_mask is None else key_padding_mask
    any_key = keep.any(dim=1)
    # A sample without keys softmaxes over all of them (finite, no NaN gradient) and is then zeroed.
    keep = keep | ~any_key[:, None]
    scores = scores.masked_fill(~keep[:, None, None, :], float("-inf"))
    probs = torch.softmax(scores, dim=-1) * any_key[:, None, None, None].to(scores.dtype)
    o = torch.einsum("bhlm,bmhd->blhd", probs, vh).reshape(b, n, e)
    out = torch.einsum("ble,ec->blc" if w_o.dim() == 2 else "ble,bec->blc", o, w_o)
    return out if b_o is None else out + b_o


def segment_softmax(s: torch.Tensor, mp: int) -> torch.Tensor:
    """Softmax of (..., HP·MP) scores within each head's MP columns; a head whose
    columns are all −inf gets probabilities 0 (not NaN)."""
    finfo = torch.finfo(s.dtype)
    seg = s.unflatten(-1, (-1, mp))
    # clamping keeps an all −inf head finite: exp(−inf − min) = 0, and 0 / tiny = 0
    e = (seg - seg.amax(dim=-1, keepdim=True).clamp_min_(finfo.min)).exp_()
    return e.div_(e.sum(dim=-1, keepdim=True).clamp_min_(finfo.tiny)).flatten(-2)


def _work_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def chunk_rows(batch: int, width: int) -> int:
    """Rows of L per chunk for intermediates (B, chunk, width)."""
    return max(1, CHUNK_ELEMENTS // max(1, batch * width))


def forward(x: torch.Tensor, A: torch.Tensor, a: torch.Tensor, Bv: torch.Tensor, b_o: torch.Tensor | None,
            mp: int, chunk: int | None = None) -> torch.Tensor:
    """out (B, L, C) in x's dtype: softmax_heads(x·A + a)·Bv + b_o, ``chunk`` rows of L at a time."""
    b, n, c = x.shape
    work = _work_dtype(x.dtype)
    chunk = chunk or chunk_rows(b, max(c, A.shape[-1]))
    A, a, Bv = A.to(work), a.to(work), Bv.to(work)
    bias = torch.zeros(c, dtype=work, device=x.device) if b_o is None else b_o.to(work)
    out = _memory.empty((b, n, c), dtype=x.dtype, device=x.device)
    for start in range(0, n, chunk):
        rows = slice(start, min(n, start + chunk))
        p = segment_softmax(torch.baddbmm(a[:, None, :], x[:, rows].to(work), A), mp)
        out[:, rows] = torch.baddbmm(bias, p, Bv).to(x.dtype)
    return out


def backward(x: torch.Tensor, dout: torch.Tensor, A: torch.Tensor, a: torch.Tensor, Bv: torch.Tensor,
             b_o: torch.Tensor | None, mp: int, chunk: int | None = None):
    """Gradients of :func:`forward`: (dx (B, L, C) in x's dtype, dA (B, C, HP·MP), da (B, HP·MP),
    dBv (B, HP·MP, C), db_o (C,) or None), the last four in A's dtype. Recomputes
    the scores chunk by chunk instead of storing them."""
    b, n, c = x.shape
    hmp = A.shape[-1]
    work = _work_dtype(x.dtype)
    chunk = chunk or chunk_rows(b, max(c, hmp))
    A_w, a_w, Bv_w = A.to(work), a.to(work), Bv.to(work)
    dx = _memory.empty((b, n, c), dtype=x.dtype, device=x.device)
    dA = torch.zeros(b, c, hmp, dtype=work, device=x.device)
    dBv = torch.zeros(b, hmp, c, dtype=work, device=x.device)
    da = torch.zeros(b, hmp, dtype=work, device=x.device)
    dbo = torch.zeros(c, dtype=work, device=x.device)
    for start in range(0, n, chunk):
        rows = slice(start, min(n, start + chunk))
        xs, g = x[:, rows].to(work), dout[:, rows].to(work)
        p = segment_softmax(torch.baddbmm(a_w[:, None, :], xs, A_w), mp)
        dp = torch.bmm(g, Bv_w.transpose(1, 2))
        pdp = dp.mul_(p).unflatten(-1, (-1, mp))
        ds = pdp.sub_(p.unflatten(-1, (-1, mp)) * pdp.sum(dim=-1, keepdim=True)).flatten(-2)
        dx[:, rows] = torch.bmm(ds, A_w.transpose(1, 2)).to(x.dtype)
        dA.baddbmm_(xs.transpose(1, 2), ds)
        dBv.baddbmm_(p.transpose(1, 2), g)
        da += ds.sum(dim=1)
        dbo += g.sum(dim=(0, 1))
    dtype = A.dtype
    return dx, dA.to(dtype), da.to(dtype), dBv.to(dtype), None if b_o is None else dbo.to(b_o.dtype)
