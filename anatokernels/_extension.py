"""The C++/CUDA extension: JIT-compiled on first explicit use, then cached.

Choice (documented in the README): the extension is compiled with
``torch.utils.cpp_extension.load`` against the torch that is installed, not by
``setup.py``. ``pip install`` therefore needs no compiler, no CUDA toolkit and
no torch at build time, and an ABI mismatch cannot break ``import anatokernels``.
``python -m anatokernels.build`` (run by ``make test``) compiles it ahead of time.

Every source file registers its ops itself with ``TORCH_LIBRARY_FRAGMENT``
(namespace ``anatokernels``), so loading the library makes them available as
``torch.ops.anatokernels.<name>``. Nothing here is imported eagerly: ``auto``
dispatch only uses the extension when it is already built (no surprise compile
on the first op call); an explicit ``backend="cpu"``/``"cuda"`` builds it.

Environment switches:
  ANATO_BUILD_EXT=0        never build or load the extension
  ANATO_BUILD_CUDA=auto|0|1  add the .cu sources (auto: when torch has CUDA and nvcc is found)
  TORCH_CUDA_ARCH_LIST     CUDA architectures, e.g. "8.0;9.0" (torch's own switch)
  MAX_JOBS                 parallel compile jobs (torch's own switch)
  ANATO_EXT_DIR            cache folder (default ~/.cache/anatokernels)
  ANATO_BUILD_VERBOSE=1    show the compiler's output
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
import shutil
import sys
import threading
import warnings
from pathlib import Path

import torch

from anatokernels._availability import AVAILABLE, Availability, unavailable

_NAME = "anatokernels_C"
_DISABLED = "disabled by ANATO_BUILD_EXT=0"
_lock = threading.Lock()
_state: dict[str, object] = {"loaded": None, "error": None}


def csrc_dir() -> Path:
    """Where the C++/CUDA sources are: the repo's csrc/ (editable) or the wheel's _csrc/."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "_csrc", here.parent / "csrc"):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError("anatokernels: C++ sources (csrc/) not found next to the package")


_INCLUDE = re.compile(rb'^\s*#\s*include\s+"([^"]+)"', re.MULTILINE)


def cuda_sources(op_dir: str) -> list[Path]:
    """The CUDA-side sources of one op folder ``csrc/<op_dir>/``: its ``.cu``/``.cuh`` kernels and
    ``*_cuda.cpp`` bindings and every header they include (``#include "..."``, transitively)."""
    root = csrc_dir()
    todo = [p for p in (root / op_dir).iterdir() if p.suffix in (".cu", ".cuh") or p.name.endswith("_cuda.cpp")]
    seen: set[Path] = set()
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        for name in _INCLUDE.findall(path.read_bytes()):
            for candidate in (root / name.decode(), path.parent / name.decode()):
                if candidate.is_file():
                    todo.append(candidate.resolve())
                    break
    return sorted(seen, key=lambda p: p.relative_to(root).as_posix())


@functools.cache
def cuda_source_digest(op_dir: str) -> str:
    """sha256 (first 16 hex digits) of :func:`cuda_sources`: names relative to csrc/ and contents, line
    endings normalised. The library ``load`` finds is the one built from these sources (its cache folder
    is keyed by them), so this names the kernels that run."""
    digest = hashlib.sha256()
    root = csrc_dir()
    for path in cuda_sources(op_dir):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0")
        digest.update(path.read_bytes().replace(b"\r\n", b"\n") + b"\0")
    return digest.hexdigest()[:16]


def _want_cuda() -> bool:
    flag = os.environ.get("ANATO_BUILD_CUDA", "auto").lower()
    if flag in ("0", "false", "no"):
        return False
    has_toolkit = torch.version.cuda is not None and (
        shutil.which("nvcc") is not None or os.environ.get("CUDA_HOME") is not None
    )
    if flag in ("1", "true", "yes") and not has_toolkit:
        raise RuntimeError("ANATO_BUILD_CUDA=1 but torch has no CUDA or nvcc was not found")
    return has_toolkit


def sources(with_cuda: bool) -> list[Path]:
    """All .cpp files; with CUDA also the .cu kernels and the *_cuda.cpp bindings."""
    root = csrc_dir()
    files = sorted(p for p in root.rglob("*.cpp") if with_cuda or not p.name.endswith("_cuda.cpp"))
    if with_cuda:
        files += sorted(root.rglob("*.cu"))
    return files


def _flags(with_cuda: bool) -> dict[str, list[str]]:
    cflags = ["-O3", "-fopenmp", "-DANATO_WITH_CUDA"] if with_cuda else ["-O3", "-fopenmp"]
    flags = {"cflags": cflags, "ldflags": ["-fopenmp"], "cuda_cflags": []}
    if with_cuda:
        flags["cuda_cflags"] = ["-O3", "--use_fast_math", "-DANATO_WITH_CUDA"]
    return flags


def build_dir(with_cuda: bool) -> Path:
    """Cache folder keyed by the sources' content, the flags, torch and Python."""
    digest = hashlib.sha1()
    root = csrc_dir()
    for path in sources(with_cuda) + sorted(root.rglob("*.h")) + sorted(root.rglob("*.cuh")):
        digest.update(str(path.relative_to(root)).encode())
        digest.update(path.read_bytes())
    digest.update(repr(_flags(with_cuda)).encode())
    digest.update(os.environ.get("TORCH_CUDA_ARCH_LIST", "").encode())
    tag = f"py{sys.version_info.major}{sys.version_info.minor}-torch{torch.__version__}"
    base = Path(os.environ.get("ANATO_EXT_DIR", Path.home() / ".cache" / "anatokernels"))
    return base / f"{tag}-{'cuda' if with_cuda else 'cpu'}-{digest.hexdigest()[:12]}"


