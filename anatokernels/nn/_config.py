"""Configuration that changes what a module computes, saved with its weights and checked on load.

A module registers it as an int64 buffer (:func:`register_config`): the buffer travels in the state dict
(it is a tensor, so code that reads every value's shape, or copies buffers, keeps working), and a
load-state-dict pre-hook compares a checkpoint's values with the module's own before any weight is
copied: loading weights trained with other scan orders or heads is a clear error, not a silently
different network. A checkpoint saved before the buffer existed loads without the check.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn


def register_config(module: nn.Module, name: str, values: Sequence[int], describe: Callable[[Sequence[int]], str],
                    device=None) -> None:
    """Buffer ``name`` holding ``values``; ``describe(values)`` (a module-level function, so that the
    module stays picklable) words them for errors, e.g. "orders ('zyx',)"."""
    module.register_buffer(name, torch.tensor(list(values), dtype=torch.int64, device=device))
    module.register_load_state_dict_pre_hook(_ConfigCheck(name, tuple(int(v) for v in values), describe))


@dataclass(frozen=True)
class _ConfigCheck:
    """The load-state-dict pre-hook of one config buffer."""

    name: str
    expected: tuple[int, ...]
    describe: Callable[[Sequence[int]], str]

    def __call__(self, module: nn.Module, state_dict, prefix: str, *args) -> None:
        key = prefix + self.name
        if key not in state_dict:  # a checkpoint from before the buffer existed: nothing to check
            state_dict[key] = torch.tensor(self.expected, dtype=torch.int64)
            return
        saved = state_dict[key]
        found = tuple(int(v) for v in saved.tolist()) if isinstance(saved, torch.Tensor) else None
        if found != self.expected:
            what = self.describe(found) if found is not None else f"{self.name}={saved!r}"
            raise ValueError(f"{type(module).__name__}: the state dict was saved from a module with {what}, this "
                             f"one has {self.describe(self.expected)}; build the module with the checkpoint's "
                             "configuration")


def reset_config(module: nn.Module, name: str, values: Sequence[int]) -> None:
    """Rewrite the buffer (after ``to_empty`` it holds garbage)."""
    with torch.no_grad():
        getattr(module, name).copy_(torch.tensor(list(values), dtype=torch.int64))
