"""Backend registry, selection and the one dispatch call shared by every public op.

Backends: ``reference`` (the plain PyTorch definition), ``chunked`` (an
optimised PyTorch evaluation, where an op has one), ``triton`` (Triton kernels;
on CPU tensors only under ``TRITON_INTERPRET=1``), ``cpu`` (C++/OpenMP
extension), ``cuda`` (CUDA extension; ``cuda_segment``: the segment-parallel scan's CUDA kernels, by name only)
and ``causal_conv1d`` (the external ``causal-conv1d`` package, for ``order_conv1d`` in native raster order only;
imported lazily, never picked by ``auto``).

``auto`` on CPU tensors picks ``cpu`` when the extension is already built,
else the op's PyTorch fallback (``OpSpec.fallback``: ``reference``, or
``chunked`` where the op has it). On CUDA tensors it picks the first
*available* backend of the op's GPU preference list, else the fallback.
Triton kernels count as verified by their interpreter tests; a CUDA kernel only
on the GPU architectures where it has passed its tests on a real GPU
(``OpSpec.cuda_verified_on``): elsewhere it is ``unverified`` and never picked
automatically (``backend="cuda"`` still runs it). See
:class:`anatokernels.Availability`.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
import types
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from anatokernels import _extension
from anatokernels._availability import AVAILABLE, Availability, unavailable

BACKENDS = ("reference", "chunked", "triton", "cuda", "cpu", "triton_segment", "cuda_segment", "causal_conv1d")
TRITON_BACKENDS = ("triton", "triton_segment")  # Triton kernels (triton_segment: the segment-parallel scan)
# csrc CUDA kernels: backend cuda<variant> of the op in anatokernels/<op>/ is built from csrc/<op><variant>/
# (cuda_segment of selective_scan: csrc/selective_scan_segment/), verified per folder (CUDA_TESTED_SOURCES).
CUDA_BACKENDS = ("cuda", "cuda_segment")
PYTORCH_BACKENDS = ("reference", "chunked")  # plain PyTorch: run on any device, always available
# Third-party packages run as a backend: backend name -> (import name, pip name). By name only, never ``auto``.
EXTERNAL_BACKENDS = {"causal_conv1d": ("causal_conv1d", "causal-conv1d")}
log = logging.getLogger("anatokernels")


# Where the csrc CUDA kernels passed ``pytest -m gpu tests`` (all 102 GPU cases): an H100 80GB
# (sm_90), torch 2.11.0+cu130, triton 3.6.0, 2026-11-24 (benchmarks/results/gpu-h100-2026-11-24.md).
CUDA_TESTED_ON: tuple[tuple[int, int], ...] = ((9, 0),)
# ... and the kernels that passed there: per csrc op folder, :func:`anatokernels._extension.cuda_source_digest`
# of its CUDA sources (the .cu files, the *_cuda.cpp bindings and every header they include) at that run
# (csrc last changed in 575b4f7, before the run). A folder whose sources hash differently now is
# ``unverified`` on every GPU until the suite passes again and its new digest is recorded here
# (csrc/masked_patch/ changed in bbe431f, 64-bit-division-free kernels: unverified until then).
CUDA_TESTED_SOURCES: dict[str, str] = {
    "masked_patch": "9da8bc28e0dd8306",
    "order_conv": "fa2b7418c6c40780",
    "selective_scan": "8e28d0d392897417",
}


@dataclass(frozen=True)
class OpSpec:
    """What one public op implements.

    name: the public function name, e.g. ``"masked_patch_gather"``.
    package: the op's folder, e.g. ``"anatokernels.masked_patch"``; its
        ``chunked``/``triton``/``cpu``/``cuda`` modules hold the backends.
    backends: the backends implemented, in ``BACKENDS`` names.
    extension_ops: per compiled backend, the ``torch.ops.anatokernels`` names it needs.
    unverified: per backend, why it is not yet trusted (e.g. never run on a GPU).
    cuda_verified_on: compute capabilities (e.g. ``(9, 0)``) on which the ``CUDA_BACKENDS``
        passed the GPU test suite; on any other GPU they are unverified.
    gpu_preference: order in which ``auto`` tries backends on CUDA tensors.
    fallback: the PyTorch backend ``auto`` runs where no fast backend is
        available, and the one a failing Triton kernel falls back to.
    The defaults fit an op with csrc CUDA kernels covered by the GPU suite.
    """

    name: str
    package: str
    backends: tuple[str, ...]
    extension_ops: dict[str, tuple[str, ...]] = field(default_factory=dict)
    unverified: dict[str, str] = field(default_factory=dict)
    cuda_verified_on: tuple[tuple[int, int], ...] = CUDA_TESTED_ON
    gpu_preference: tuple[str, ...] = ("cuda", "triton")  # CUDA measured faster on the H100
    fallback: str = "reference"

    def __post_init__(self) -> None:
        unknown = [b for b in self.backends if b not in BACKENDS]
        if unknown or self.fallback not in PYTORCH_BACKENDS or self.fallback not in self.backends:
            raise ValueError(f"OpSpec {self.name}: backends {self.backends} must be among {BACKENDS} and include "
                             f"the fallback {self.fallback!r}, one of {PYTORCH_BACKENDS}")


_REGISTRY: dict[str, OpSpec] = {}
_announced = False
_warned_no_cpu = False
_triton_broken: set[tuple[str, str]] = set()


def register(spec: OpSpec) -> OpSpec:
    _REGISTRY[spec.name] = spec
    return spec


def interpreter_enabled() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def _triton_availability() -> Availability:
    try:
        importlib.import_module("triton")
    except ImportError:
        return unavailable("triton not installed")
    if torch.cuda.is_available() or interpreter_enabled():
        return AVAILABLE
    return unavailable("no CUDA device (TRITON_INTERPRET=1 runs the kernels on the CPU)")


def availability(spec: OpSpec, backend: str, device: torch.device | None = None) -> Availability:
    """Whether ``backend`` can run ``spec`` on this machine, and if not, why
    (for ``cuda``: on ``device``, default the current CUDA device)."""
    if backend not in spec.backends:
        return Availability("unimplemented", "not implemented for this op")
    if backend in PYTORCH_BACKENDS:
        return AVAILABLE
    if backend in TRITON_BACKENDS:
        status = _triton_availability()
    elif backend in EXTERNAL_BACKENDS:
        return _external_availability(backend)
    elif backend == "cpu":
        status = _extension_availability(spec, "cpu")
    elif not torch.cuda.is_available():
        return unavailable("no CUDA device")
    else:
        status = _extension_availability(spec, backend)
    if not status.is_available:
        return status
    if backend in spec.unverified:
        return Availability("unverified", spec.unverified[backend])
    if backend in CUDA_BACKENDS:
        return _cuda_verification(spec, backend, device)
    return status


def _external_availability(backend: str) -> Availability:
    """A third-party package backend: available where its package imports (a failed import says why)."""
    name, pip_name = EXTERNAL_BACKENDS[backend]
    try:
        importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name == name:
            return unavailable(f"{pip_name} not installed")
        return unavailable(f"{pip_name} installed but fails to import ({exc})")
    except Exception as exc:  # a broken binary raises ImportError, OSError or undefined-symbol errors
        return unavailable(f"{pip_name} installed but fails to import ({type(exc).__name__}: {exc})")
    return AVAILABLE


def cuda_folder(spec: OpSpec, backend: str) -> str:
    """The csrc folder of a ``CUDA_BACKENDS`` backend of ``spec``: ``selective_scan`` for ``cuda``,
    ``selective_scan_segment`` for ``cuda_segment``."""
    return spec.package.rsplit(".", 1)[-1] + backend.removeprefix("cuda")


def _cuda_verification(spec: OpSpec, backend: str, device: torch.device | None) -> Availability:
    """Available only if the backend's CUDA sources are the ones that passed the GPU suite
    (``CUDA_TESTED_SOURCES``) and this GPU's architecture is one it passed on."""
    folder = cuda_folder(spec, backend)
    verified = CUDA_TESTED_SOURCES.get(folder)
    try:
        current = _extension.cuda_source_digest(folder)
    except (FileNotFoundError, OSError) as exc:
        return Availability("unverified", f"cannot read its CUDA sources csrc/{folder}/ to check them ({exc})")
    if verified is None:
        return Availability("unverified", f"its CUDA kernel sources csrc/{folder}/ never passed the GPU tests "
                                          f"(digest {current}); run `pytest -m gpu` on a GPU and record the digest "
                                          f"in CUDA_TESTED_SOURCES")
    if current != verified:
        return Availability("unverified", f"its CUDA kernel sources csrc/{folder}/ changed since they passed the "
                                          f"GPU tests (digest {current}, verified {verified}); rerun "
                                          f"`pytest -m gpu` and record the digest in CUDA_TESTED_SOURCES")
    arch = torch.cuda.get_device_capability(device)
    if arch not in spec.cuda_verified_on:
        where = ", ".join(f"sm_{a}{b}" for a, b in spec.cuda_verified_on) or "no GPU"
        return Availability("unverified", f"passed its GPU tests on {where} only, "
                                          f"not yet on this sm_{arch[0]}{arch[1]}")
    return AVAILABLE


