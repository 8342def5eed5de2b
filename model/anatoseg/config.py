"""Config sections shared by the stages that train the segmentation network (2 and 3) and by inference.

Each stage's root config is a :class:`~anatoseg.configbase.ConfigBase` tree built from these
sections: :class:`anatoseg.stage3.config.Config` (``anato train``) and
:class:`anatoseg.stage2.config.PretrainConfig` (``anato pretrain``). All sizes and spacings are (Z, Y, X).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from anatoseg.configbase import (
    ConfigBase,
    OptimConfig,
)
from anatoseg.errors import ConfigError


@dataclass
class DataConfig:
    """Patches and the held-out split. Sizes are (Z, Y, X) in voxels, spacing in mm."""

    patch_size: tuple[int, int, int] = (64, 64, 64)
    spacing: tuple[float, float, float] | None = None  # target (Z, Y, X) mm; None: the fingerprint's median
    lesion_fraction: float = 1 / 3  # share of patches centred on a lesion voxel
    val_fraction: float = 0.2  # held-out share of cases (at least one when there are >= 2 cases)
    val_cases: int | None = None  # overrides val_fraction with a count
    # DataLoader worker processes building batches; None (null): auto, enough to feed a `base` step on an
    # H100 (0.46 s per batch of 2) at the measured per-worker rate, 1.36 patches/s at 112x160x128 with every
    # augmentation on (6.3 with the default probabilities; 2-core AMD EPYC, one thread, `benchmarks/
    # test_bench_data_pipeline.py`): ceil(2 / (1.36 * 0.46)) = 4 workers, capped at cpu_count - 1 (per
    # process on the machine); 0 without CUDA (training.sampling.auto_num_workers)
    num_workers: int | None = None
    pin_memory: bool | None = None  # page-locked batches for faster host-to-GPU copies; None: only with CUDA


@dataclass
class AugmentConfig:
    """Random augmentation applied to each training patch (MONAI transforms)."""

    flip_prob: float = 0.5  # per axis
    affine_prob: float = 0.2
    rotate_deg: float = 15.0  # uniform in +-rotate_deg about each axis
    scale: float = 0.15  # zoom in [1 - scale, 1 + scale]
    intensity_prob: float = 0.15
    intensity_scale: float = 0.1  # multiply each channel by 1 + U(-s, s)
    intensity_shift: float = 0.1  # add U(-s, s) (normalised units)


@dataclass
class ModelConfig:
    arch: str = "anatoseg"
    preset: str = "tiny"
    net: dict[str, Any] = field(default_factory=dict)  # NetConfig fields over the preset


@dataclass
class LossConfig:
    dice_weight: float = 1.0
    ce_weight: float = 1.0
    batch_dice: bool = True  # Dice over the whole batch (nnU-Net) rather than per sample


@dataclass
class RunConfig:
    """The length and bookkeeping of a training run (stages 2 and 3; the seed is the root's ``seed``)."""

    steps: int = 1000
    batch_size: int = 2  # global: split over DDP processes
    amp: bool = True  # bf16 autocast on CUDA; ignored on the CPU
    ckpt_every: int = 250
    log_every: int = 10


@dataclass
class InferConfig:
    overlap: float = 0.5  # of the window, per axis
    sigma_scale: float = 0.125  # Gaussian sigma as a fraction of the window size
    batch_size: int = 1  # windows per forward pass

    def validate(self, prefix: str = "infer") -> None:
        """ConfigError for an overlap outside [0, 1), a sigma_scale <= 0 or a batch_size < 1."""
        if not 0 <= self.overlap < 1:
            raise ConfigError(f"{prefix}.overlap must lie in [0, 1), got {self.overlap}")
        if not self.sigma_scale > 0:
            raise ConfigError(f"{prefix}.sigma_scale must be > 0, got {self.sigma_scale}")
        if self.batch_size < 1:
            raise ConfigError(f"{prefix}.batch_size must be >= 1, got {self.batch_size}")


@dataclass
class NetworkRunConfig(ConfigBase):
    """The sections of a run that trains the segmentation network (stages 2 and 3), so that a
    pretraining config names the network exactly as the stage-3 config that loads it."""

    model: ModelConfig = field(default_factory=ModelConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)


__all__ = ["AugmentConfig", "DataConfig", "InferConfig", "LossConfig", "ModelConfig", "NetworkRunConfig",
           "RunConfig"]
