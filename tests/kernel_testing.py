"""Shared helpers for kernel tests: backend parametrisation and relative-error checks.

    @pytest.mark.parametrize("device, backend", backend_cases("masked_patch_gather"))

gives one case per (device, backend) pair this suite should cover:
  cpu: reference, cpu (C++), triton (interpreter, marked ``interpret``)
  cuda: reference, triton, cuda (all marked ``gpu``)
A backend that is unavailable here is skipped with its reason, except that
``ANATO_REQUIRE_EXT=1`` (set by ``make test``) turns a missing C++ extension
into a failure, so CI cannot pass by skipping the compiled path.
"""

from __future__ import annotations

import os

import pytest
import torch

import anatokernels
from anatokernels import _dispatch, _extension

# ‖out − ref‖ / ‖ref‖ bounds, by the dtype the fast path ran in (reference in float64).
REL_TOL = {torch.float64: 1e-10, torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 1.6e-2}


def rel_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    out64, ref64 = out.detach().double().cpu(), ref.detach().double().cpu()
    denom = ref64.norm().item()
    diff = (out64 - ref64).norm().item()
    return diff if denom == 0 else diff / denom


def assert_rel_close(out: torch.Tensor, ref: torch.Tensor, dtype: torch.dtype, name: str = "output",
                     factor: float = 1.0) -> None:
    """Shape equal, no NaN/inf, and relative error within ``factor`` × the dtype's bound."""
    assert out.shape == ref.shape, f"{name}: shape {tuple(out.shape)} != reference {tuple(ref.shape)}"
    assert torch.isfinite(out).all(), f"{name}: non-finite values (an unwritten output stays NaN)"
    err = rel_err(out, ref)
    bound = REL_TOL[dtype] * factor
    assert err <= bound, f"{name}: relative error {err:.3e} > {bound:.1e} ({dtype})"


def _cpu_extension_mark(op_name: str):
    _extension.load(build=os.environ.get("ANATO_REQUIRE_EXT") == "1")
    status = _dispatch.availability(_dispatch._REGISTRY[op_name], "cpu")
    if status == _dispatch.AVAILABLE or os.environ.get("ANATO_REQUIRE_EXT") == "1":
        return ()
    return (pytest.mark.skip(reason=f"cpu backend: {status}"),)


def backend_cases(op_name: str, backends: tuple[str, ...] | None = None) -> list:
    """pytest params ``(device, backend)`` for every backend ``op_name`` implements."""
    anatokernels.backends()  # registers every op
    spec = _dispatch._REGISTRY[op_name]
    wanted = backends or spec.backends
    cases = []
    for backend in ("reference", "cpu", "triton"):
        if backend not in wanted:
            continue
        marks: tuple = ()
        if backend == "cpu":
            marks = _cpu_extension_mark(op_name)
        if backend == "triton":
            marks = (pytest.mark.interpret,)
            if not _dispatch.interpreter_enabled():
                marks += (pytest.mark.skip(reason="TRITON_INTERPRET is not 1"),)
        cases.append(pytest.param("cpu", backend, id=f"cpu-{backend}", marks=marks))
    for backend in ("reference", "triton", "cuda"):
        if backend in wanted:
            cases.append(pytest.param("cuda", backend, id=f"cuda-{backend}", marks=(pytest.mark.gpu,)))
    return cases
