"""Building the segmentation network from a run config (stages 2 and 3), and describing it in checkpoint metadata."""

from __future__ import annotations

import dataclasses
from typing import Any

from torch import nn

from anatoseg.config import ModelConfig
from anatoseg.nets import NetConfig, build_network, patch_divisor
from anatoseg.training.run_folder import jsonable


def net_config(model: ModelConfig) -> NetConfig:
    """``NetConfig.preset(model.preset)`` with the ``model.net`` fields applied (unknown keys refused)."""
    base = dataclasses.asdict(NetConfig.preset(model.preset))
    return NetConfig.from_dict({**base, **model.net})


def net_dict(config: NetConfig) -> dict[str, Any]:
    """JSON-able form of a NetConfig (tuples as lists), as stored in checkpoints."""
    return jsonable(dataclasses.asdict(config))


def build_model(model: ModelConfig, patch_size) -> tuple[nn.Module, NetConfig]:
    """The network of ``model.arch`` for ``patch_size`` (Z, Y, X), and its NetConfig."""
    config = net_config(model)
    return build_network(model.arch, config, patch_size), config


def divisor(model: ModelConfig) -> int:
    """Patch sizes of this model must be multiples of this along every axis."""
    return patch_divisor(model.arch, net_config(model))
