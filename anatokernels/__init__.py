"""anatokernels: fused kernels for 3D medical imaging.

Public ops (each takes ``backend="auto"``; :func:`backends` gives each op's
backends as :class:`Availability` values):
  masked_patch_gather, masked_patch_scatter, patchify, unpatchify, random_patch_mask
  selective_scan, selective_scan3d
  order_conv1d
  hyper_cross_attention

Importing this package never imports a compiled binary or defines a Triton
kernel: both happen on first use of the backend that needs them.
"""

from anatokernels._availability import Availability
from anatokernels._dispatch import backends
from anatokernels.hyper_attention import hyper_cross_attention
from anatokernels.masked_patch import (
    masked_patch_gather,
    masked_patch_scatter,
    patchify,
    random_patch_mask,
    unpatchify,
)
from anatokernels.order_conv import order_conv1d
from anatokernels.scan_order import scan_order
from anatokernels.selective_scan import selective_scan, selective_scan3d

__version__ = "0.1.0"

__all__ = [
    "Availability",
    "backends",
    "hyper_cross_attention",
    "masked_patch_gather",
    "masked_patch_scatter",
    "order_conv1d",
    "patchify",
    "random_patch_mask",
    "scan_order",
    "selective_scan",
    "selective_scan3d",
    "unpatchify",
]
