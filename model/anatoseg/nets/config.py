"""Network configuration: every architectural choice of the anatoseg network as a value.

Variants (the no-prompt ablation, checkpointing, deep supervision, sizes) are
values of :class:`NetConfig`, not subclasses. A config round-trips through JSON:
``NetConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg``; the
dataclass is frozen, so derive variants with :func:`dataclasses.replace`.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass, fields

from anatoseg.data.labels import NUM_ORGANS
from anatoseg.errors import ConfigError

ORGAN_CHANNELS = ("none", "onehot", "embed")

# Fields added after network configs were first stored in checkpoints, with the value that rebuilds the
# network such a checkpoint holds: :meth:`NetConfig.from_dict` fills them in when a stored config lacks them.
_STORED_BEFORE = {"occupancy_bias": False, "dense_prompts": False}


def _valid_order(order: str) -> bool:
    from anatokernels.scan_order import is_valid_order  # the kernels' one order parser (imported lazily)

    return is_valid_order(order)


@dataclass(frozen=True)
class NetConfig:
    """Architecture of the anatoseg network (the defaults are the ``base`` preset).

    Stage s (0-based) runs at stride 2**(s+1); the conv stem runs at full
    resolution. Patch sizes must be divisible by :attr:`divisor` = 2**num_stages.

    - widths: channels of each encoder stage (and of the decoder at that scale).
    - stem_width: channels of the full-resolution stem, skip and last decoder stage.
    - res_depths, mamba_depths: residual conv blocks and Mamba blocks per encoder stage.
    - d_state, orders, mlp_ratio: Mamba3d state size, scan orders, MLP width factor of a Mamba block.
    - num_organs: organ labels 1..num_organs of the prompt label maps (0 = background);
      defaults to the project's label set, :data:`anatoseg.data.labels.NUM_ORGANS`.
    - prompt_dim: width of the prompt encoder and of the organ tokens.
    - hcca_stages: the prompted stages: their decoder features get hypernet-controlled
      cross-attention (HCCA) to the organ tokens (and the dense prompt features); the
      deepest stage means the bottleneck. ``tiny`` reaches stride 4, ``base`` stride 2.
    - num_heads, rank, hyper_hidden: HyperCrossAttention heads, low-rank size of the
      generated query update, hypernetwork hidden width.
    - deep_supervision: in training, return logits at strides 1, 2, ..., 2**(num_stages-1).
    - use_prompts: False is the no-prompt ablation (no prompt encoder, no HCCA).

    Prompt ablation switches (effective with ``use_prompts``; the defaults are the full design;
    all False with ``hypernet`` True is the pooled-token HCCA of the first version):

    - occupancy_bias: add a learned per-head scale × log(occupancy + ε) of each organ at
      each token to the attention logits, so a voxel attends first to the organ it lies in.
    - dense_prompts: add the prompt encoder's spatial features to the decoder features at
      each prompted stage through a zero-initialised gated projection.
    - hypernet: False freezes HCCA's hypernetwork at its initialisation, which is a plain
      cross-attention with a static W_q (and head gates 1).

    Anatomy baselines (used by the ``anatoseg_organ_*`` architectures on the no-prompt network):

    - organ_channels: ``"onehot"`` or ``"embed"`` (an ``organ_embed_dim``-wide learned
      embedding) feeds the organ map to both encoders as extra input channels; ``"none"``: off.
    - organ_aux_head: an auxiliary organ-segmentation head (num_organs + 1 classes at full
      resolution) trained as a second task; training-mode forward then returns a dict.
    - gradient_checkpointing: recompute the Mamba blocks in the backward.
    - in_channels: image channels (PET, CT); the anatoseg network needs exactly 2.
    """

    widths: tuple[int, ...] = (32, 64, 128, 256)
    stem_width: int = 16
    res_depths: tuple[int, ...] = (1, 1, 2, 2)
    mamba_depths: tuple[int, ...] = (0, 1, 1, 2)
    d_state: int = 16
    orders: tuple[str, ...] = ("zyx", "-zyx", "yxz")
    mlp_ratio: float = 2.0
    num_organs: int = NUM_ORGANS
    prompt_dim: int = 64
    hcca_stages: tuple[int, ...] = (3, 2, 1, 0)
    num_heads: int = 4
    rank: int = 8
    hyper_hidden: int = 128
    deep_supervision: bool = True
    use_prompts: bool = True
    gradient_checkpointing: bool = False
    in_channels: int = 2
    occupancy_bias: bool = True
    dense_prompts: bool = True
    hypernet: bool = True
    organ_channels: str = "none"
    organ_embed_dim: int = 8
    organ_aux_head: bool = False

    def __post_init__(self) -> None:
        for name in ("widths", "res_depths", "mamba_depths", "orders", "hcca_stages"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        object.__setattr__(self, "hcca_stages", tuple(sorted(set(self.hcca_stages), reverse=True)))
        self._validate()

    def _validate(self) -> None:
        stages = len(self.widths)
        if stages == 0 or any(w <= 0 for w in self.widths) or self.stem_width <= 0:
            raise ConfigError(f"widths and stem_width must be positive, got widths={self.widths}, "
                              f"stem_width={self.stem_width}")
        for name in ("res_depths", "mamba_depths"):
            depths = getattr(self, name)
            if len(depths) != stages or any(d < 0 for d in depths):
                raise ConfigError(f"{name} must give a depth ≥ 0 for each of the {stages} stages, got {depths}")
        if not self.orders or not all(isinstance(o, str) and _valid_order(o) for o in self.orders):
            raise ConfigError(f"orders must be non-empty axis orders such as 'zyx', '-zyx', 'yxz', "
                              f"got {self.orders}")
        bad = [s for s in self.hcca_stages if not 0 <= s < stages]
        if bad:
            raise ConfigError(f"hcca_stages {bad} out of range: stages are 0..{stages - 1}")
        if self.organ_channels not in ORGAN_CHANNELS:
            raise ConfigError(f"organ_channels must be one of {ORGAN_CHANNELS}, got {self.organ_channels!r}")
        for name in ("d_state", "num_organs", "prompt_dim", "num_heads", "rank", "hyper_hidden", "in_channels",
                     "organ_embed_dim"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be positive, got {getattr(self, name)}")
        if self.mlp_ratio < 0:
            raise ConfigError(f"mlp_ratio must be ≥ 0, got {self.mlp_ratio}")
        if self.use_prompts and not self.hcca_stages:
            raise ConfigError("use_prompts needs at least one stage in hcca_stages (the prompts act through HCCA)")
        if self.use_prompts:
            odd = [self.widths[s] for s in self.hcca_stages if self.widths[s] % self.num_heads]
            if odd:
                raise ConfigError(f"num_heads={self.num_heads} must divide the width of every HCCA stage, "
                                  f"got widths {odd}")

    @property
    def num_stages(self) -> int:
        return len(self.widths)

    @property
    def divisor(self) -> int:
        """Patch sizes must be multiples of this along every axis (2**num_stages)."""
        return 2**self.num_stages

    @classmethod
    def preset(cls, name: str, **overrides) -> NetConfig:
        """``"tiny"`` (2 CPU cores) or ``"base"`` (24 GB GPU, patch 112×160×128, bf16), with overrides."""
        if name not in PRESETS:
            raise ConfigError(f"unknown network preset {name!r}; choose one of {sorted(PRESETS)}")
        return dataclasses.replace(PRESETS[name], **overrides)

    def to_dict(self) -> dict[str, object]:
        """JSON-native dict (tuples as lists): equal to its own JSON round trip."""
        return json.loads(json.dumps(dataclasses.asdict(self)))

    @classmethod
    def from_dict(cls, values: Mapping[str, object]) -> NetConfig:
        """Inverse of :meth:`to_dict` and :func:`dataclasses.asdict`; lists become tuples, unknown keys are refused.

        Reads stored configs: a field added after configs were first stored whose default
        changes the network (``occupancy_bias``, ``dense_prompts``) is False when ``values``
        lacks it, which rebuilds the older network, so that older checkpoints still load.
        """
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"unknown network config keys {unknown}; known keys are {sorted(known)}")
        try:
            return cls(**{**_STORED_BEFORE, **values})
        except TypeError as exc:
            raise ConfigError(f"bad network config: {exc}") from None


PRESETS: dict[str, NetConfig] = {
    "tiny": NetConfig(widths=(8, 16, 32, 64), stem_width=8, res_depths=(1, 1, 1, 1), mamba_depths=(0, 0, 1, 1),
                      d_state=8, prompt_dim=16, hcca_stages=(3, 2, 1), num_heads=2, rank=4, hyper_hidden=32),
    "base": NetConfig(),
}