def _extension_availability(spec: OpSpec, backend: str) -> Availability:
    status = _extension.status()
    if not status.is_available:
        return status
    if backend in CUDA_BACKENDS and not _extension.has_cuda():
        return unavailable("extension not built with CUDA")
    missing = [name for name in spec.extension_ops.get(backend, ()) if not _extension.has_op(name)]
    if missing:
        return unavailable(f"extension lacks {', '.join(missing)} (rebuild: python -m anatokernels.build)")
    return AVAILABLE


def backends(build: bool = False) -> dict[str, dict[str, Availability]]:
    """``{op_name: {backend: Availability}}`` for this machine (``str()`` of a value is
    ``"available"`` or the reason). ``build=True`` compiles the C++ extension first if it is missing."""
    if build:
        _extension.load(build=True)
    _load_all_ops()
    return {name: {b: availability(spec, b) for b in BACKENDS} for name, spec in sorted(_REGISTRY.items())}


def _load_all_ops() -> None:
    import anatokernels  # noqa: F401  (importing the package registers every op)


def _announce() -> None:
    global _announced
    if _announced:
        return
    _announced = True
    log.info("anatokernels backends: reference=available, triton=%s, C++ extension=%s", _triton_availability(),
             _extension.status())


def _warn_no_cpu_kernels(status: Availability) -> None:
    global _warned_no_cpu
    if _warned_no_cpu or status.state == "disabled":
        return
    _warned_no_cpu = True
    warnings.warn(f"anatokernels: C++ CPU kernels unavailable ({status}); ops on CPU tensors use the PyTorch "
                  "reference, which is slower. Build them with `python -m anatokernels.build`.",
                  RuntimeWarning, stacklevel=5)


