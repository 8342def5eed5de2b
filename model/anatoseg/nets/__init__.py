"""Assembled networks: the anatoseg network, its parts, and the MONAI baselines.

Entry point: :func:`build_network` (``arch`` in :data:`ARCHITECTURES`) with a
:class:`NetConfig` (``NetConfig.preset("tiny" | "base")``).
"""

from anatoseg.nets.anatoseg_net import AnatoSegNet
from anatoseg.nets.baselines import BaselineNet
from anatoseg.nets.config import PRESETS, NetConfig
from anatoseg.nets.encoder import (
    ENCODER_NAMES,
    ModalityEncoder,
    check_encoder_state,
    encoder_config,
    encoder_state_dict,
    load_encoder_state,
)
from anatoseg.nets.factory import ANATOMY_BASELINES, ARCHITECTURES, build_network, patch_divisor
from anatoseg.nets.prompt_encoder import PromptEncoder, StagePrompt
from anatoseg.nets.state import check_state_dict

__all__ = [
    "ANATOMY_BASELINES",
    "ARCHITECTURES",
    "ENCODER_NAMES",
    "PRESETS",
    "AnatoSegNet",
    "BaselineNet",
    "ModalityEncoder",
    "NetConfig",
    "PromptEncoder",
    "StagePrompt",
    "build_network",
    "check_encoder_state",
    "check_state_dict",
    "encoder_config",
    "encoder_state_dict",
    "load_encoder_state",
    "patch_divisor",
]
