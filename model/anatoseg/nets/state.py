"""Checking a loaded state dict against a model before loading it, with messages a user can act on."""

from __future__ import annotations

from collections.abc import Mapping

import torch

from anatoseg.errors import ConfigError

_SHOWN = 5


def _shape(t: torch.Tensor) -> str:
    return "(" + ", ".join(str(s) for s in t.shape) + ")"


def check_state_dict(expected: Mapping[str, torch.Tensor], state: Mapping[str, torch.Tensor], *,
                     what: str = "checkpoint", source: object | None = None) -> None:
    """Raise :class:`ConfigError` unless ``state`` has exactly the keys and shapes of ``expected``.

    ``expected`` is typically ``model.state_dict()``. The message names the first
    few missing keys, unexpected keys and shape mismatches, and how many more
    there are; ``source`` (a path) is reported as the error's path.
    """
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    mismatched = [f"{k}: {_shape(state[k])} in the {what}, {_shape(expected[k])} here"
                  for k in expected if k in state and tuple(state[k].shape) != tuple(expected[k].shape)]
    problems = []
    for label, items in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", mismatched)):
        if items:
            more = f" and {len(items) - _SHOWN} more" if len(items) > _SHOWN else ""
            problems.append(f"{label}: {', '.join(items[:_SHOWN])}{more}")
    if problems:
        raise ConfigError(f"the {what} does not fit this network ({'; '.join(problems)})", path=source)
