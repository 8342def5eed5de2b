"""The anatoseg network: dual PET/CT encoders, cross-modal fusion, organ prompts through HCCA, U-shaped decoder."""

from __future__ import annotations

import torch
from torch import nn

from anatokernels.nn import HyperCrossAttention
from anatoseg.blocks import CrossModalFusion, DecoderStage
from anatoseg.errors import ConfigError, DataError
from anatoseg.nets.config import NetConfig
from anatoseg.nets.encoder import ModalityEncoder
from anatoseg.nets.prompt_encoder import PromptEncoder

NUM_CLASSES = 2  # background, lesion


class AnatoSegNet(nn.Module):
    """Lesion segmentation of a PET-CT patch, guided by organ prompts.

    forward(image (B, 2, Z, Y, X) float [PET SUV-normalised, CT normalised],
    organs (B, Z, Y, X) int64 in [0, num_organs] or None when ``use_prompts`` is
    False) → logits (B, 2, Z, Y, X). In training mode with ``deep_supervision``
    it returns a list of logits at strides 1, 2, ..., 2**(num_stages - 1), entry
    i of shape (B, 2, Z/2**i, Y/2**i, X/2**i). Z, Y, X must be multiples of
    ``config.divisor``.

    Data flow (level l is stride 2**l; level 0 is the stem, level s+1 stage s):
    1. ``pet_encoder`` on channel 0, ``ct_encoder`` on channel 1, each giving
       num_stages + 1 levels.
    2. ``fusions[l]`` fuses the two encoders' level-l features.
    3. ``prompt_encoder`` turns the organ map into organ tokens for each HCCA stage.
    4. The fused deepest level is the bottleneck; ``hcca["<s>"]`` (HyperCrossAttention,
       residual inside) lets stage s's decoder features attend to the organ tokens
       (the bottleneck itself for the deepest stage).
    5. ``decoders[l]`` upsamples level l+1 and merges the fused level-l skip;
       ``heads[l]`` gives the level-l logits.
    """

    def __init__(self, config: NetConfig):
        super().__init__()
        if config.in_channels != 2:
            raise ConfigError(f"the anatoseg network takes 2 channels (PET, CT), config has "
                              f"in_channels={config.in_channels}")
        self.config = config
        self.uses_prompts = config.use_prompts
        self.deep_supervision = config.deep_supervision
        self.pet_encoder = ModalityEncoder(config)
        self.ct_encoder = ModalityEncoder(config)
        channels = self.pet_encoder.channels
        self.fusions = nn.ModuleList(CrossModalFusion(c) for c in channels)
        if config.use_prompts:
            self.prompt_encoder = PromptEncoder(config)
            self.hcca = nn.ModuleDict({
                str(s): HyperCrossAttention(config.widths[s], config.prompt_dim, num_heads=config.num_heads,
                                            rank=config.rank, hyper_hidden=config.hyper_hidden)
                for s in config.hcca_stages})
        self.decoders = nn.ModuleList(DecoderStage(channels[level + 1], channels[level], channels[level])
                                      for level in range(config.num_stages))
        head_levels = config.num_stages if config.deep_supervision else 1
        self.heads = nn.ModuleList(nn.Conv3d(channels[level], NUM_CLASSES, 1) for level in range(head_levels))

    def _check_inputs(self, image: torch.Tensor, organs: torch.Tensor | None) -> None:
        if image.dim() != 5 or image.shape[1] != 2:
            raise DataError(f"image must be (B, 2, Z, Y, X) with channels PET, CT; got {tuple(image.shape)}")
        divisor = self.config.divisor
        if any(s % divisor for s in image.shape[2:]):
            raise DataError(f"patch size {tuple(image.shape[2:])} is not divisible by {divisor} "
                            f"(2**num_stages) along every axis")
        if not self.uses_prompts:
            return
        if organs is None:
            raise DataError("this network uses organ prompts: pass organs (B, Z, Y, X) int64")
        if organs.shape != (image.shape[0], *image.shape[2:]) or organs.dtype != torch.int64:
            raise DataError(f"organs must be int64 (B, Z, Y, X) = {(image.shape[0], *image.shape[2:])}, "
                            f"got {organs.dtype} {tuple(organs.shape)}")
        if bool(((organs < 0) | (organs > self.config.num_organs)).any()):
            raise DataError(f"organ labels must lie in [0, {self.config.num_organs}] (0 = background), "
                            f"got {int(organs.min())}..{int(organs.max())}")

    def forward(self, image: torch.Tensor, organs: torch.Tensor | None = None):
        self._check_inputs(image, organs)
        pet = self.pet_encoder(image[:, 0:1])
        ct = self.ct_encoder(image[:, 1:2])
        fused = [fuse(p, c) for fuse, p, c in zip(self.fusions, pet, ct)]
        del pet, ct  # under no_grad nothing else holds them while decoding
        prompts = self.prompt_encoder(organs) if self.uses_prompts else {}

        def attend(x: torch.Tensor, stage: int) -> torch.Tensor:
            if stage not in prompts:
                return x
            tokens, present = prompts[stage]
            return self.hcca[str(stage)](x, tokens, key_padding_mask=~present)

        x = attend(fused[-1], self.config.num_stages - 1)
        logits = []
        for level in reversed(range(self.config.num_stages)):
            x = self.decoders[level](x, fused[level])
            x = attend(x, level - 1)
            if level < len(self.heads) and (self.training or level == 0):
                logits.append(self.heads[level](x))
        logits.reverse()
        return logits if self.training and self.deep_supervision else logits[0]