def _constant_when_traced(fn):
    """Mark ``fn`` as ``torch.compiler.assume_constant_result`` does (that function only sets this
    attribute, but importing it imports torch._dynamo, a second at package import): Dynamo then calls
    ``fn`` with its constant arguments at trace time and puts the result in the graph as a constant,
    instead of tracing its body (availability checks, the extension's load lock, imports, warnings)."""
    fn._dynamo_marked_constant = True
    return fn


@_constant_when_traced
def resolve(name: str, backend: str, device: torch.device) -> str:
    """The backend to run op ``name`` with for tensors on ``device``; its module is imported.

    Raises ValueError for an unknown backend name, and RuntimeError when an
    explicitly requested backend cannot run here (the message says why).
    Under ``torch.compile`` it runs once at trace time, outside the graph: the
    extension must be loaded by then (a first eager call, building a module of
    :mod:`anatokernels.nn`, or :func:`prepare`), since tracing never loads it.
    """
    spec = _REGISTRY[name]
    chosen = _resolve(spec, backend, device)
    for used in {chosen, spec.fallback} - {"reference"}:
        module(name, used)
    return chosen


def _resolve(spec: OpSpec, backend: str, device: torch.device) -> str:
    name = spec.name
    _announce()
    if backend == "auto":
        return _auto(spec, device)
    if backend not in BACKENDS:
        raise ValueError(f"{name}: unknown backend {backend!r}; choose 'auto' or one of {BACKENDS}")
    if backend not in spec.backends:
        raise ValueError(f"{name}: backend {backend!r} is not implemented (it has {spec.backends})")
    if backend in PYTORCH_BACKENDS:
        return backend
    if backend in EXTERNAL_BACKENDS:  # the package checks its own devices (causal-conv1d: CUDA only)
        status = availability(spec, backend, device)
    elif backend in TRITON_BACKENDS:
        if device.type == "cpu" and not interpreter_enabled():
            raise RuntimeError(f"{name}: backend='triton' on CPU tensors needs TRITON_INTERPRET=1 set before "
                               "anatokernels is imported (it runs the Triton interpreter)")
        if device.type not in ("cpu", "cuda"):
            raise RuntimeError(f"{name}: backend='triton' needs CUDA tensors, got {device.type}")
        status = _triton_availability()
    else:
        needed = "cuda" if backend in CUDA_BACKENDS else backend
        if device.type != needed:
            raise RuntimeError(f"{name}: backend={backend!r} needs {needed.upper()} tensors, got {device.type} "
                               "tensors")
        if backend == "cpu":
            _extension.load(build=True)
        status = availability(spec, backend, device)
    if not status.runs_by_name:
        raise RuntimeError(f"{name}: backend={backend!r} unavailable: {status}")
    return backend


