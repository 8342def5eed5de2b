"""Compile every kernel of ``contracts.KERNELS`` for each architecture and measure its static figures.

``collect(archs)`` runs one job per (compile unit, arch) in a process pool and returns one record per
(kernel, arch). ``collect_in_subprocess`` runs the same in a child process with ``TRITON_INTERPRET=0``,
for callers (the test session) whose Triton kernels were defined under the interpreter.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import traceback
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from benchmarks.static import compile as cc
from benchmarks.static import contracts, sass


def _record(kernel: contracts.Kernel, arch: int, compiled: cc.Compiled, fn_name: str, meta: dict) -> dict:
    functions = sass.parse_sass(compiled.sass)
    usage = sass.parse_res_usage(compiled.res_usage)
    fig = sass.figures(functions[fn_name], kernel.region, kernel.inner_trips(meta))
    per_warp = kernel.per_warp(meta, fig)
    fig.update(usage.get(fn_name, {}))
    fig.update(kernel=kernel.name, arch=arch, ok=True, function=fn_name, unit=kernel.unit,
               elements_per_warp=per_warp, meta=meta,
               instr_per_elem=round(fig["region_instructions_weighted"] / per_warp, 4),
               ex2_per_elem=round(fig["mufu_ex2_in_region"] / per_warp, 4))
    return fig


def _triton_group(group: str, arch: int) -> list[dict]:
    module_name, launch = contracts.LAUNCHERS[group]
    steps = launch(importlib.import_module(module_name))
    out = []
    for kernel in (k for k in contracts.KERNELS if k.group == group):
        try:
            compiled = cc.compile_triton(steps[kernel.pick], arch)
            out.append(_record(kernel, arch, compiled, steps[kernel.pick].name, compiled.meta))
        except Exception as exc:  # noqa: BLE001 - a failure is a figure ("compiles": no)
            out.append(_failure(kernel, arch, exc))
    return out


def _cuda_group(group: str, arch: int) -> list[dict]:
    csrc = cc.ROOT / "csrc"
    source = csrc / group.split(":", 1)[1]
    kernels = [k for k in contracts.KERNELS if k.group == group]
    compiled = cc.compile_cuda(source, arch, csrc, tuple(k.pick for k in kernels))
    names = list(sass.parse_sass(compiled.sass))
    out = []
    for kernel in kernels:
        try:
            matches = [n for n in names if re.search(kernel.pick, n)]
            if len(matches) != 1:
                raise LookupError(f"{len(matches)} kernels in {source.name} match {kernel.pick!r}: {matches}")
            meta = {c: cc.cuda_constant(source, c) for c in kernel.constants}
            meta["ptxas"] = cc.ptxas_spills(compiled.meta["ptxas_log"], matches[0])
            out.append(_record(kernel, arch, compiled, matches[0], meta))
        except Exception as exc:  # noqa: BLE001
            out.append(_failure(kernel, arch, exc))
    return out


def _failure(kernel, arch, exc) -> dict:
    return dict(kernel=kernel.name, arch=arch, ok=False,
                error=f"{type(exc).__name__}: {exc}\n{''.join(traceback.format_exception(exc)[-6:])}")


def _digest() -> str:
    """Everything the figures depend on: kernel sources, this package, the tool versions."""
    import triton

    h = hashlib.sha256(f"{triton.__version__}|{cc.nvcc_version()}|{sys.version}".encode())
    for folder, suffixes in ((cc.ROOT / "anatokernels", (".py",)), (cc.ROOT / "csrc", (".cu", ".h", ".cuh")),
                             (Path(__file__).parent, (".py",))):
        for path in sorted(folder.rglob("*")):
            if path.suffix in suffixes and "__pycache__" not in path.parts:
                h.update(str(path.relative_to(cc.ROOT)).encode())
                h.update(path.read_bytes())
    return h.hexdigest()[:20]


def run_group(group: str, arch: int, digest: str | None = None) -> list[dict]:
    """Records of one compile unit for one arch; cached on disk under the sources' digest."""
    cached = cc.CACHE / f"figures-{group.replace(':', '-').replace('/', '-')}-sm{arch}-{digest}.json"
    if digest and cached.exists():
        return json.loads(cached.read_text())
    records = _run_group(group, arch)
    if digest and all(r["ok"] for r in records):
        cc.CACHE.mkdir(parents=True, exist_ok=True)
        tmp = cached.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(records))
        os.replace(tmp, cached)
    return records


def _run_group(group: str, arch: int) -> list[dict]:
    start = time.perf_counter()
    try:
        if group == "probe":
            from benchmarks.static import probe

            return probe.run(arch)
        records = (_triton_group if group.startswith("triton:") else _cuda_group)(group, arch)
    except Exception as exc:  # noqa: BLE001 - the whole unit failed (launcher capture, nvcc)
        records = [_failure(k, arch, exc) for k in contracts.KERNELS if k.group == group]
    for r in records:
        r["group_seconds"] = round(time.perf_counter() - start, 2)
    return records


def collect(archs=contracts.ARCHS, workers: int | None = None, cache: bool = True) -> list[dict]:
    """Records for every (kernel, arch), kernels in ``contracts.KERNELS`` order, then the probes (newest
    arch only)."""
    os.environ["TRITON_INTERPRET"] = "0"
    digest = _digest() if cache else None
    groups = list(dict.fromkeys(k.group for k in contracts.KERNELS))
    # slowest first: the scan units
    jobs = sorted(((g, a, digest) for g in groups for a in archs), key=lambda j: ("selective_scan" not in j[0], j[:2]))
    jobs.append(("probe", max(archs), digest))
    workers = workers or min(len(jobs), os.cpu_count() or 1)
    if workers == 1:
        results = [run_group(*job) for job in jobs]
    else:
        with ProcessPoolExecutor(workers) as pool:
            results = list(pool.map(run_group, *zip(*jobs)))
    order = {k.name: i for i, k in enumerate(contracts.KERNELS)}
    return sorted((r for rs in results for r in rs), key=lambda r: (order.get(r["kernel"], len(order)), r["arch"]))


def collect_in_subprocess(archs=contracts.ARCHS, timeout: float = 900, cache: bool = True) -> list[dict]:
    """:func:`collect` in a child process with TRITON_INTERPRET=0 (works from an interpreter session)."""
    env = dict(os.environ, TRITON_INTERPRET="0")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(cc.ROOT), env.get("PYTHONPATH")]))
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "figures.json"
        cmd = [sys.executable, "-m", "benchmarks.static", "--figures-only", str(out),
               "--arch", *map(str, archs)]
        if not cache:
            cmd.append("--no-cache")
        result = subprocess.run(cmd, cwd=cc.ROOT, env=env, capture_output=True, text=True, timeout=timeout)
        if result.returncode != 0 or not out.exists():
            raise RuntimeError(f"{' '.join(cmd)} failed ({result.returncode}):\n{result.stderr[-4000:]}")
        return json.loads(out.read_text())
