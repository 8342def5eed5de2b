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
from anatoseg.data.labels import ORGAN_IDS
from anatoseg.errors import ConfigError
from anatoseg.training.organ_corruption import OrganCorruptionConfig

#: Organs whose physiological FDG uptake most often looks like a lesion: where hard-negative patches are
#: centred (``data.hard_negative_organs``).
HIGH_UPTAKE_ORGANS = "brain,heart,kidney_left,kidney_right,urinary_bladder,ureters,bowel,brown_fat,thyroid," \
                     "salivary_glands"
#: Organs inside which a predicted lesion component is most likely physiological uptake
#: (``anato predict --suppress-organs``' suggestion; ``infer.suppress_organs`` is empty, off, by default).
SUPPRESS_ORGANS = "brain,urinary_bladder,kidney_left,kidney_right,ureters,heart"


def organ_names(names: str, key: str) -> tuple[str, ...]:
    """The organs of a comma-separated list of organ label names (``""``: none), in the given order.

    ConfigError naming ``key`` and the known names for a name outside :data:`anatoseg.data.labels.ORGAN_IDS`.
    """
    found = tuple(name.strip() for name in names.split(",") if name.strip())
    unknown = [name for name in found if name not in ORGAN_IDS]
    if unknown:
        raise ConfigError(f"{key}: unknown organ name(s) {', '.join(unknown)}; known: {', '.join(ORGAN_IDS)}")
    return found


@dataclass
class DataConfig:
    """Patches and the held-out split. Sizes are (Z, Y, X) in voxels, spacing in mm."""

    patch_size: tuple[int, int, int] = (64, 64, 64)
    spacing: tuple[float, float, float] | None = None  # target (Z, Y, X) mm; None: the fingerprint's median
    lesion_fraction: float = 1 / 3  # share of patches centred on a lesion voxel (nnU-Net's 1/3)
    lesion_warmup: int = 0  # first steps in which every patch is centred on a lesion voxel
    # Hard negatives, as shares of the patches NOT centred on a lesion (defaults: 1/6 of all patches each): centred
    # on a voxel of one of hard_negative_organs (cases without organ labels take a hot voxel instead), and on a hot
    # voxel outside the lesions: PET above the case's hot_quantile (works on real data without organ labels). The
    # rest are placed at random. lesion_fraction 1 leaves no room for them.
    organ_fraction: float = 0.25
    hot_fraction: float = 0.25
    hard_negative_organs: str = HIGH_UPTAKE_ORGANS  # comma-separated organ label names
    hot_quantile: float = 0.99  # of the case's PET values
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
    """Random augmentation applied to each training patch (:mod:`anatoseg.training.augment`), with
    nnU-Net's probabilities. The intensity transforms draw for the PET and the CT channel apart."""

    flip_prob: float = 0.5  # per axis; a flip of X (left-right) swaps the left/right organ labels
    affine_prob: float = 0.2
    rotate_deg: float = 15.0  # uniform in +-rotate_deg about each axis
    scale: float = 0.15  # zoom in [1 - scale, 1 + scale]
    intensity_prob: float = 0.15
    intensity_scale: float = 0.1  # multiply each channel by 1 + U(-s, s)
    intensity_shift: float = 0.1  # add U(-s, s) (normalised units)
    gamma_prob: float = 0.3  # per channel: x -> x ** gamma on the channel's [min, max]
    gamma_range: tuple[float, float] = (0.7, 1.5)
    contrast_prob: float = 0.15  # per channel: scale about the mean, clipped to the channel's range
    contrast_range: float = 0.25  # factor in [1 - r, 1 + r]
    noise_prob: float = 0.1  # per channel: additive Gaussian noise ...
    noise_std: float = 0.1  # ... of standard deviation up to this (normalised units)
    blur_prob: float = 0.2  # per channel: Gaussian blur ...
    blur_sigma: tuple[float, float] = (0.5, 1.0)  # ... sigma in voxels
    lowres_prob: float = 0.25  # per channel: simulated low resolution (down by nearest, up by trilinear) ...
    lowres_zoom: tuple[float, float] = (0.5, 1.0)  # ... at this zoom
    misalign_prob: float = 0.2  # PET-CT misregistration: the PET channel shifted ...
    misalign_voxels: int = 2  # ... by up to this many voxels along each axis (edge-padded)
    # Random errors in the organ map of each patch (dropped, dilated/eroded, shifted organs), applied only where
    # the map is the network's prompt (stage 3, networks that read organ maps), so that it tolerates stage 1's
    # labels; all probabilities 0: off
    organ_corruption: OrganCorruptionConfig = field(default_factory=OrganCorruptionConfig)


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
    # Share of the voxels with the largest cross-entropy that the CE term averages (nnU-Net's TopK loss, e.g.
    # 0.1); None: every voxel. training.optim.DeepSupervisedDiceCE says what it is for and what it did.
    ce_topk: float | None = None
    # Deep-supervision heads coarser than this stride get no loss: at 2-3 mm spacing a stride-4 cell is
    # 8-12 mm, about the smallest lesion counted; a 1 cm lesion fills at most 1/8 of a stride-8 cell.
    # None: every head. Coarser spacing needs less: on the protocol's 6 mm CPU scale, with stride 2 (12 mm
    # cells) kept, one training run stayed on the all-background plateau that stride 1 left
    # (experiments/protocol/config.py).
    max_supervised_stride: int | None = 4
    # anatoseg_organ_aux: weight of the auxiliary organ head's cross-entropy against the organ map, added to the
    # lesion loss
    organ_aux_weight: float = 1.0


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
    # Test-time mirroring: the mean softmax over the 8 flips of (Z, Y, X) (organ prompts flipped alike, left/right
    # labels swapped on an X flip); 8 times the network's work. Used by `anato predict`, not by validation.
    mirror: bool = True
    # Post-processing: predicted lesion components lying mostly (> suppress_fraction of their voxels) inside
    # these organs (comma-separated label names, e.g. the SUPPRESS_ORGANS suggestion) are removed; "": off.
    suppress_organs: str = ""
    suppress_fraction: float = 0.5

    def validate(self, prefix: str = "infer") -> None:
        """ConfigError for an overlap outside [0, 1), a sigma_scale <= 0, a batch_size < 1, an unknown
        organ name or a suppress_fraction outside [0, 1)."""
        if not 0 <= self.overlap < 1:
            raise ConfigError(f"{prefix}.overlap must lie in [0, 1), got {self.overlap}")
        if not self.sigma_scale > 0:
            raise ConfigError(f"{prefix}.sigma_scale must be > 0, got {self.sigma_scale}")
        if self.batch_size < 1:
            raise ConfigError(f"{prefix}.batch_size must be >= 1, got {self.batch_size}")
        organ_names(self.suppress_organs, f"{prefix}.suppress_organs")
        if not 0 <= self.suppress_fraction < 1:
            raise ConfigError(f"{prefix}.suppress_fraction must lie in [0, 1), got {self.suppress_fraction}")


@dataclass
class NetworkRunConfig(ConfigBase):
    """The sections of a run that trains the segmentation network (stages 2 and 3), so that a
    pretraining config names the network exactly as the stage-3 config that loads it."""

    model: ModelConfig = field(default_factory=ModelConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)


__all__ = ["HIGH_UPTAKE_ORGANS", "SUPPRESS_ORGANS", "AugmentConfig", "DataConfig", "InferConfig", "LossConfig",
           "ModelConfig", "NetworkRunConfig", "RunConfig", "organ_names"]
