"""Backend registry and selection shared by every public op.

Backends: ``reference`` (plain PyTorch), ``triton`` (Triton kernels; on CPU
tensors only under ``TRITON_INTERPRET=1``), ``cpu`` (C++/OpenMP extension) and
``cuda`` (CUDA extension).

``auto`` on CPU tensors picks ``cpu`` when the extension is already built, else
``reference``. On CUDA tensors it picks the first *verified* backend of the
op's GPU preference list, else ``reference``. Triton kernels count as verified
by their interpreter tests; a CUDA kernel only on the GPU architectures where
it has passed its tests on a real GPU (``OpSpec.cuda_verified_on``): elsewhere
it is ``unverified`` and never picked automatically (``backend="cuda"`` still
runs it).
"""

from __future__ import annotations

import importlib
import logging
import os
import warnings
from dataclasses import dataclass, field

import torch

from anatokernels import _extension

BACKENDS = ("reference", "triton", "cuda", "cpu")
AVAILABLE = "available"
log = logging.getLogger("anatokernels")


# Where the csrc CUDA kernels passed ``pytest -m gpu tests`` (all 102 GPU cases): an H100 80GB
# (sm_90), torch 2.11.0+cu130, triton 3.6.0, 2026-11-24 (benchmarks/results/gpu-h100-2026-11-24.md).
CUDA_TESTED_ON: tuple[tuple[int, int], ...] = ((9, 0),)


@dataclass(frozen=True)
class OpSpec:
    """What one public op implements.

    name: the public function name, e.g. ``"masked_patch_gather"``.
    package: the op's folder, e.g. ``"anatokernels.masked_patch"``; its
        ``triton``/``cpu``/``cuda`` modules hold the backends.
    backends: the backends implemented, in ``BACKENDS`` names.
    extension_ops: per compiled backend, the ``torch.ops.anatokernels`` names it needs.
    unverified: per backend, why it is not yet trusted (e.g. never run on a GPU).
    cuda_verified_on: compute capabilities (e.g. ``(9, 0)``) on which the ``cuda``
        backend passed the GPU test suite; on any other GPU it is unverified.
    gpu_preference: order in which ``auto`` tries backends on CUDA tensors.
    The defaults fit an op with csrc CUDA kernels covered by the GPU suite.
    """

    name: str
    package: str
    backends: tuple[str, ...]
    extension_ops: dict[str, tuple[str, ...]] = field(default_factory=dict)
    unverified: dict[str, str] = field(default_factory=dict)
    cuda_verified_on: tuple[tuple[int, int], ...] = CUDA_TESTED_ON
    gpu_preference: tuple[str, ...] = ("cuda", "triton")  # CUDA measured faster on the H100


_REGISTRY: dict[str, OpSpec] = {}
_announced = False
_warned_no_cpu = False
_triton_broken: set[tuple[str, str]] = set()


def register(spec: OpSpec) -> OpSpec:
    _REGISTRY[spec.name] = spec
    return spec


def interpreter_enabled() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def _triton_status() -> str:
    try:
        importlib.import_module("triton")
    except ImportError:
        return "triton not installed"
    if torch.cuda.is_available() or interpreter_enabled():
        return AVAILABLE
    return "no CUDA device (TRITON_INTERPRET=1 runs the kernels on the CPU)"


def availability(spec: OpSpec, backend: str, device: torch.device | None = None) -> str:
    """'available', or why ``backend`` cannot be used for ``spec`` on this machine
    (for ``cuda``: on ``device``, default the current CUDA device)."""
    if backend not in spec.backends:
        return "not implemented for this op"
    if backend == "reference":
        return AVAILABLE
    if backend == "triton":
        status = _triton_status()
    elif backend == "cpu":
        status = _extension_status(spec, "cpu")
    else:  # cuda
        if not torch.cuda.is_available():
            return "no CUDA device"
        status = _extension_status(spec, "cuda")
    if status == AVAILABLE and backend in spec.unverified:
        return f"unverified: {spec.unverified[backend]}"
    if status == AVAILABLE and backend == "cuda":
        arch = torch.cuda.get_device_capability(device)
        if arch not in spec.cuda_verified_on:
            where = ", ".join(f"sm_{a}{b}" for a, b in spec.cuda_verified_on) or "no GPU"
            return f"unverified: passed its GPU tests on {where} only, not yet on this sm_{arch[0]}{arch[1]}"
    return status


def _extension_status(spec: OpSpec, backend: str) -> str:
    status = _extension.status()
    if status != AVAILABLE:
        return status
    if backend == "cuda" and not _extension.has_cuda():
        return "extension not built with CUDA"
    missing = [name for name in spec.extension_ops.get(backend, ()) if not _extension.has_op(name)]
    if missing:
        return f"extension lacks {', '.join(missing)} (rebuild: python -m anatokernels.build)"
    return AVAILABLE


