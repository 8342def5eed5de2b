"""Validation helpers for the public entry points: clear ValueError/TypeError messages."""

from __future__ import annotations

from collections.abc import Sequence

import torch

FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def shape_str(shape: Sequence[int]) -> str:
    return "(" + ", ".join(str(int(s)) for s in shape) + ")"


def check_tensor(op: str, name: str, t, *, ndim: int | None = None, layout: str = "",
                 dtypes: Sequence[torch.dtype] | None = FLOAT_DTYPES) -> torch.Tensor:
    """Type, rank and dtype of one argument. ``layout`` names the dims, e.g. ``"(B, C, D, H, W)"``."""
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{op}: {name} must be a torch.Tensor, got {type(t).__name__}")
    if ndim is not None and t.dim() != ndim:
        raise ValueError(f"{op}: {name} must be {ndim}-D {layout}, got shape {shape_str(t.shape)}")
    if dtypes is not None and t.dtype not in dtypes:
        names = ", ".join(str(d).replace("torch.", "") for d in dtypes)
        raise TypeError(f"{op}: {name} must have dtype in ({names}), got {str(t.dtype).replace('torch.', '')}")
    return t


def check_same_device(op: str, **tensors: torch.Tensor | None) -> torch.device:
    present = {k: v for k, v in tensors.items() if v is not None}
    devices = {v.device for v in present.values()}
    if len(devices) > 1:
        listing = ", ".join(f"{k} on {v.device}" for k, v in present.items())
        raise ValueError(f"{op}: all tensors must be on one device, got {listing}")
    return next(iter(devices))


def check_same_dtype(op: str, **tensors: torch.Tensor | None) -> torch.dtype:
    present = {k: v for k, v in tensors.items() if v is not None}
    dtypes = {v.dtype for v in present.values()}
    if len(dtypes) > 1:
        listing = ", ".join(f"{k} is {str(v.dtype).replace('torch.', '')}" for k, v in present.items())
        raise TypeError(f"{op}: floating tensors must share one dtype, got {listing}")
    return next(iter(dtypes))


def check_dim(op: str, name: str, actual: int, expected: int, what: str) -> None:
    if actual != expected:
        raise ValueError(f"{op}: {name} has {what} = {actual}, expected {expected}")


def triple(op: str, name: str, value: int | Sequence[int]) -> tuple[int, int, int]:
    """An int or a 3-sequence of positive ints, as a tuple."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = (value, value, value)
    try:
        values = tuple(int(v) for v in value)
    except TypeError:
        raise TypeError(f"{op}: {name} must be an int or 3 ints, got {value!r}") from None
    if len(values) != 3 or any(v <= 0 for v in values):
        raise ValueError(f"{op}: {name} must be an int or 3 positive ints, got {value!r}")
    return values  # type: ignore[return-value]
