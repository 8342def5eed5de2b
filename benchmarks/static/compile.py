"""Compile kernels for a GPU architecture on a machine without a GPU; return their cubin and SASS text.

Triton: the launcher itself is called with ``meta`` tensors (shapes, dtypes and strides, no data) while
its module's ``@triton.jit`` functions are swapped for recorders, so each ``kernel[grid](*args, **kw)``
call is captured with the exact arguments, constexprs and ``num_warps`` the launcher picks; nothing is
copied from the launcher by hand. The captured call then goes through Triton's own binder (the code
``JITFunction.run`` uses: argument types, int specialisation, divisibility attributes) and
``triton.compile`` for ``GPUTarget("cuda", arch, 32)``.

This needs real ``JITFunction`` objects: in a process with ``TRITON_INTERPRET=1`` (``make test``) the
kernels are interpreter functions, so compiling happens in a child process (see ``collect.py``).

CUDA: ``nvcc -ptx`` per ``.cu`` and architecture with the flags ``tests/kernels/test_cuda_sources.py``
compiles them with (``-std=c++17 -O3 -I csrc``), then the toolkit's ``ptxas -v`` for the benchmarked
entries only. Cubins are cached on disk, keyed by the csrc tree's contents, the architecture and the nvcc
version.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[2]
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "anatokernels-static"
NVCC_FLAGS = ("-std=c++17", "-O3")


def triton_bin(tool: str) -> str:
    import triton

    path = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / tool
    if not path.exists():
        raise FileNotFoundError(f"{tool} is not bundled with this triton ({path})")
    return str(path)


def cuobjdump(cubin: bytes, *flags: str) -> str:
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin)
        f.flush()
        return subprocess.run([triton_bin("cuobjdump"), *flags, f.name], capture_output=True, text=True,
                              check=True).stdout


@dataclass
class Launch:
    """One captured ``kernel[grid](*args, **kwargs)`` call."""

    fn: object  # triton.runtime.jit.JITFunction
    grid: tuple
    args: tuple
    kwargs: dict

    @property
    def name(self) -> str:
        return self.fn.__name__


@dataclass
class Compiled:
    cubin: bytes
    sass: str
    res_usage: str
    meta: dict = field(default_factory=dict)  # constexprs, num_warps, grid, ptxas log (CUDA)


class _Recorder:
    def __init__(self, fn, sink: list):
        self.fn, self.sink = fn, sink

    def __getitem__(self, grid):
        return lambda *args, **kwargs: self.sink.append(Launch(self.fn, tuple(grid), args, dict(kwargs)))

    def __getattr__(self, name):  # anything else (e.g. .fn, .arg_names) from the real function
        return getattr(self.fn, name)


@contextlib.contextmanager
def capture(module: ModuleType):
    """Within the block, launches of ``module``'s jit kernels are recorded into the yielded list, not run."""
    from triton.runtime.jit import JITFunction

    if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
        raise RuntimeError("compiling for a GPU target needs TRITON_INTERPRET=0 when the kernels are defined")
    launched: list[Launch] = []
    originals = {name: fn for name, fn in vars(module).items() if isinstance(fn, JITFunction)}
    if not originals:
        raise RuntimeError(f"{module.__name__} defines no triton.jit function (was it imported under "
                           "TRITON_INTERPRET=1?)")
    try:
        for name, fn in originals.items():
            setattr(module, name, _Recorder(fn, launched))
        yield launched
    finally:
        for name, fn in originals.items():
            setattr(module, name, fn)


