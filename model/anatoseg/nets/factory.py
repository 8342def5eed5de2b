"""``build_network(arch, config, patch_size)``: every architecture of the harness behind one call."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from torch import nn

from anatoseg.errors import ConfigError
from anatoseg.nets.anatoseg_net import AnatoSegNet
from anatoseg.nets.baselines import BASELINES, baseline_divisor, build_baseline
from anatoseg.nets.config import NetConfig

# The anatomy baselines: the no-prompt network fed the same organ maps in the simple ways.
ANATOMY_BASELINES = {
    "anatoseg_organ_onehot": {"use_prompts": False, "organ_channels": "onehot"},
    "anatoseg_organ_embed": {"use_prompts": False, "organ_channels": "embed"},
    "anatoseg_organ_aux": {"use_prompts": False, "organ_aux_head": True},
}
ARCHITECTURES = ("anatoseg", "anatoseg_noprompt", *ANATOMY_BASELINES, *BASELINES)


def _check_arch(arch: str) -> None:
    if arch not in ARCHITECTURES:
        raise ConfigError(f"unknown architecture {arch!r}; choose one of {', '.join(ARCHITECTURES)}")


def patch_divisor(arch: str, config: NetConfig | None = None) -> int:
    """Patch sizes for ``arch`` must be multiples of this along every axis."""
    _check_arch(arch)
    config = config or NetConfig()
    return config.divisor if arch.startswith("anatoseg") else baseline_divisor(arch, config)


def build_network(arch: str, config: NetConfig | None = None,
                  patch_size: Sequence[int] | None = None) -> nn.Module:
    """The network ``arch`` (one of :data:`ARCHITECTURES`) for (B, 2, Z, Y, X) PET-CT patches.

    - ``anatoseg``: :class:`AnatoSegNet` as configured; ``anatoseg_noprompt`` is the
      same with ``use_prompts=False`` (dual encoders + fusion + decoder, SegMamba-like).
    - anatomy baselines, the no-prompt network given the organ map: ``anatoseg_organ_onehot``
      and ``anatoseg_organ_embed`` as extra input channels (one-hot, or a learned embedding
      of ``organ_embed_dim`` channels); ``anatoseg_organ_aux`` as the target of an auxiliary
      organ-segmentation head (its training-mode forward returns a dict, see AnatoSegNet).
    - ``unet``, ``segresnet``, ``swinunetr``, ``unetr``: MONAI networks sized from
      ``config`` (:mod:`anatoseg.nets.baselines`); they ignore the organ map.

    ``config`` defaults to the ``base`` preset. ``patch_size`` (Z, Y, X), the training
    patch, is required by ``unetr`` and checked against :func:`patch_divisor` when given.
    Every returned module has ``forward(image, organs=None)``, ``uses_prompts`` (forward
    needs the organ map), ``organ_aux`` (training needs the organ map as a target) and
    ``deep_supervision`` (True only where training-mode forward returns a list).
    """
    _check_arch(arch)
    config = config or NetConfig()
    if patch_size is not None:
        patch_size = tuple(int(s) for s in patch_size)
        divisor = patch_divisor(arch, config)
        if len(patch_size) != 3 or any(s <= 0 or s % divisor for s in patch_size):
            raise ConfigError(f"patch size {patch_size} does not suit {arch}: it needs 3 positive sizes, "
                              f"each a multiple of {divisor}")
    if arch == "anatoseg_noprompt":
        return AnatoSegNet(dataclasses.replace(config, use_prompts=False))
    if arch in ANATOMY_BASELINES:
        return AnatoSegNet(dataclasses.replace(config, **ANATOMY_BASELINES[arch]))
    if arch == "anatoseg":
        return AnatoSegNet(config)
    return build_baseline(arch, config, patch_size)
