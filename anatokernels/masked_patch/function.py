"""Autograd for the fast backends. A backend module provides

    gather(x, index, patch) -> (B, M, P)
    scatter(patches, index, patch, out, accumulate) -> None   (in place into out (B, C, D, H, W))

and optionally

    scatter_sum(patches, index, patch, shape, dtype) -> (B, C, D, H, W) in ``dtype``: the sum of the
        patches into a zero volume, written whole (no zeroed buffer, no atomics)

The Functions below compose them: the backward of a gather is a scatter-sum
(duplicate ids accumulate), the backward of a scatter a gather. Both ops are
linear and their backwards are built from the same Functions, so a gradient
computed with ``create_graph=True`` is itself differentiable (double
backward, e.g. a gradient penalty, works on every backend).
"""

from __future__ import annotations

import torch

from anatokernels import _checks, _memory


def scatter_add(backend, grad: torch.Tensor, index: torch.Tensor, patch, shape, dtype) -> torch.Tensor:
    """Sum (B, M, P) patches into a zero (B, C, D, H, W) volume of ``dtype``; low precision accumulates in
    float32."""
    if hasattr(backend, "scatter_sum"):
        return backend.scatter_sum(grad, index, patch, shape, dtype)
    out = torch.zeros(shape, dtype=_checks.accumulation_dtype(grad), device=grad.device)
    backend.scatter(grad, index, patch, out, True)
    return out.to(dtype)


class MaskedPatchGather(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, index, patch, backend):
        ctx.save_for_backward(index)
        ctx.patch, ctx.backend, ctx.shape, ctx.dtype = patch, backend, x.shape, x.dtype
        return backend.gather(x, index, patch)

    @staticmethod
    def backward(ctx, grad):
        (index,) = ctx.saved_tensors
        dx = MaskedPatchScatterSum.apply(grad, index, ctx.patch, ctx.shape, ctx.dtype, ctx.backend)
        return dx, None, None, None


class MaskedPatchScatterSum(torch.autograd.Function):
    """The backward of a gather as a Function of its own, so that it is differentiable too (its backward
    is a gather)."""

    @staticmethod
    def forward(ctx, patches, index, patch, shape, dtype, backend):
        ctx.save_for_backward(index)
        ctx.patch, ctx.backend = patch, backend
        return scatter_add(backend, patches.contiguous(), index, patch, shape, dtype)

    @staticmethod
    def backward(ctx, grad):
        (index,) = ctx.saved_tensors
        return MaskedPatchGather.apply(grad.contiguous(), index, ctx.patch, ctx.backend), None, None, None, None, None


class MaskedPatchScatter(torch.autograd.Function):
    @staticmethod
    def forward(ctx, patches, fill, index, patch, spatial, backend):
        """patches (B, M, P); fill (C,) in patches' dtype; ids unique per sample."""
        b, _, p_len = patches.shape
        channels = fill.shape[0]
        out = _memory.empty((b, channels, *spatial), dtype=patches.dtype, device=patches.device)
        out.copy_(fill.view(1, channels, 1, 1, 1).expand_as(out))
        backend.scatter(patches, index, patch, out, False)
        ctx.save_for_backward(index)
        ctx.patch, ctx.backend, ctx.channels = patch, backend, channels
        return out

    @staticmethod
    def backward(ctx, grad):
        (index,) = ctx.saved_tensors
        grad = grad.contiguous()
        d_patches = None
        if ctx.needs_input_grad[0] or ctx.needs_input_grad[1]:
            d_patches = MaskedPatchGather.apply(grad, index, ctx.patch, ctx.backend)
        d_fill = None
        if ctx.needs_input_grad[1]:
            # every voxel not covered by a patch took fill[c]: total per channel minus the covered part
            b, m, _ = d_patches.shape
            acc = _checks.accumulation_dtype(grad)
            covered = d_patches.reshape(b, m, ctx.channels, -1).sum(dim=(0, 1, 3), dtype=acc)
            total = grad.sum(dim=(0, 2, 3, 4), dtype=acc)
            d_fill = (total - covered).to(grad.dtype)
        return d_patches if ctx.needs_input_grad[0] else None, d_fill, None, None, None, None