def compile_triton(launch: Launch, arch: int) -> Compiled:
    """Compile a captured launch for sm_<arch> the way ``JITFunction.run`` would on that GPU."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource, make_backend
    from triton.runtime.jit import create_function_from_signature

    fn = launch.fn
    target = GPUTarget("cuda", arch, 32)
    backend = make_backend(target)
    kwargs = dict(launch.kwargs)
    kwargs.setdefault("debug", False)
    binder = create_function_from_signature(fn.signature, fn.params, backend)
    bound, specialization, options = binder(*launch.args, **kwargs)
    options, signature, constexprs, attrs = fn._pack_args(backend, kwargs, bound, specialization, options)
    kernel = triton.compile(ASTSource(fn, signature, constexprs, attrs), target=target, options=options.__dict__)
    cubin = kernel.asm["cubin"]
    names = [p.name for p in fn.params]
    consts = {names[path[0]]: _plain(value) for path, value in constexprs.items()
              if len(path) == 1 and names[path[0]].isupper()}
    return Compiled(cubin, cuobjdump(cubin, "-sass"), cuobjdump(cubin, "-res-usage"),
                    dict(constexprs=consts, num_warps=options.num_warps, grid=list(launch.grid)))


def _plain(value):
    return value if isinstance(value, (bool, int, float, str)) else str(value)


def nvcc() -> str:
    found = shutil.which("nvcc") or ("/usr/local/cuda/bin/nvcc" if Path("/usr/local/cuda/bin/nvcc").exists() else None)
    if found is None:
        raise FileNotFoundError("nvcc not found")
    return found


def _csrc_digest(csrc: Path, extra: str) -> str:
    h = hashlib.sha256(extra.encode())
    for path in sorted(csrc.rglob("*")):
        if path.is_file() and path.suffix in (".cu", ".h", ".cuh", ".hpp"):
            h.update(str(path.relative_to(csrc)).encode())
            h.update(path.read_bytes())
    return h.hexdigest()[:20]


def nvcc_version() -> str:
    try:
        return subprocess.run([nvcc(), "--version"], capture_output=True, text=True).stdout.strip().splitlines()[-1]
    except (FileNotFoundError, IndexError):
        return "none"


def compile_cuda(source: Path, arch: int, csrc: Path, picks: tuple[str, ...]) -> Compiled:
    """One .cu for sm_<arch>: ``nvcc -ptx``, then ptxas for the entries whose mangled name matches one of
    ``picks`` (regexes) -- the SASS of an entry does not depend on the other entries, and the other
    template instantiations (dtypes, widths) would triple the time. Cached on disk."""
    tool, version = nvcc(), nvcc_version()
    key = _csrc_digest(csrc, f"{version}|{arch}|{NVCC_FLAGS}|{source.relative_to(csrc)}|{picks}")
    stem = CACHE / f"{source.stem}-sm{arch}-{key}"
    cached, log_file = stem.with_suffix(".cubin"), stem.with_suffix(".log")
    if not cached.exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory() as tmp:
            ptx, out = Path(tmp) / "out.ptx", Path(tmp) / "out.cubin"
            _run([tool, *NVCC_FLAGS, f"-arch=sm_{arch}", f"-I{csrc}", "-ptx", str(source), "-o", str(ptx)])
            entries = re.findall(r"\.entry\s+(\S+?)\s*\(", ptx.read_text())
            chosen = [e for e in entries if any(re.search(p, e) for p in picks)]
            if not chosen:
                raise LookupError(f"no entry of {source.name} matches {picks}: {entries}")
            ptxas = str(Path(tool).resolve().parent / "ptxas")
            log = _run([ptxas, f"-arch=sm_{arch}", "-O3", "-v", *(f"--entry={e}" for e in chosen), str(ptx),
                        "-o", str(out)])
            log_file.write_text(log)
            os.replace(out, cached)  # atomic: a concurrent run sees the whole file or none
    cubin = cached.read_bytes()
    log = log_file.read_text() if log_file.exists() else ""
    return Compiled(cubin, cuobjdump(cubin, "-sass"), cuobjdump(cubin, "-res-usage"), dict(ptxas_log=log))


def _run(cmd: list[str]) -> str:
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}\n{result.stderr[-4000:]}")
    return result.stderr


_PTXAS_SPILL = re.compile(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads")


def ptxas_spills(log: str, mangled: str) -> dict | None:
    """ptxas -v's stack frame and spill bytes of one function, from an nvcc log."""
    lines = log.splitlines()
    for i, line in enumerate(lines):
        if f"Function properties for {mangled}" in line and i + 1 < len(lines):
            if m := _PTXAS_SPILL.search(lines[i + 1]):
                frame, stores, loads = map(int, m.groups())
                return dict(stack_frame=frame, spill_stores=stores, spill_loads=loads)
    return None


def cuda_constant(source: Path, name: str) -> int:
    """The value of ``constexpr int <name> = <int>;`` in a CUDA source or header (followed through one alias)."""
    text = source.read_text()
    for header in re.findall(r'#include "([^"]+)"', text):
        path = source.parent.parent / header
        if path.exists():
            text += "\n" + path.read_text()
    m = re.search(rf"constexpr\s+int\s+{name}\s*=\s*([A-Za-z0-9_]+)\s*;", text)
    if m is None:
        raise KeyError(f"constexpr int {name} not found in {source} or its includes")
    value = m.group(1)
    return int(value) if value.isdigit() else cuda_constant_in(text, value)


def cuda_constant_in(text: str, name: str) -> int:
    m = re.search(rf"constexpr\s+int\s+{name}\s*=\s*(\d+)\s*;", text)
    if m is None:
        raise KeyError(f"constexpr int {name} not found")
    return int(m.group(1))
