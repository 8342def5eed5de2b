"""MONAI baselines (UNet, SegResNet, SwinUNETR, UNETR) behind the anatoseg network's interface.

Their sizes follow the :class:`NetConfig` preset so that ``tiny`` baselines are
small too; nothing is downloaded (no pretrained weights).

=========  ==========================================================================  =======
arch       sizing from the config                                                      divisor
=========  ==========================================================================  =======
unet       channels (stem_width, *widths), stride 2 per stage, 2 residual units        2**S
segresnet  init_filters widths[0], blocks_down (1, 2, 2, 4)                            8
swinunetr  feature_size widths[0] rounded up to a multiple of 12                       32
unetr      feature_size widths[0]//2, hidden 3·widths[-1], mlp 4·hidden, hidden/64 heads   16
=========  ==========================================================================  =======
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.networks import nets as monai_nets
from monai.utils import OptionalImportError
from torch import nn

from anatoseg.errors import ConfigError
from anatoseg.nets.config import NetConfig

BASELINES = ("unet", "segresnet", "swinunetr", "unetr")
NUM_CLASSES = 2


class BaselineNet(nn.Module):
    """A MONAI network with the anatoseg interface.

    forward(image (B, in_channels, Z, Y, X), organs ignored) → logits (B, 2, Z, Y, X),
    in training mode too (no deep supervision). The MONAI module is ``self.net``.
    """

    uses_prompts = False
    organ_aux = False
    deep_supervision = False

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, image: torch.Tensor, organs: torch.Tensor | None = None) -> torch.Tensor:
        return self.net(image)


def baseline_divisor(arch: str, config: NetConfig) -> int:
    """Patch sizes of ``arch`` must be multiples of this along every axis."""
    return {"unet": config.divisor, "segresnet": 8, "swinunetr": 32, "unetr": 16}[arch]


def build_baseline(arch: str, config: NetConfig, patch_size: Sequence[int] | None) -> BaselineNet:
    """The MONAI network ``arch`` (one of :data:`BASELINES`), sized from ``config``."""
    cin = config.in_channels
    if arch == "unet":
        net = monai_nets.UNet(spatial_dims=3, in_channels=cin, out_channels=NUM_CLASSES,
                              channels=(config.stem_width, *config.widths), strides=(2,) * config.num_stages,
                              num_res_units=2)
    elif arch == "segresnet":
        net = monai_nets.SegResNet(spatial_dims=3, init_filters=config.widths[0], in_channels=cin,
                                   out_channels=NUM_CLASSES, blocks_down=(1, 2, 2, 4), blocks_up=(1, 1, 1))
    elif arch == "swinunetr":
        net = monai_nets.SwinUNETR(in_channels=cin, out_channels=NUM_CLASSES, spatial_dims=3,
                                   feature_size=12 * -(-config.widths[0] // 12),
                                   use_checkpoint=config.gradient_checkpointing)
    elif arch == "unetr":
        if patch_size is None:
            raise ConfigError("unetr needs the training patch size (its position embedding is sized by it)")
        hidden = 3 * config.widths[-1]
        if hidden % 64:
            raise ConfigError(f"unetr sizes hidden = 3·widths[-1] = {hidden}, which must be a multiple of 64")
        try:
            net = monai_nets.UNETR(in_channels=cin, out_channels=NUM_CLASSES, img_size=tuple(patch_size),
                                   feature_size=max(config.widths[0] // 2, 1), hidden_size=hidden,
                                   mlp_dim=4 * hidden, num_heads=hidden // 64)
        except OptionalImportError as exc:
            raise ConfigError(f"unetr needs MONAI's optional dependency einops ({exc}); pip install einops") from None
    else:
        raise ConfigError(f"unknown baseline {arch!r}; choose one of {BASELINES}")
    return BaselineNet(net)