def _auto(spec: OpSpec, device: torch.device) -> str:
    if device.type == "cpu" and "cpu" in spec.backends:
        status = availability(spec, "cpu")
        if status.is_available:
            return "cpu"
        _warn_no_cpu_kernels(status)
    if device.type == "cuda":
        for backend in spec.gpu_preference:
            if (spec.name, backend) not in _triton_broken and availability(spec, backend, device).is_available:
                return backend
    return spec.fallback


def module(spec_name: str, backend: str):
    """The op's backend module (imported lazily: Triton kernels are defined on first use).

    Read as an attribute of the op's package, which Dynamo reads live: :func:`resolve` (run for real at
    trace time) imports the module, so a traced call finds it without an import (Dynamo cannot trace
    ``import_module``, and its view of ``sys.modules`` is fixed when the trace first reads it)."""
    package = sys.modules[_REGISTRY[spec_name].package]  # imported with the package, before any trace
    found = getattr(package, backend, None)
    if not isinstance(found, types.ModuleType):
        found = importlib.import_module(f"{package.__name__}.{backend}")
    return found


def prepare(owner: str, backend: str, ops: tuple[str, ...]) -> dict[str, str]:
    """For a module ``owner`` built with ``backend``: the backend each of its ``ops`` runs with.

    A backend name one of the ops does not implement (e.g. ``"cpu"`` for ``hyper_cross_attention``,
    which has no C++ kernel) means ``"auto"`` for that op: on CPU tensors its PyTorch fallback. An
    unknown name is a ValueError here, at construction. Loads the C++ extension if it is built (builds
    it for ``"cpu"`` or a CUDA backend), so that ``auto`` sees it and ``torch.compile`` never has to load it.
    """
    if backend != "auto" and backend not in BACKENDS:
        raise ValueError(f"{owner}: unknown backend {backend!r}; choose 'auto' or one of {BACKENDS}")
    _extension.load(build=backend == "cpu" or backend in CUDA_BACKENDS)
    return {op: backend if backend == "auto" or backend in _REGISTRY[op].backends else "auto" for op in ops}


def dispatch(name: str, backend: str, device: torch.device, *, fast: Callable[[Any], Any],
             reference: Callable[[], Any]):
    """Run op ``name`` on tensors on ``device`` with ``backend`` (a name, or ``"auto"``).

    ``reference()`` evaluates the plain definition; ``fast(impl)`` evaluates the
    op through the backend module ``impl`` (``<package>.chunked``/``triton``/
    ``cpu``/``cuda``). The backend is resolved (:func:`resolve`); ``reference``
    runs ``reference()``, any other backend ``fast(module)``. A Triton kernel
    that fails to compile on a GPU falls back, with a warning, to the op's
    ``fallback`` backend (see :func:`run_with_fallback`).
    """
    chosen = resolve(name, backend, device)
    if chosen == "reference":
        return reference()
    fallback = _REGISTRY[name].fallback
    run_fallback = reference if fallback == "reference" else lambda: fast(module(name, fallback))
    return run_with_fallback(name, chosen, lambda: fast(module(name, chosen)), run_fallback)


def run_with_fallback(name: str, backend: str, fast: Callable[[], Any], fallback: Callable[[], Any]):
    """Run ``fast()``; if a Triton kernel fails to compile on a GPU, warn once and run ``fallback()``.

    Errors raised by our own validation (ValueError/TypeError) and interpreter
    runs are never swallowed: only GPU compilation failures fall back.
    """
    if backend not in TRITON_BACKENDS or interpreter_enabled():
        return fast()
    try:
        return fast()
    except (ValueError, TypeError):
        raise
    except Exception as exc:  # Triton compile errors have no common base class across versions
        if (name, backend) not in _triton_broken:
            first_line = str(exc).splitlines()[0] if str(exc) else ""
            warnings.warn(f"anatokernels: the Triton kernel for {name} failed on this GPU ({type(exc).__name__}: "
                          f"{first_line}); using the PyTorch {_REGISTRY[name].fallback} backend from now on",
                          RuntimeWarning, stacklevel=3)
            _triton_broken.add((name, backend))
        return fallback()
