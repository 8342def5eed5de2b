"""The fast backends as ``torch.library`` custom ops: one registration helper shared by every op.

Each op's ``function.py`` defines its fast path as custom ops ``torch.ops.anatokernels.<name>`` at the
level of the backend contract (a forward, and a backward where the op is once-differentiable), each
taking the backend's name (``"chunked"``, ``"triton"``, ``"cpu"``, ``"cuda"``) as its last argument and
running that backend module's function. :func:`custom_op` registers one with

- a fake kernel (``register_fake``): output shapes and dtypes without running anything, so that
  ``torch.compile``, ``torch.export`` and FakeTensor tracing see the op as one opaque node;
- its autograd (``register_autograd``), written with other custom ops and PyTorch ops, so that
  AOTAutograd traces the backward too.

The C++/CUDA kernels stay registered by the extension itself (``torch.ops.anatokernels.*_cpu``/
``*_cuda``, mutating preallocated outputs); these custom ops wrap them, allocating the outputs.
Triton kernels are wrapped the same way (``custom_op``, not ``triton_op``): their launchers sort,
reduce and cast around the kernel launches, and run under the interpreter on CPU tensors.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.autograd.function import once_differentiable

NAMESPACE = "anatokernels"


def custom_op(name: str, *, fake: Callable, backward: Callable | None = None,
              setup_context: Callable | None = None, differentiable_backward: bool = False):
    """Decorator: ``fn`` becomes the custom op ``anatokernels::<name>`` (schema from its annotations,
    no input mutated), with the fake kernel ``fake`` and, if given, the autograd ``backward``/``setup_context``.

    The backward is once-differentiable (a second backward through it raises an error naming
    ``once_differentiable``) unless ``differentiable_backward``: then it must be built from
    differentiable ops (e.g. other custom ops with their own autograd).
    """
    def register(fn: Callable):
        op = torch.library.custom_op(f"{NAMESPACE}::{name}", fn, mutates_args=())
        op.register_fake(fake)
        if backward is not None:
            op.register_autograd(backward if differentiable_backward else once_differentiable(backward),
                                 setup_context=setup_context)
        return op
    return register


def backend_name(impl) -> str:
    """``"triton"`` for the module ``anatokernels.<op>.triton``: what a custom op takes as ``backend``."""
    return impl.__name__.rsplit(".", 1)[-1]
