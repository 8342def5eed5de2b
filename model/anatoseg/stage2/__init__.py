"""Stage 2 (``anato pretrain``): self-aligning cross-modal masked-patch pretraining of the PET/CT encoders.

One random patch mask, shared by PET and CT, hides a fraction of each crop; the
hidden patches hold a learned mask token. The stage-3 encoders then learn to
reconstruct the masked patches of their own modality (intra-modal) and of the
other one (cross-modal), and InfoNCE aligns their tokens at the same positions.
The output checkpoint (``encoders.pt``, see :mod:`anatoseg.stage2.loop`)
initialises ``anato train --init`` through :func:`anatoseg.checkpoint.load_encoders`.
The entry is :func:`anatoseg.stage2.run.run_pretrain`; the loop is :mod:`.loop`.
"""

from anatoseg.stage2.config import CropConfig, MaskConfig, ObjectiveConfig, PretrainConfig, PretrainRunConfig
from anatoseg.stage2.loop import PretrainResult, pretrain, pretrain_volumes
from anatoseg.stage2.losses import info_nce, masked_reconstruction_loss
from anatoseg.stage2.masking import check_crop, draw_shared_mask, fill_masked, normalised_targets, patch_grid
from anatoseg.stage2.model import PretrainModel

__all__ = [
    "check_crop",
    "CropConfig",
    "MaskConfig",
    "ObjectiveConfig",
    "PretrainConfig",
    "PretrainModel",
    "PretrainResult",
    "PretrainRunConfig",
    "draw_shared_mask",
    "fill_masked",
    "info_nce",
    "masked_reconstruction_loss",
    "normalised_targets",
    "patch_grid",
    "pretrain",
    "pretrain_volumes",
]