def backends() -> dict[str, dict[str, str]]:
    """``{op_name: {backend: "available" | reason}}`` for this machine."""
    _load_all_ops()
    return {name: {b: availability(spec, b) for b in BACKENDS} for name, spec in sorted(_REGISTRY.items())}


def _load_all_ops() -> None:
    import anatokernels  # noqa: F401  (importing the package registers every op)


def _announce() -> None:
    global _announced
    if _announced:
        return
    _announced = True
    ext = _extension.status()
    triton = _triton_status()
    log.info("anatokernels backends: reference=available, triton=%s, C++ extension=%s", triton, ext)


def _warn_no_cpu_kernels(reason: str) -> None:
    global _warned_no_cpu
    if _warned_no_cpu or reason.startswith("disabled"):
        return
    _warned_no_cpu = True
    warnings.warn(f"anatokernels: C++ CPU kernels unavailable ({reason}); ops on CPU tensors use the PyTorch "
                  "reference, which is slower. Build them with `python -m anatokernels.build`.",
                  RuntimeWarning, stacklevel=4)


def resolve(name: str, backend: str, device: torch.device) -> str:
    """The backend to run op ``name`` with for tensors on ``device``.

    Raises ValueError for an unknown backend name, and RuntimeError when an
    explicitly requested backend cannot run here (the message says why).
    """
    spec = _REGISTRY[name]
    _announce()
    if backend == "auto":
        return _auto(spec, device)
    if backend not in BACKENDS:
        raise ValueError(f"{name}: unknown backend {backend!r}; choose 'auto' or one of {BACKENDS}")
    if backend not in spec.backends:
        raise ValueError(f"{name}: backend {backend!r} is not implemented (it has {spec.backends})")
    if backend == "reference":
        return backend
    if backend == "triton":
        if device.type == "cpu" and not interpreter_enabled():
            raise RuntimeError(f"{name}: backend='triton' on CPU tensors needs TRITON_INTERPRET=1 set before "
                               "anatokernels is imported (it runs the Triton interpreter)")
        if device.type not in ("cpu", "cuda"):
            raise RuntimeError(f"{name}: backend='triton' needs CUDA tensors, got {device.type}")
        status = _triton_status()
        if status != AVAILABLE:
            raise RuntimeError(f"{name}: backend='triton' unavailable: {status}")
        return backend
    if backend == "cpu":
        if device.type != "cpu":
            raise RuntimeError(f"{name}: backend='cpu' needs CPU tensors, got {device.type} tensors")
        _extension.load(build=True)
    if backend == "cuda" and device.type != "cuda":
        raise RuntimeError(f"{name}: backend='cuda' needs CUDA tensors, got {device.type} tensors")
    status = availability(spec, backend, device)
    if status != AVAILABLE and not status.startswith("unverified"):
        raise RuntimeError(f"{name}: backend={backend!r} unavailable: {status}")
    return backend


def _auto(spec: OpSpec, device: torch.device) -> str:
    if device.type == "cpu":
        if "cpu" not in spec.backends:
            return "reference"
        status = availability(spec, "cpu")
        if status == AVAILABLE:
            return "cpu"
        _warn_no_cpu_kernels(status)
        return "reference"
    if device.type == "cuda":
        for backend in spec.gpu_preference:
            if (spec.name, backend) in _triton_broken:
                continue
            if availability(spec, backend, device) == AVAILABLE:
                return backend
    return "reference"


def module(spec_name: str, backend: str):
    """The op's backend module (imported lazily: Triton kernels are defined on first use)."""
    return importlib.import_module(f"{_REGISTRY[spec_name].package}.{backend}")


def run_with_fallback(name: str, backend: str, fast, reference):
    """Run ``fast()``; if a Triton kernel fails to compile on a GPU, warn once and run ``reference()``.

    Errors raised by our own validation (ValueError/TypeError) and interpreter
    runs are never swallowed: only GPU compilation failures fall back.
    """
    if backend != "triton" or interpreter_enabled():
        return fast()
    try:
        return fast()
    except (ValueError, TypeError):
        raise
    except Exception as exc:  # Triton compile errors have no common base class across versions
        if (name, backend) not in _triton_broken:
            warnings.warn(f"anatokernels: the Triton kernel for {name} failed on this GPU ({type(exc).__name__}: "
                          f"{str(exc).splitlines()[0] if str(exc) else ''}); using the PyTorch reference from now on",
                          RuntimeWarning, stacklevel=3)
            _triton_broken.add((name, backend))
        return reference()
