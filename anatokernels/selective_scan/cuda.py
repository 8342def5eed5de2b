"""CUDA backend: ``torch.ops.anatokernels.selective_scan3d_{fwd,bwd}_cuda`` (csrc/selective_scan/*.cu).

The kernels checkpoint every 512 steps (128 threads x 4 steps per chunk, ``kScanCudaChunk``).
"""

from __future__ import annotations

from functools import partial

import torch

from anatokernels.selective_scan import _compiled

CHUNK = 512  # kScanCudaChunk in csrc/selective_scan/selective_scan_cuda.h


def chunk_length(length: int, n_state: int, device: torch.device) -> int:
    return CHUNK


forward = partial(_compiled.forward, "cuda")
backward = partial(_compiled.backward, "cuda")
