"""C++/OpenMP backend: ``torch.ops.anatokernels.selective_scan3d_{fwd,bwd}_cpu`` (csrc/selective_scan/).

Checkpoints every CHUNK steps: (Bt, K, Dm, L/CHUNK, N) floats are kept for the backward.
"""

from __future__ import annotations

from functools import partial

import torch

from anatokernels.selective_scan import _compiled

CHUNK = 256


def chunk_length(length: int, n_state: int, device: torch.device) -> int:
    return CHUNK


forward = partial(_compiled.forward, "cpu")
backward = partial(_compiled.backward, "cpu")
