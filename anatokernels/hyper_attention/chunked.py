"""The ``chunked`` backend: hyper cross-attention in PyTorch, chunk by chunk, with a hand-written backward.

What ``auto`` runs on CPU tensors, and on CUDA tensors where the Triton kernels
are unavailable or cannot take the problem. :func:`forward` / :func:`backward`
evaluate the absorbed form (see :mod:`anatokernels.hyper_attention.function`)
in chunks of L rows with a backward that recomputes each chunk, so that
forward plus backward never hold more than O(chunk·H·M) intermediates besides
the inputs, the output and the gradients. The Triton kernels compute the same
thing per block of rows; the plain definition is
:mod:`anatokernels.hyper_attention.reference`.

Absorbed-form shapes: x (B, L, C); A (B, C, HP·MP); a (B, HP·MP) with −inf at
excluded keys; Bv (B, HP·MP, C); b_o (C,) or None. Column j belongs to head
j // MP, key j % MP. This backend pads nothing: HP = H and MP = M.
"""

from __future__ import annotations

import torch

from anatokernels import _memory
from anatokernels._checks import accumulation_dtype

# Rows per chunk are chosen so one (B, chunk, max(C, HP·MP)) intermediate holds about this many elements.
CHUNK_ELEMENTS = 1 << 20


def unsupported(m: int, num_heads: int, dtype: torch.dtype) -> str | None:
    """Why this backend cannot run a problem: never (any M, H and float dtype)."""
    return None


def padded_heads(h: int) -> int:
    return h


def padded_keys(m: int) -> int:
    return m


def segment_softmax(s: torch.Tensor, mp: int) -> torch.Tensor:
    """Softmax of (..., HP·MP) scores within each head's MP columns; a head whose
    columns are all −inf gets probabilities 0 (not NaN)."""
    finfo = torch.finfo(s.dtype)
    seg = s.unflatten(-1, (-1, mp))
    # clamping keeps an all −inf head finite: exp(−inf − min) = 0, and 0 / tiny = 0
    e = (seg - seg.amax(dim=-1, keepdim=True).clamp_min_(finfo.min)).exp_()
    return e.div_(e.sum(dim=-1, keepdim=True).clamp_min_(finfo.tiny)).flatten(-2)


def chunk_rows(batch: int, width: int) -> int:
    """Rows of L per chunk for intermediates (B, chunk, width)."""
    return max(1, CHUNK_ELEMENTS // max(1, batch * width))


def forward(x: torch.Tensor, A: torch.Tensor, a: torch.Tensor, Bv: torch.Tensor, b_o: torch.Tensor | None,
            mp: int, chunk: int | None = None) -> torch.Tensor:
    """out (B, L, C) in x's dtype: softmax_heads(x·A + a)·Bv + b_o, ``chunk`` rows of L at a time."""
    b, n, c = x.shape
    work = accumulation_dtype(x)
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
    work = accumulation_dtype(x)
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
