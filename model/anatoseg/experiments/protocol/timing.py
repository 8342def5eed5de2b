"""Wall and CPU time of the protocol's parts. CPU time (user + system, this process and its children)
is what a budget on a shared machine is extrapolated from: wall time there depends on the other jobs."""

from __future__ import annotations

import contextlib
import resource
import time
from collections.abc import Iterator


def cpu_seconds() -> float:
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


class Clock:
    """Wall and CPU seconds since creation (:meth:`lap`)."""

    def __init__(self):
        self.wall, self.cpu = time.perf_counter(), cpu_seconds()

    def lap(self) -> tuple[float, float]:
        return time.perf_counter() - self.wall, cpu_seconds() - self.cpu


class Times:
    """Seconds by part, accumulated over reruns: ``{"wall": {part: s}, "cpu": {part: s}}`` (JSON-ready)."""

    def __init__(self, stored: dict | None = None):
        self.data = {"wall": dict((stored or {}).get("wall", {})), "cpu": dict((stored or {}).get("cpu", {}))}

    def add(self, part: str, wall: float, cpu: float) -> None:
        self.data["wall"][part] = self.data["wall"].get(part, 0.0) + wall
        self.data["cpu"][part] = self.data["cpu"].get(part, 0.0) + cpu

    @contextlib.contextmanager
    def measure(self, part: str) -> Iterator[None]:
        """Add the block's time to ``part`` (also when it raises)."""
        clock = Clock()
        try:
            yield
        finally:
            self.add(part, *clock.lap())
