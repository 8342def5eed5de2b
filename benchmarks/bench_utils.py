"""Shared benchmark helpers: timing through pytest-benchmark, peak memory, bandwidth.

Import from benchmark files as ``from bench_utils import ...`` (pytest puts
this folder on sys.path).

- :func:`bench` times ``fn`` with ``benchmark.pedantic`` (CUDA-synchronised on GPU).
- :func:`peak_memory_mb` measures the extra peak memory of one call: CUDA
  allocator peak on GPU; on CPU the process's peak RSS (VmHWM), reset through
  /proc/self/clear_refs, with glibc's mmap threshold fixed so freed buffers go
  back to the OS and cannot hide an allocation.
- :func:`record` stores bytes, bandwidth and memory in ``benchmark.extra_info``.
"""

from __future__ import annotations

import ctypes
import gc
from collections.abc import Callable

import torch

_M_MMAP_THRESHOLD = -3
try:
    ctypes.CDLL("libc.so.6").mallopt(_M_MMAP_THRESHOLD, 1 << 16)
except OSError:  # not glibc: CPU peak memory is then approximate
    pass


def sync(device: str | torch.device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def bench(benchmark, fn: Callable[[], object], device: str | torch.device, rounds: int = 5,
          warmup: int = 1) -> None:
    def timed():
        fn()
        sync(device)

    benchmark.pedantic(timed, rounds=rounds, iterations=1, warmup_rounds=warmup)


def _proc_status_mb(key: str) -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"{key} not in /proc/self/status")


def peak_memory_mb(fn: Callable[[], object], device: str | torch.device) -> float:
    """Peak memory above the starting level during one call of ``fn``, in MiB."""
    gc.collect()
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        fn()
        torch.cuda.synchronize()
        return (torch.cuda.max_memory_allocated() - base) / 2**20
    with open("/proc/self/clear_refs", "w") as refs:
        refs.write("5")
    base = _proc_status_mb("VmRSS")
    fn()
    return _proc_status_mb("VmHWM") - base


def median_s(benchmark) -> float:
    return float(benchmark.stats.stats.median)


def record(benchmark, *, bytes_moved: int | None = None, peak_mb: float | None = None, **extra) -> None:
    """Put the figures needed to judge a run into ``benchmark.extra_info``."""
    info = benchmark.extra_info
    if bytes_moved is not None:
        info["bytes"] = int(bytes_moved)
        info["bandwidth_gbs"] = round(bytes_moved / median_s(benchmark) / 1e9, 3)
    if peak_mb is not None:
        info["peak_mem_mb"] = round(peak_mb, 2)
    for key, value in extra.items():
        info[key] = value
    if torch.cuda.is_available():
        info.setdefault("device", torch.cuda.get_device_name())
