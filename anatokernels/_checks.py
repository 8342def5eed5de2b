"""Validation helpers for the public entry points (clear ValueError/TypeError messages), and the
accumulation dtype every backend computes in."""

from __future__ import annotations

from collections.abc import Sequence

import torch

FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def accumulation_dtype(*tensors: torch.Tensor | None) -> torch.dtype:
    """float64 if any given tensor is float64, else float32: the dtype sums and states are kept in."""
    return torch.float64 if any(t is not None and t.dtype == torch.float64 for t in tensors) else torch.float32


def shape_str(shape: Sequence[int]) -> str:
    return "(" + ", ".join(str(int(s)) for s in shape) + ")"


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).replace("torch.", "")


def check_tensor(op: str, name: str, t, *, ndim: int | None = None, layout: str = "",
                 dtypes: Sequence[torch.dtype] | None = FLOAT_DTYPES) -> torch.Tensor:
    """Type, rank and dtype of one argument. ``layout`` names the dims, e.g. ``"(B, C, D, H, W)"``."""
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{op}: {name} must be a torch.Tensor, got {type(t).__name__}")
    if ndim is not None and t.dim() != ndim:
        raise ValueError(f"{op}: {name} must be {ndim}-D {layout}, got shape {shape_str(t.shape)}")
    if dtypes is not None and t.dtype not in dtypes:
        names = ", ".join(_dtype_name(d) for d in dtypes)
        raise TypeError(f"{op}: {name} must have dtype in ({names}), got {_dtype_name(t.dtype)}")
    return t


def check_shape(op: str, name: str, t, shape: tuple[int, ...], layout: str, optional: bool = False) -> None:
    """A float tensor of exactly ``shape`` (``layout`` names its dims, e.g. ``"(B, D, L)"``); None passes
    when ``optional``."""
    if t is None and optional:
        return
    check_tensor(op, name, t, ndim=len(shape), layout=layout)
    if tuple(t.shape) != shape:
        raise ValueError(f"{op}: {name} must have shape {layout} = {shape_str(shape)}, got {shape_str(t.shape)}")


def check_same_device(op: str, **tensors: torch.Tensor | None) -> torch.device:
    return _shared(op, "device", tensors, ValueError, "all tensors must be on one device",
                   lambda k, v: f"{k} on {v.device}")


def check_same_dtype(op: str, **tensors: torch.Tensor | None) -> torch.dtype:
    return _shared(op, "dtype", tensors, TypeError, "floating tensors must share one dtype",
                   lambda k, v: f"{k} is {_dtype_name(v.dtype)}")


def _shared(op: str, attr: str, tensors: dict, error: type[Exception], rule: str, describe):
    """The one value of ``attr`` that every non-None tensor has, else ``error`` listing each tensor's."""
    present = {k: v for k, v in tensors.items() if v is not None}
    values = {getattr(v, attr) for v in present.values()}
    if len(values) > 1:
        raise error(f"{op}: {rule}, got {', '.join(describe(k, v) for k, v in present.items())}")
    return next(iter(values))


def check_dim(op: str, name: str, actual: int, expected: int, what: str) -> None:
    if actual != expected:
        raise ValueError(f"{op}: {name} has {what} = {actual}, expected {expected}")


def positive_ints(op: str, name: str, value, count: int, expected: str) -> tuple[int, ...]:
    """``count`` positive ints from a sequence; errors say ``{name} must be {expected}``."""
    try:  # a symbolic size (torch.compile/export with dynamic shapes) stays symbolic: int() would specialise it
        values = tuple(v if isinstance(v, torch.SymInt) else int(v) for v in value)
    except TypeError:
        raise TypeError(f"{op}: {name} must be {expected}, got {value!r}") from None
    if len(values) != count or any(v <= 0 for v in values):
        raise ValueError(f"{op}: {name} must be {expected}, got {value!r}")
    return values


def removed_keep_mask(op: str, old: str, new: str, value) -> None:
    """A TypeError if the removed keep-mask argument ``old`` (True = keep) was passed: masks follow
    ``nn.MultiheadAttention`` now (True = ignore) under the name ``new``, so an old caller gets this error
    instead of a silently inverted mask."""
    if value is not None:
        raise TypeError(f"{op}: {old} (True = keep) was removed; masks now follow nn.MultiheadAttention, "
                        f"True = ignore: pass {new}=~{old}")


def triple(op: str, name: str, value: int | Sequence[int]) -> tuple[int, int, int]:
    """An int or a 3-sequence of positive ints, as a tuple."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = (value, value, value)
    return positive_ints(op, name, value, 3, "an int or 3 positive ints")  # type: ignore[return-value]
