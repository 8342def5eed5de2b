"""Output allocation shared by every backend.

All kernels write into buffers made here, so that tests can poison them with
NaN (``poison_outputs``): an element a kernel forgets to write then shows up
as NaN instead of as stale memory that happens to look right.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import contextmanager

import torch

_poison = False


def empty(shape: Sequence[int], *, dtype: torch.dtype, device: torch.device | str) -> torch.Tensor:
    out = torch.empty(tuple(shape), dtype=dtype, device=device)
    if _poison and out.is_floating_point():
        out.fill_(float("nan"))
    return out


@contextmanager
def poison_outputs(enabled: bool = True):
    """Within the block, every buffer from :func:`empty` starts filled with NaN."""
    global _poison
    previous, _poison = _poison, enabled
    try:
        yield
    finally:
        _poison = previous
