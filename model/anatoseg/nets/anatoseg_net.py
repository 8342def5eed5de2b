"""The anatoseg network: dual PET/CT encoders, cross-modal fusion, organ prompts through HCCA, U-shaped decoder."""

from __future__ import annotations

import torch
from torch import nn

from anatokernels.nn import HyperCrossAttention
from anatoseg.blocks import CrossModalFusion, DecoderStage, GatedInjection, OccupancyBias, OrganChannels
from anatoseg.errors import ConfigError, DataError
from anatoseg.nets.config import NetConfig
from anatoseg.nets.encoder import ModalityEncoder
from anatoseg.nets.prompt_encoder import PromptEncoder, StagePrompt

NUM_CLASSES = 2  # background, lesion


class AnatoSegNet(nn.Module):
    """Lesion segmentation of a PET-CT patch, guided by organ prompts.

    forward(image (B, 2, Z, Y, X) float [PET SUV-normalised, CT normalised],
    organs (B, Z, Y, X) int64 in [0, num_organs], or None when ``uses_prompts`` is
    False) → logits (B, 2, Z, Y, X). In training mode with ``deep_supervision``
    it returns a list of logits at strides 1, 2, ..., 2**(num_stages - 1), entry
    i of shape (B, 2, Z/2**i, Y/2**i, X/2**i). In training mode with ``organ_aux``
    (``config.organ_aux_head``) it returns ``{"lesion": <the above>, "organs": organ
    logits (B, num_organs + 1, Z, Y, X)}``, the organ map being the second task's
    target; eval mode always returns the lesion logits alone. Z, Y, X must be
    multiples of ``config.divisor``.

    Attributes the training loop and inference read: ``uses_prompts`` (forward needs
    the organ map), ``organ_aux`` (training needs the organ map as a target),
    ``deep_supervision``.

    Data flow (level l is stride 2**l; level 0 is the stem, level s+1 stage s):
    1. ``pet_encoder`` on channel 0, ``ct_encoder`` on channel 1, each giving
       num_stages + 1 levels (with ``organ_channels``, ``organ_input`` adds the organ
       map to both stems as extra input channels).
    2. ``fusions[l]`` fuses the two encoders' level-l features.
    3. ``prompt_encoder`` turns the organ map into organ tokens, occupancy maps and
       dense prompt features for each prompted stage (``hcca_stages``).
    4. The fused deepest level is the bottleneck. At each prompted stage s (the
       bottleneck for the deepest), ``inject["<s>"]`` adds the dense prompt features
       (``dense_prompts``), then ``hcca["<s>"]`` (HyperCrossAttention, residual inside)
       lets the features attend to the organ tokens, with ``occupancy_bias["<s>"]``
       on the logits (``occupancy_bias``).
    5. ``decoders[l]`` upsamples level l+1 and merges the fused level-l skip;
       ``heads[l]`` gives the level-l logits (``organ_head`` the organ logits at level 0).

    The prompt paths start shut: HCCA's output projection and the injection gates are
    zero, so at initialisation the output equals that of the no-prompt network with the
    same encoder, fusion and decoder weights (``hcca[s].reset_parameters()`` would undo it).
    """

    def __init__(self, config: NetConfig):
        super().__init__()
        if config.in_channels != 2:
            raise ConfigError(f"the anatoseg network takes 2 channels (PET, CT), config has "
                              f"in_channels={config.in_channels}")
        self.config = config
        self.uses_prompts = config.use_prompts or config.organ_channels != "none"
        self.organ_aux = config.organ_aux_head
        self.deep_supervision = config.deep_supervision
        self.pet_encoder = ModalityEncoder(config)
        self.ct_encoder = ModalityEncoder(config)
        channels = self.pet_encoder.channels
        self.fusions = nn.ModuleList(CrossModalFusion(c) for c in channels)
        if config.organ_channels != "none":
            self.organ_input = OrganChannels(config.organ_channels, config.num_organs, config.organ_embed_dim,
                                             config.stem_width, count=2)
        if config.use_prompts:
            self._build_prompts(config)
        self.decoders = nn.ModuleList(DecoderStage(channels[level + 1], channels[level], channels[level])
                                      for level in range(config.num_stages))
        head_levels = config.num_stages if config.deep_supervision else 1
        self.heads = nn.ModuleList(nn.Conv3d(channels[level], NUM_CLASSES, 1) for level in range(head_levels))
        if config.organ_aux_head:
            self.organ_head = nn.Conv3d(channels[0], config.num_organs + 1, 1)

    def _build_prompts(self, config: NetConfig) -> None:
        """Prompt encoder, HCCA (output projection zeroed; hypernetwork frozen when ``not hypernet``),
        occupancy bias and gated injection at every prompted stage."""
        stages = [str(s) for s in config.hcca_stages]
        self.prompt_encoder = PromptEncoder(config)
        self.hcca = nn.ModuleDict({
            s: HyperCrossAttention(config.widths[int(s)], config.prompt_dim, num_heads=config.num_heads,
                                   rank=config.rank, hyper_hidden=config.hyper_hidden) for s in stages})
        for attention in self.hcca.values():
            nn.init.zeros_(attention.w_o)  # b_o starts at zero too: out = x
            # Frozen at its initialisation (zero last layer, V and gate biases zero), the hypernetwork
            # gives W_q(b) = W0 and head gates 1: a plain cross-attention with a static W_q.
            attention.hyper.requires_grad_(config.hypernet)
        if config.occupancy_bias:
            self.occupancy_bias = nn.ModuleDict({s: OccupancyBias(config.num_heads) for s in stages})
        if config.dense_prompts:
            self.inject = nn.ModuleDict({s: GatedInjection(config.prompt_dim, config.widths[int(s)])
                                         for s in stages})

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

    def _prompt(self, x: torch.Tensor, prompts: dict[int, StagePrompt], stage: int) -> torch.Tensor:
        """Stage ``stage``'s features x (B, C, z, y, x) with its prompts applied (x itself if not prompted)."""
        if stage not in prompts:
            return x
        prompt, key = prompts[stage], str(stage)
        if self.config.dense_prompts:
            x = self.inject[key](x, prompt.features)
        bias = {}
        if self.config.occupancy_bias:
            bias["attn_bias"], bias["attn_bias_scale"] = self.occupancy_bias[key](prompt.occupancy)
        return self.hcca[key](x, prompt.tokens, key_padding_mask=~prompt.present, **bias)

    def forward(self, image: torch.Tensor, organs: torch.Tensor | None = None):
        self._check_inputs(image, organs)
        stems = self.organ_input(organs) if self.config.organ_channels != "none" else (None, None)
        pet = self.pet_encoder(image[:, 0:1], stems[0])
        ct = self.ct_encoder(image[:, 1:2], stems[1])
        fused = [fuse(p, c) for fuse, p, c in zip(self.fusions, pet, ct)]
        del pet, ct, stems  # under no_grad nothing else holds them while decoding
        prompts = self.prompt_encoder(organs) if self.config.use_prompts else {}
        x = self._prompt(fused[-1], prompts, self.config.num_stages - 1)
        logits = []
        for level in reversed(range(self.config.num_stages)):
            x = self.decoders[level](x, fused[level])
            x = self._prompt(x, prompts, level - 1)
            if level < len(self.heads) and (self.training or level == 0):
                logits.append(self.heads[level](x))
        logits.reverse()
        lesion = logits if self.training and self.deep_supervision else logits[0]
        if self.training and self.organ_aux:
            return {"lesion": lesion, "organs": self.organ_head(x)}
        return lesion
