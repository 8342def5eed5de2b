"""Building blocks of the anatoseg networks, one small module each (assembled in :mod:`anatoseg.nets`).

All volumes are (B, C, Z, Y, X); organ label maps are (B, Z, Y, X) int64.
"""

from anatoseg.blocks.decoder_stage import DecoderStage
from anatoseg.blocks.encoder_stage import EncoderStage
from anatoseg.blocks.fusion import CrossModalFusion
from anatoseg.blocks.mamba_block import MambaBlock
from anatoseg.blocks.norm import ChannelLayerNorm, conv_norm
from anatoseg.blocks.occupancy_bias import OCCUPANCY_EPS, OccupancyBias
from anatoseg.blocks.organ_input import OrganChannels
from anatoseg.blocks.organ_pooling import organ_occupancy, pool_organ_tokens
from anatoseg.blocks.prompt_injection import GatedInjection
from anatoseg.blocks.residual import ResidualBlock
from anatoseg.blocks.sampling import Downsample, Upsample

__all__ = [
    "OCCUPANCY_EPS",
    "ChannelLayerNorm",
    "CrossModalFusion",
    "DecoderStage",
    "Downsample",
    "EncoderStage",
    "GatedInjection",
    "MambaBlock",
    "OccupancyBias",
    "OrganChannels",
    "ResidualBlock",
    "Upsample",
    "conv_norm",
    "organ_occupancy",
    "pool_organ_tokens",
]
