"""Building blocks of the anatoseg networks, one small module each (assembled in :mod:`anatoseg.nets`).

All volumes are (B, C, Z, Y, X); organ label maps are (B, Z, Y, X) int64.
"""

from anatoseg.blocks.decoder_stage import DecoderStage
from anatoseg.blocks.encoder_stage import EncoderStage
from anatoseg.blocks.fusion import CrossModalFusion
from anatoseg.blocks.mamba_block import MambaBlock
from anatoseg.blocks.norm import ChannelLayerNorm, conv_norm
from anatoseg.blocks.organ_pooling import organ_occupancy, pool_organ_tokens
from anatoseg.blocks.residual import ResidualBlock
from anatoseg.blocks.sampling import Downsample, Upsample

__all__ = [
    "ChannelLayerNorm",
    "CrossModalFusion",
    "DecoderStage",
    "Downsample",
    "EncoderStage",
    "MambaBlock",
    "ResidualBlock",
    "Upsample",
    "conv_norm",
    "organ_occupancy",
    "pool_organ_tokens",
]
