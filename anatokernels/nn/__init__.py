"""Thin ``nn.Module`` wrappers over the anatokernels ops."""

from anatokernels.nn.hyper_cross_attention import HyperCrossAttention

__all__ = ["HyperCrossAttention"]
