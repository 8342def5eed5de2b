"""Shared helpers for kernel tests: backend parametrisation and relative-error checks.

    @pytest.mark.parametrize("device, backend", backend_cases("masked_patch_gather"))

gives one case per (device, backend) pair this suite should cover:
  cpu: reference, chunked, cpu (C++), triton (interpreter, marked ``interpret``)
  cuda: reference, chunked, triton, cuda (all marked ``gpu``)
A backend that is unavailable here is skipped with its reason, except that
``ANATO_REQUIRE_EXT=1`` (set by ``make test``) turns a missing C++ extension
into a failure, so CI cannot pass by skipping the compiled path.
"""

from __future__ import annotations

import os

import pytest
import torch

import anatokernels

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


def _require_ext() -> bool:
    return os.environ.get("ANATO_REQUIRE_EXT") == "1"


def _cpu_extension_mark(status: anatokernels.Availability) -> tuple:
    if status.is_available or _require_ext():
        return ()
    return (pytest.mark.skip(reason=f"cpu backend: {status}"),)


def _triton_interpreter_marks() -> tuple:
    marks: tuple = (pytest.mark.interpret,)
    if os.environ.get("TRITON_INTERPRET") != "1":
        marks += (pytest.mark.skip(reason="TRITON_INTERPRET is not 1"),)
    return marks


def backend_cases(op_name: str, backends: tuple[str, ...] | None = None) -> list:
    """pytest params ``(device, backend)`` for every backend ``op_name`` implements."""
    table = anatokernels.backends(build=_require_ext())[op_name]
    implemented = [b for b, status in table.items() if status.state != "unimplemented"]
    wanted = [b for b in implemented if backends is None or b in backends]
    cases = []
    for backend in ("reference", "chunked", "cpu", "triton"):
        if backend in wanted:
            marks = {"cpu": _cpu_extension_mark(table["cpu"]), "triton": _triton_interpreter_marks()}.get(backend, ())
            cases.append(pytest.param("cpu", backend, id=f"cpu-{backend}", marks=marks))
    for backend in ("reference", "chunked", "triton", "cuda"):
        if backend in wanted:
            cases.append(pytest.param("cuda", backend, id=f"cuda-{backend}", marks=(pytest.mark.gpu,)))
    return cases
