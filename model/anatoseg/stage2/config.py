"""Stage-2 run configuration (``anato pretrain``), on the shared base (:mod:`anatoseg.configbase`).

Sections ``model``, ``augment``, ``optim`` (:class:`anatoseg.config.NetworkRunConfig`)
and the run bookkeeping (:class:`~anatoseg.config.RunConfig`) are shared with stage 3, so a
pretraining config names the network exactly as the stage-3 config that will load
it. Sizes are (Z, Y, X). Example file::

    model: {preset: tiny}
    mask: {patch_size: [16, 16, 16], ratio: 0.7, mode: independent}
    loss: {align: false, pet_target: log_suv}
    train: {steps: 300, batch_size: 2}
"""

from __future__ import annotations

from dataclasses import dataclass, field

from anatoseg.config import NetworkRunConfig, RunConfig
from anatoseg.configbase import OptimConfig
from anatoseg.errors import ConfigError
from anatoseg.stage2.masking import check_crop, check_mask
from anatoseg.stage2.targets import PET_TARGETS
from anatoseg.training.network import net_config

#: The architectures with separate PET and CT encoders (``anato train --arch``).
ENCODER_ARCHS = ("anatoseg", "anatoseg_noprompt")


@dataclass
class CropConfig:
    """Random training crops. Sizes are (Z, Y, X) in voxels, spacing in mm."""

    size: tuple[int, int, int] = (64, 64, 64)  # multiples of the mask patch and of the network divisor
    spacing: tuple[float, float, float] | None = None  # None: the fingerprint's median spacing


@dataclass
class MaskConfig:
    """The random patch masks, one per sample and modality (:mod:`anatoseg.stage2.masking`)."""

    patch_size: tuple[int, int, int] = (16, 16, 16)
    ratio: float = 0.7  # fraction of patches masked in each modality
    mode: str = "independent"  # independent, complementary (ratio >= 0.5) or shared (the pre-issue-18 ablation)


@dataclass
class ObjectiveConfig:
    """Loss terms (each can be switched off), their weights, and the heads that produce them."""

    intra: bool = True  # reconstruct PET from the PET latent, CT from the CT latent
    cross: bool = True  # the same decoders reconstruct CT from the PET latent, PET from the CT latent
    align: bool = True  # InfoNCE between PET and CT latents at positions visible in both views
    intra_weight: float = 1.0
    cross_weight: float = 1.0
    align_weight: float = 1.0
    temperature: float = 0.1  # InfoNCE temperature
    align_radius: float = 16.0  # voxels: same-sample positions this close to a token are not its negatives
    pet_target: str = "suv"  # suv (absolute, the normalised PET), log_suv (log1p(SUV)) or patch (per patch)
    # Per-patch targets (CT; PET with pet_target=patch) are (t - mean) / sqrt(var + eps). Inputs are z-scored,
    # so MAE's 1e-6 would blow the noise of flat patches (air, homogeneous tissue) up to unit variance; 1e-2
    # keeps such targets near 0.
    target_eps: float = 1e-2
    decoder_hidden: int = 64  # width of each light reconstruction decoder
    proj_dim: int = 64  # channels of the shared latent space both encoders project into


@dataclass
class PretrainRunConfig(RunConfig):
    steps: int = 200
    log_every: int = 1  # a CSV row (mean of the steps since the last one) every this many steps
    ckpt_every: int = 100  # rewrite encoders.pt every this many steps (and at the end)


@dataclass
class PretrainConfig(NetworkRunConfig):
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(schedule="cosine", warmup_steps=10))
    crop: CropConfig = field(default_factory=CropConfig)
    mask: MaskConfig = field(default_factory=MaskConfig)
    loss: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    train: PretrainRunConfig = field(default_factory=PretrainRunConfig)

    def check(self) -> None:
        """The crop against the network and the mask patch, the loss terms, the run lengths."""
        if self.model.arch not in ENCODER_ARCHS:
            raise ConfigError(f"pretraining trains the PET/CT encoders of {' and '.join(ENCODER_ARCHS)}; "
                              f"model.arch {self.model.arch!r} has none")
        loss = self.loss
        if not (loss.intra or loss.cross or loss.align):
            raise ConfigError("every pretraining loss is switched off (loss.intra, loss.cross, loss.align); "
                              "keep at least one")
        for name in ("intra_weight", "cross_weight", "align_weight"):
            if getattr(loss, name) < 0:
                raise ConfigError(f"loss.{name} must be >= 0, got {getattr(loss, name)}")
        for name in ("temperature", "target_eps"):
            if getattr(loss, name) <= 0:
                raise ConfigError(f"loss.{name} must be > 0, got {getattr(loss, name)}")
        if loss.align_radius < 0:
            raise ConfigError(f"loss.align_radius must be >= 0, got {loss.align_radius}")
        if loss.pet_target not in PET_TARGETS:
            raise ConfigError(f"loss.pet_target must be one of {', '.join(PET_TARGETS)}, got {loss.pet_target!r}")
        self.require_positive("loss.decoder_hidden", "loss.proj_dim")
        self._check_mask()
        self.require_positive(*(f"train.{name}" for name in ("steps", "batch_size", "log_every", "ckpt_every")))

    def _check_mask(self) -> None:
        """The crop against the network divisor and the mask patch; the mask ratio against its mode."""
        if min(self.mask.patch_size) < 1 or min(self.crop.size) < 1:
            raise ConfigError(f"mask.patch_size and crop.size must be positive, got {self.mask.patch_size} "
                              f"and {self.crop.size}")
        grid = check_crop(self.crop.size, self.mask.patch_size, net_config(self.model).divisor)
        check_mask(grid, self.mask.ratio, self.mask.mode)
        if self.mask.mode == "complementary" and self.loss.align:
            raise ConfigError("loss.align compares positions visible in both modalities, and complementary "
                              "masks leave none; set loss.align=false or another mask.mode")