def _library_path(directory: Path) -> Path:
    return directory / f"{_NAME}.so"


def disabled() -> bool:
    return os.environ.get("ANATO_BUILD_EXT", "1").lower() in ("0", "false", "no")


def load(build: bool = False) -> bool:
    """Load the extension's ops into ``torch.ops.anatokernels``.

    With ``build=False`` only an already-compiled library is loaded. With
    ``build=True`` a missing one is compiled first (about a minute). A failed
    build is reported loudly (a warning with the compiler's tail) but is not
    fatal: the reason is kept for :func:`status`. Returns whether it is loaded.
    Under ``torch.compile``/``torch.export`` tracing it never loads (nor takes the lock): it says
    whether the library is already loaded.
    """
    if _state["loaded"] or torch.compiler.is_compiling():
        return bool(_state["loaded"])
    with _lock:
        if _state["loaded"]:
            return True
        if disabled():
            _state["error"] = _DISABLED
            return False
        try:
            with_cuda = _want_cuda()
            directory = build_dir(with_cuda)
        except (RuntimeError, FileNotFoundError) as exc:
            _state["error"] = str(exc)
            return False
        library = _library_path(directory)
        if library.exists():
            try:
                torch.ops.load_library(str(library))
            except OSError as exc:  # e.g. built for another torch, or damaged
                _state["error"] = f"extension library unusable ({exc}); rebuild: python -m anatokernels.build"
                return False
            _state.update(loaded=str(library), error=None, cuda=with_cuda)
            return True
        if not build:
            return False
        return _compile(directory, with_cuda)


def _put_ninja_on_path() -> None:
    """torch runs ``ninja`` from PATH; the one pip installs with anatokernels (the ``ninja`` package) lies in
    the environment's scripts folder, which is on PATH only while that environment is activated."""
    try:
        import ninja
    except ImportError:
        return
    path = os.environ.get("PATH", "")
    if ninja.BIN_DIR and ninja.BIN_DIR not in path.split(os.pathsep):
        os.environ["PATH"] = os.pathsep.join(p for p in (ninja.BIN_DIR, path) if p)


def _compile(directory: Path, with_cuda: bool) -> bool:
    """Build in a private folder, then move the library into ``directory`` atomically, so that a
    process loading it while another one builds never sees a half-written file."""
    from torch.utils import cpp_extension

    _put_ninja_on_path()
    scratch = directory.parent / f"{directory.name}.build-{os.getpid()}"
    scratch.mkdir(parents=True, exist_ok=True)
    flags = _flags(with_cuda)
    verbose = os.environ.get("ANATO_BUILD_VERBOSE", "0") == "1"
    print(f"anatokernels: compiling the {'CPU+CUDA' if with_cuda else 'CPU'} extension into {directory} ...",
          file=sys.stderr, flush=True)
    try:
        cpp_extension.load(
            name=_NAME,
            sources=[str(p) for p in sources(with_cuda)],
            extra_cflags=flags["cflags"],
            extra_cuda_cflags=flags["cuda_cflags"],
            extra_ldflags=flags["ldflags"],
            extra_include_paths=[str(csrc_dir())],
            build_directory=str(scratch),
            with_cuda=with_cuda,
            is_python_module=False,
            verbose=verbose,
        )
    except Exception as exc:  # a failed build must be loud but not fatal
        message = str(exc).strip().splitlines()
        tail = "\n".join(message[-15:])
        _state["error"] = f"extension build failed: {message[-1] if message else exc!r}"
        warnings.warn(f"anatokernels: building the C++ extension failed; the PyTorch reference is used "
                      f"instead.\n{tail}", RuntimeWarning, stacklevel=3)
        shutil.rmtree(scratch, ignore_errors=True)
        return False
    directory.mkdir(parents=True, exist_ok=True)
    os.replace(_library_path(scratch), _library_path(directory))
    shutil.rmtree(scratch, ignore_errors=True)
    _state.update(loaded=str(_library_path(directory)), error=None, cuda=with_cuda)
    return True


def status() -> Availability:
    """Available if loaded (or loadable without compiling); else disabled or unavailable, with the reason."""
    if load(build=False):
        return AVAILABLE
    if disabled():
        return Availability("disabled", _DISABLED)
    return unavailable(str(_state["error"] or "extension not built (python -m anatokernels.build)"))


def has_cuda() -> bool:
    return bool(load(build=False) and _state.get("cuda"))


def has_op(name: str) -> bool:
    """Whether ``torch.ops.anatokernels.<name>`` is registered by the loaded library."""
    if not load(build=False):
        return False
    try:
        getattr(torch.ops.anatokernels, name)
    except (AttributeError, RuntimeError):
        return False
    return True


def op(name: str):
    """The compiled op ``torch.ops.anatokernels.<name>``, building the extension if needed."""
    if not load(build=True):
        raise RuntimeError(f"anatokernels: the C++ extension is unavailable ({status()})")
    try:
        return getattr(torch.ops.anatokernels, name)
    except (AttributeError, RuntimeError) as exc:
        raise RuntimeError(f"anatokernels: the extension has no op {name!r}") from exc
