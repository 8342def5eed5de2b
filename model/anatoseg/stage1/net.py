"""The stage-1 organ network: a small residual 3D UNet built from :mod:`anatoseg.blocks`.

With a ``window`` the network also reads its CT channel through a soft-tissue window,
as an extra first input channel computed inside the network (after any augmentation of
the CT): with CT scaled for lungs and bone (HU / 300), urine, muscle and enhanced organs
differ by a few hundredths, and a soft-tissue window spreads them over [-1, 1].

Teacher (CT only, 1 input channel) and student (CT + PET, 2 channels) share this
architecture; the student starts from the teacher's weights with
:func:`expand_input_channels` (the PET input weights start at zero, so the
student's first forward pass equals the teacher's).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from anatoseg.blocks.decoder_stage import DecoderStage
from anatoseg.blocks.norm import conv_norm
from anatoseg.blocks.residual import ResidualBlock
from anatoseg.blocks.sampling import Downsample


class OrganUNet(nn.Module):
    """Residual UNet: (B, in_channels, Z, Y, X) → logits (B, num_classes, Z, Y, X).

    ``widths``: channels per level; there are ``len(widths) - 1`` downsamplings by
    2, so Z, Y, X must be multiples of ``2 ** (len(widths) - 1)``. Each level has one
    residual block on the way down and one on the way up.
    """

    def __init__(self, in_channels: int, num_classes: int, widths: Sequence[int] = (8, 16, 32),
                 window: Sequence[float] | None = None):
        super().__init__()
        widths = [int(w) for w in widths]
        if len(widths) < 2 or min(widths) < 2:
            raise ValueError(f"widths needs at least two levels of >= 2 channels, got {widths}")
        self.window = None if window is None else tuple(float(v) for v in window)
        in_channels += self.window is not None
        self.stem = ResidualBlock(in_channels, widths[0])
        if in_channels == widths[0]:  # always a projection shortcut: networks differing only in their
            # input channels (CT vs CT + PET) then have the same parameters (expand_input_channels)
            self.stem.shortcut = nn.Sequential(nn.Conv3d(in_channels, widths[0], 1, bias=False), conv_norm(widths[0]))
        self.down = nn.ModuleList(nn.Sequential(Downsample(w_in, w_out), ResidualBlock(w_out, w_out))
                                  for w_in, w_out in zip(widths[:-1], widths[1:]))
        self.up = nn.ModuleList(DecoderStage(w_in, w_out, w_out)
                                for w_in, w_out in zip(widths[:0:-1], widths[-2::-1]))
        self.head = nn.Conv3d(widths[0], num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.window is not None:
            x = torch.cat([windowed(x, self.window), x], 1)
        skips = [self.stem(x)]
        for stage in self.down:
            skips.append(stage(skips[-1]))
        h = skips.pop()
        for stage in self.up:
            h = stage(h, skips.pop())
        return self.head(h)


def windowed(x: torch.Tensor, window: Sequence[float]) -> torch.Tensor:
    """Channel ``c`` of ``x`` (B, C, Z, Y, X) seen through the window ``(low, high, c)``: clipped to
    [low, high] and mapped onto [-1, 1]; (B, 1, Z, Y, X)."""
    low, high, channel = window
    ct = x[:, int(channel):int(channel) + 1]
    return (ct.clamp(low, high) - (low + high) / 2) * (2 / (high - low))


def expand_input_channels(source: dict[str, torch.Tensor], target: nn.Module) -> None:
    """Load ``source`` (a state dict with fewer input channels) into ``target``.

    Every tensor is copied as is, except input-layer weights whose shape differs
    only in dim 1 (``(out, c_src, ...)`` vs ``(out, c_tgt, ...)``, ``c_src < c_tgt``):
    their first ``c_src`` input channels are copied and the rest set to zero.
    """
    state = target.state_dict()
    for key, value in source.items():
        own = state[key]
        if own.shape == value.shape:
            state[key] = value.clone()
        elif (own.dim() == value.dim() >= 2 and own.shape[0] == value.shape[0]
              and own.shape[2:] == value.shape[2:] and own.shape[1] > value.shape[1]):
            grown = torch.zeros_like(own)
            grown[:, : value.shape[1]] = value
            state[key] = grown
        else:
            raise ValueError(f"{key}: cannot expand {tuple(value.shape)} into {tuple(own.shape)}")
    target.load_state_dict(state)
