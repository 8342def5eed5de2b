"""Tiny kernels that show what the patterns the contracts look for compile to (checked by the tests).

- ``_floordiv``: ``x // n`` and ``x % n``; with int64 operands ptxas calls the software 64-bit division
  routine (``CALL.REL`` into a subroutine with ``I2F.U64.RP`` + ``MUFU.RCP``); with int32 operands it
  inlines a multiply-based sequence and calls nothing.
- ``_atomic``: ``tl.atomic_add`` with its default ``sem="acq_rel"`` emits a ``MEMBAR``; ``"relaxed"`` none.
"""

from __future__ import annotations

import triton
import triton.language as tl

from benchmarks.static import compile as cc
from benchmarks.static import sass


@triton.jit
def _floordiv(x_ptr, y_ptr, n):
    i = tl.program_id(0) * 128 + tl.arange(0, 128)
    x = tl.load(x_ptr + i)
    tl.store(y_ptr + i, x // n + x % n)


@triton.jit
def _atomic(x_ptr, y_ptr, SEM: tl.constexpr):
    i = tl.program_id(0) * 128 + tl.arange(0, 128)
    tl.atomic_add(y_ptr + i, tl.load(x_ptr + i), sem=SEM)


PROBES = {  # name: (kernel, signature, constexprs)
    "probe.div_int64": (_floordiv, {"x_ptr": "*i64", "y_ptr": "*i64", "n": "i64"}, {}),
    "probe.div_int32": (_floordiv, {"x_ptr": "*i32", "y_ptr": "*i32", "n": "i32"}, {}),
    "probe.atomic_acq_rel": (_atomic, {"x_ptr": "*fp32", "y_ptr": "*fp32", "SEM": "constexpr"},
                             {(2,): "acq_rel"}),
    "probe.atomic_relaxed": (_atomic, {"x_ptr": "*fp32", "y_ptr": "*fp32", "SEM": "constexpr"},
                             {(2,): "relaxed"}),
}


def run(arch: int) -> list[dict]:
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    out = []
    for name, (fn, signature, constexprs) in PROBES.items():
        kernel = triton.compile(ASTSource(fn, signature, constexprs), target=GPUTarget("cuda", arch, 32),
                                options={"num_warps": 4})
        text = cc.cuobjdump(kernel.asm["cubin"], "-sass")
        fig = sass.figures(sass.parse_sass(text)[fn.__name__], "kernel")
        out.append(dict(fig, kernel=name, arch=arch, ok=True))
    return out
