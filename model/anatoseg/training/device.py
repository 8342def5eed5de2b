"""The device a run uses and its mixed-precision policy: one place for every stage.

- :func:`choose_device`: ``None`` / ``"auto"`` means CUDA when available, else the CPU;
- :func:`amp_active` / :func:`autocast`: bf16 autocast on CUDA when the config asks for it,
  nothing on the CPU (where bf16 convolutions are slow and gain no memory worth having).
"""

from __future__ import annotations

import contextlib

import torch

from anatoseg.errors import AnatoError

AMP_DTYPE = torch.bfloat16


def choose_device(name: str | torch.device | None = None) -> torch.device:
    """The torch device of ``name``: ``None`` or ``"auto"`` picks CUDA when available, else the CPU.

    Raises AnatoError when CUDA is asked for and none is available.
    """
    if name is None or name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise AnatoError(f"--device {name}: no CUDA device is available")
    return device


def amp_active(device: torch.device, enabled: bool) -> bool:
    """Whether mixed precision runs: asked for (``enabled``) and on a CUDA device."""
    return bool(enabled) and torch.device(device).type == "cuda"


def autocast(device: torch.device, enabled: bool) -> contextlib.AbstractContextManager:
    """bf16 autocast when :func:`amp_active`, else a context that does nothing."""
    if amp_active(device, enabled):
        return torch.autocast("cuda", dtype=AMP_DTYPE)
    return contextlib.nullcontext()
