"""Autograd for the fast backends, as custom ops. A backend module provides

    gather(x, index, patch) -> (B, M, P)
    scatter(patches, index, patch, out, accumulate) -> None   (in place into out (B, C, D, H, W))

and optionally

    scatter_sum(patches, index, patch, shape, dtype) -> (B, C, D, H, W) in ``dtype``: the sum of the
        patches into a zero volume, written whole (no zeroed buffer, no atomics)

The custom ops below (``torch.ops.anatokernels.masked_patch_{gather,scatter,scatter_sum}``, see
:mod:`anatokernels._library`; each takes the backend's name last) compose them: the backward of a
gather is a scatter-sum (duplicate ids accumulate), the backward of a scatter-sum a gather, the
backward of a scatter a gather. Both ops are linear and their backwards are these same custom ops with
their own autograd, so a gradient computed with ``create_graph=True`` is itself differentiable (double
backward, e.g. a gradient penalty, works on every backend).
"""

from __future__ import annotations

import torch

from anatokernels import _checks, _dispatch, _library, _memory

OP = "masked_patch_gather"  # the registry entry whose package holds the backend modules


def scatter_add(backend, grad: torch.Tensor, index: torch.Tensor, patch, shape, dtype) -> torch.Tensor:
    """Sum (B, M, P) patches into a zero (B, C, D, H, W) volume of ``dtype``; low precision accumulates in
    float32."""
    if hasattr(backend, "scatter_sum"):
        return backend.scatter_sum(grad, index, patch, shape, dtype)
    out = torch.zeros(shape, dtype=_checks.accumulation_dtype(grad), device=grad.device)
    backend.scatter(grad, index, patch, out, True)
    return out.to(dtype)


def _volume(patches: torch.Tensor, channels, spatial) -> torch.Tensor:
    return patches.new_empty((patches.shape[0], channels, *spatial))


def _gather_fake(x, index, patch, backend):
    return x.new_empty((x.shape[0], index.shape[1], x.shape[1] * patch[0] * patch[1] * patch[2]))


def _save_index(ctx, inputs, output):
    ctx.save_for_backward(inputs[1])
    ctx.patch, ctx.backend, ctx.extent = inputs[2], inputs[-1], inputs[0].shape[2:]


def _gather_backward(ctx, grad):
    (index,) = ctx.saved_tensors
    dx = masked_patch_scatter_sum(grad.contiguous(), index, ctx.patch, list(ctx.extent), ctx.backend)
    return dx, None, None, None


@_library.custom_op("masked_patch_gather", fake=_gather_fake, backward=_gather_backward, setup_context=_save_index,
                    differentiable_backward=True)
def masked_patch_gather(x: torch.Tensor, index: torch.Tensor, patch: list[int], backend: str) -> torch.Tensor:
    """(B, C, D, H, W) strided, (B, M) int64 -> (B, M, C·pd·ph·pw)."""
    return _dispatch.module(OP, backend).gather(x, index, tuple(patch))


def _scatter_sum_fake(patches, index, patch, spatial, backend):
    return _volume(patches, patches.shape[2] // (patch[0] * patch[1] * patch[2]), spatial)


def _scatter_sum_context(ctx, inputs, output):
    ctx.save_for_backward(inputs[1])
    ctx.patch, ctx.backend = inputs[2], inputs[-1]


def _scatter_sum_backward(ctx, grad):
    (index,) = ctx.saved_tensors
    return masked_patch_gather(grad.contiguous(), index, ctx.patch, ctx.backend), None, None, None, None


@_library.custom_op("masked_patch_scatter_sum", fake=_scatter_sum_fake, backward=_scatter_sum_backward,
                    setup_context=_scatter_sum_context, differentiable_backward=True)
def masked_patch_scatter_sum(patches: torch.Tensor, index: torch.Tensor, patch: list[int], spatial: list[int],
                             backend: str) -> torch.Tensor:
    """The backward of a gather: (B, M, P) patches summed into a zero (B, C, *spatial) volume."""
    b, _, p_len = patches.shape
    shape = (b, p_len // (patch[0] * patch[1] * patch[2]), *spatial)
    return scatter_add(_dispatch.module(OP, backend), patches.contiguous(), index, tuple(patch), shape,
                       patches.dtype)


def _scatter_fake(patches, fill, index, patch, spatial, backend):
    return _volume(patches, fill.shape[0], spatial)


def _scatter_context(ctx, inputs, output):
    ctx.save_for_backward(inputs[2])
    ctx.patch, ctx.backend, ctx.channels = inputs[3], inputs[-1], inputs[1].shape[0]


def _scatter_backward(ctx, grad):
    (index,) = ctx.saved_tensors
    grad = grad.contiguous()
    d_patches = None
    if ctx.needs_input_grad[0] or ctx.needs_input_grad[1]:
        d_patches = masked_patch_gather(grad, index, ctx.patch, ctx.backend)
    d_fill = None
    if ctx.needs_input_grad[1]:
        # every voxel not covered by a patch took fill[c]: total per channel minus the covered part
        b, m, _ = d_patches.shape
        acc = _checks.accumulation_dtype(grad)
        covered = d_patches.reshape(b, m, ctx.channels, -1).sum(dim=(0, 1, 3), dtype=acc)
        total = grad.sum(dim=(0, 2, 3, 4), dtype=acc)
        d_fill = (total - covered).to(grad.dtype)
    return d_patches if ctx.needs_input_grad[0] else None, d_fill, None, None, None, None


@_library.custom_op("masked_patch_scatter", fake=_scatter_fake, backward=_scatter_backward,
                    setup_context=_scatter_context, differentiable_backward=True)
def masked_patch_scatter(patches: torch.Tensor, fill: torch.Tensor, index: torch.Tensor, patch: list[int],
                         spatial: list[int], backend: str) -> torch.Tensor:
    """patches (B, M, P); fill (C,) in patches' dtype; ids unique per sample -> (B, C, *spatial)."""
    channels = fill.shape[0]
    out = _memory.empty((patches.shape[0], channels, *spatial), dtype=patches.dtype, device=patches.device)
    out.copy_(fill.view(1, channels, 1, 1, 1).expand_as(out))
    _dispatch.module(OP, backend).scatter(patches, index, tuple(patch), out, False)
    return out
