"""Stage 2 (``anato pretrain``): self-aligning cross-modal masked-patch pretraining of the PET/CT encoders.

PET and CT each hide a random fraction of their patches behind a learned mask
token, with independent masks by default (:mod:`.masking`), so no mask layout is
common to both. Each stage-3 encoder projects into one shared latent space; one
decoder per target modality reconstructs that modality's hidden patches from
either latent (intra- and cross-modal), which aligns the latents by construction
(:mod:`.model`). An optional InfoNCE term compares PET and CT only at positions
visible in both, without near neighbours as negatives. PET targets keep absolute
SUV (:mod:`.targets`). The output checkpoint (``encoders.pt``, see :mod:`.loop`)
initialises ``anato train --init`` through :func:`anatoseg.checkpoint.load_encoders`;
:func:`.compat.check_pretrained_preprocessing` tells stage 3 whether it was
pretrained on inputs preprocessed alike. The entry is :func:`anatoseg.stage2.run.run_pretrain`.
"""

from anatoseg.stage2.compat import check_pretrained_preprocessing
from anatoseg.stage2.config import CropConfig, MaskConfig, ObjectiveConfig, PretrainConfig, PretrainRunConfig
from anatoseg.stage2.loop import PretrainResult, pretrain, pretrain_volumes
from anatoseg.stage2.losses import info_nce, masked_reconstruction_loss, near_pairs
from anatoseg.stage2.masking import MASK_MODES, check_crop, draw_masks, fill_masked, patch_grid, visible_tokens
from anatoseg.stage2.model import PretrainModel
from anatoseg.stage2.targets import PET_TARGETS, normalised_targets, pet_targets

__all__ = [
    "MASK_MODES",
    "PET_TARGETS",
    "check_crop",
    "check_pretrained_preprocessing",
    "CropConfig",
    "MaskConfig",
    "ObjectiveConfig",
    "PretrainConfig",
    "PretrainModel",
    "PretrainResult",
    "PretrainRunConfig",
    "draw_masks",
    "fill_masked",
    "info_nce",
    "masked_reconstruction_loss",
    "near_pairs",
    "normalised_targets",
    "patch_grid",
    "pet_targets",
    "pretrain",
    "pretrain_volumes",
    "visible_tokens",
]
