"""The modality encoder (one for PET, one for CT) and the helpers stage 2 and stage 3 share.

Stage 2 (``anato pretrain``) trains two :class:`ModalityEncoder` modules that a
model holds as attributes ``pet_encoder`` and ``ct_encoder``; stage 3's ``--init``
loads them into the segmentation network, whose attributes have the same names.
The encoder weights travel as one state dict with the key prefixes
``pet_encoder.`` and ``ct_encoder.`` (:func:`encoder_state_dict`), next to
:func:`encoder_config` so that a mismatch is explained by config values rather
than by tensor shapes.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from anatoseg.blocks import EncoderStage, conv_norm
from anatoseg.errors import ConfigError
from anatoseg.nets.config import NetConfig
from anatoseg.nets.state import check_state_dict

ENCODER_NAMES = ("pet_encoder", "ct_encoder")
ENCODER_FIELDS = ("widths", "stem_width", "res_depths", "mamba_depths", "d_state", "orders", "mlp_ratio")


class ModalityEncoder(nn.Module):
    """One modality's encoder: full-resolution conv stem, then ``config.num_stages`` stages.

    forward: (B, 1, Z, Y, X) → list of num_stages + 1 features, entry i of shape
    (B, channels[i], Z/2**i, Y/2**i, X/2**i): the stem at full resolution, then
    each stage (downsample, residual conv blocks, Mamba blocks). Z, Y, X must be
    divisible by ``config.divisor``. ``stem_extra`` (B, stem_width, Z, Y, X), when
    given, is added to the stem conv's output before its norm: the contribution of
    extra input channels (:class:`anatoseg.blocks.OrganChannels`).
    """

    def __init__(self, config: NetConfig):
        super().__init__()
        self.channels = (config.stem_width, *config.widths)
        self.strides = tuple(2**i for i in range(config.num_stages + 1))
        self.stem = nn.Sequential(nn.Conv3d(1, config.stem_width, 3, padding=1, bias=False),
                                  conv_norm(config.stem_width), nn.LeakyReLU(0.01))
        self.stages = nn.ModuleList(
            EncoderStage(self.channels[s], self.channels[s + 1], config.res_depths[s], config.mamba_depths[s],
                         d_state=config.d_state, orders=config.orders, mlp_ratio=config.mlp_ratio,
                         checkpoint=config.gradient_checkpointing)
            for s in range(config.num_stages))

    def forward(self, x: torch.Tensor, stem_extra: torch.Tensor | None = None) -> list[torch.Tensor]:
        if stem_extra is None:
            features = [self.stem(x)]
        else:
            conv, norm, act = self.stem
            features = [act(norm(conv(x) + stem_extra))]
        for stage in self.stages:
            features.append(stage(features[-1]))
        return features


def encoder_config(config: NetConfig) -> dict[str, object]:
    """The config values that fix the encoders' architecture (store them next to :func:`encoder_state_dict`)."""
    return {name: getattr(config, name) for name in ENCODER_FIELDS}


def _encoders(model: nn.Module) -> dict[str, ModalityEncoder]:
    found = {name: getattr(model, name, None) for name in ENCODER_NAMES}
    if not all(isinstance(e, ModalityEncoder) for e in found.values()):
        raise ConfigError(f"{type(model).__name__} has no PET/CT modality encoders to initialise "
                          f"(only the anatoseg architectures have them)")
    return found


def encoder_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """Both encoders' weights, keyed ``pet_encoder.<param>`` and ``ct_encoder.<param>``.

    ``model`` is any module with ``pet_encoder`` and ``ct_encoder`` attributes
    (the stage-2 pretraining model, or a segmentation network).
    """
    return {f"{name}.{key}": value for name, encoder in _encoders(model).items()
            for key, value in encoder.state_dict().items()}


def check_encoder_state(model: nn.Module, state: Mapping[str, torch.Tensor], *,
                        state_config: NetConfig | Mapping[str, object] | None = None,
                        source: object | None = None) -> None:
    """Raise :class:`ConfigError` unless ``state`` (from :func:`encoder_state_dict`) fits ``model``'s encoders.

    When ``state_config`` (a config or an :func:`encoder_config` dict) is given
    and ``model.config`` is a :class:`NetConfig`, differing encoder fields are
    reported by name first, e.g. ``widths: (8, 16, 32, 64) in the encoder
    checkpoint, (32, 64, 128, 256) here``; then keys and shapes are checked.
    """
    model_config = getattr(model, "config", None)
    if state_config is not None and isinstance(model_config, NetConfig):
        theirs = encoder_config(state_config) if isinstance(state_config, NetConfig) else dict(state_config)
        ours = encoder_config(model_config)
        diffs = []
        for name in ENCODER_FIELDS:
            value = theirs.get(name)
            if isinstance(value, list):
                value = tuple(value)
            if value != ours[name]:
                diffs.append(f"{name}: {value!r} in the encoder checkpoint, {ours[name]!r} here")
        if diffs:
            raise ConfigError("the encoder checkpoint was pretrained with another encoder architecture ("
                              + "; ".join(diffs) + ")", path=source)
    check_state_dict(encoder_state_dict(model), state, what="encoder checkpoint", source=source)


def load_encoder_state(model: nn.Module, state: Mapping[str, torch.Tensor], *,
                       state_config: NetConfig | Mapping[str, object] | None = None,
                       source: object | None = None) -> None:
    """Check with :func:`check_encoder_state`, then copy the weights into ``model.pet_encoder``/``ct_encoder``."""
    check_encoder_state(model, state, state_config=state_config, source=source)
    for name, encoder in _encoders(model).items():
        prefix = f"{name}."
        encoder.load_state_dict({k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)})
