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
from anatokernels.hyper_attention.reference import scaled_bias

# The scores' unit: A and a are absorbed with scale·SCORE_UNIT (natural units here; see the Triton backend).
SCORE_UNIT = 1.0

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


def _columns(t: torch.Tensor, mp: int, heads: int, m: int) -> torch.Tensor:
    """The view (B, rows, heads, m) of (B, rows, HP·MP) columns that a bias with ``heads`` heads (1: all,
    broadcast) and m keys covers; the rest are padding."""
    return t.unflatten(-1, (-1, mp))[:, :, :heads if heads > 1 else None, :m]


def _bias_heads(bias: torch.Tensor, bias_scale: torch.Tensor | None) -> int:
    """Heads the scaled bias covers: H with a scale or a per-head bias, 1 (broadcast) otherwise."""
    return bias.shape[1] if bias_scale is None else bias_scale.shape[0]


def _head_rows(bias: torch.Tensor, h: int, rows: slice) -> torch.Tensor:
    """Head h's bias rows (B, rows, M), a view (a shared bias serves every head)."""
    return bias[:, h if bias.shape[1] > 1 else 0, rows]


def _scores(x_rows, A, a, bias, bias_scale, rows, mp, work):
    """softmax_heads(x·A + a + bias_scale·bias) of ``rows``: (B, rows, HP·MP) in ``work``. The bias is
    added in place, head by head where scaled, so no temporary exceeds (B, rows, M)."""
    s = torch.baddbmm(a[:, None, :], x_rows.to(work), A)
    if bias is not None:
        s4 = _columns(s, mp, _bias_heads(bias, bias_scale), bias.shape[-1])
        if bias_scale is None:
            s4.add_(bias[:, :, rows].transpose(1, 2))
        else:
            for h in range(s4.shape[2]):
                s4[:, :, h].add_(scaled_bias(_head_rows(bias, h, rows).to(work), bias_scale[h].to(work)))
    return segment_softmax(s, mp)


def forward(x: torch.Tensor, A: torch.Tensor, a: torch.Tensor, Bv: torch.Tensor, b_o: torch.Tensor | None,
            mp: int, bias: torch.Tensor | None = None, bias_scale: torch.Tensor | None = None,
            chunk: int | None = None) -> torch.Tensor:
    """out (B, L, C) in x's dtype: softmax_heads(x·A + a + bias_scale·bias)·Bv + b_o, ``chunk`` rows of L
    at a time. bias (B, H or 1, L, M) any strides, or None; bias_scale (H,) or None."""
    b, n, c = x.shape
    work = accumulation_dtype(x)
    chunk = chunk or chunk_rows(b, max(c, A.shape[-1]))
    A, a, Bv = A.to(work), a.to(work), Bv.to(work)
    bias_o = torch.zeros(c, dtype=work, device=x.device) if b_o is None else b_o.to(work)
    out = _memory.empty((b, n, c), dtype=x.dtype, device=x.device)
    for start in range(0, n, chunk):
        rows = slice(start, min(n, start + chunk))
        p = _scores(x[:, rows], A, a, bias, bias_scale, rows, mp, work)
        out[:, rows] = torch.baddbmm(bias_o, p, Bv).to(x.dtype)
    return out


def _bias_grads(ds, bias, bias_scale, rows, mp, dbias, dscale, work):
    """Writes the bias gradient of ``rows`` into dbias (B, H or 1, L, M) (or None) and adds the scale's
    into dscale (H,) (or None): ds (B, rows, HP·MP) is the gradient of the scores. Head by head where
    scaled, so no temporary exceeds (B, rows, M)."""
    ds4 = _columns(ds, mp, _bias_heads(bias, bias_scale), bias.shape[-1])  # (B, rows, H or HP, M)
    if bias_scale is None:
        if dbias is not None:
            dbias[:, :, rows] = (ds4 if dbias.shape[1] > 1 else ds4.sum(dim=2, keepdim=True)).transpose(1, 2)
        return
    shared = dbias is not None and dbias.shape[1] == 1
    total = torch.zeros_like(ds4[:, :, 0]) if shared else None
    for h in range(ds4.shape[2]):
        d, scale = ds4[:, :, h], bias_scale[h].to(work)
        finite = _head_rows(bias, h, rows).to(work)
        dscale[h] += (d * finite.masked_fill(finite == float("-inf"), 0.0)).sum()
        if shared:
            total.addcmul_(d, scale)
        elif dbias is not None:
            dbias[:, h, rows] = d * scale
    if shared:
        dbias[:, 0, rows] = total


def backward(x: torch.Tensor, dout: torch.Tensor, A: torch.Tensor, a: torch.Tensor, Bv: torch.Tensor,
             b_o: torch.Tensor | None, mp: int, bias: torch.Tensor | None = None,
             bias_scale: torch.Tensor | None = None, bias_grad: bool = False, chunk: int | None = None):
    """Gradients of :func:`forward`: (dx (B, L, C) in x's dtype, dA (B, C, HP·MP), da (B, HP·MP),
    dBv (B, HP·MP, C), db_o (C,) or None, dbias (bias's shape, contiguous, bias's dtype; None unless
    ``bias_grad``), dscale (H,) or None (None without bias_scale)), dA/da/dBv in A's dtype. Recomputes
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
    dbias = _memory.empty(bias.shape, dtype=bias.dtype, device=x.device) if bias_grad else None
    dscale = None if bias_scale is None else torch.zeros(bias_scale.shape, dtype=work, device=x.device)
    for start in range(0, n, chunk):
        rows = slice(start, min(n, start + chunk))
        xs, g = x[:, rows].to(work), dout[:, rows].to(work)
        p = _scores(xs, A_w, a_w, bias, bias_scale, rows, mp, work)
        dp = torch.bmm(g, Bv_w.transpose(1, 2))
        pdp = dp.mul_(p).unflatten(-1, (-1, mp))
        ds = pdp.sub_(p.unflatten(-1, (-1, mp)) * pdp.sum(dim=-1, keepdim=True)).flatten(-2)
        if bias is not None:
            _bias_grads(ds, bias, bias_scale, rows, mp, dbias, dscale, work)
        dx[:, rows] = torch.bmm(ds, A_w.transpose(1, 2)).to(x.dtype)
        dA.baddbmm_(xs.transpose(1, 2), ds)
        dBv.baddbmm_(p.transpose(1, 2), g)
        da += ds.sum(dim=1)
        dbo += g.sum(dim=(0, 1))
    dtype = A.dtype
    return (dx, dA.to(dtype), da.to(dtype), dBv.to(dtype), None if b_o is None else dbo.to(b_o.dtype), dbias,
            None if dscale is None else dscale.to(bias_scale.dtype))
