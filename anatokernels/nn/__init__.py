"""Thin ``nn.Module`` wrappers over the anatokernels ops."""

from anatokernels.nn.hyper_cross_attention import HyperCrossAttention
from anatokernels.nn.mamba3d import Mamba3d

__all__ = ["HyperCrossAttention", "Mamba3d"]
