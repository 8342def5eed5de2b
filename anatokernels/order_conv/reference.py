"""Plain PyTorch reference for the order-aware causal depthwise conv.

For each order k it permutes the sequence into scan order with
:func:`anatokernels.scan_order`, runs a causal ``F.conv1d`` (left padding W-1,
groups=D), applies the activation and writes the result back to native
positions. Autograd gives every gradient.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from anatokernels.scan_order import scan_order


def order_conv1d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                 spatial: tuple[int, int, int], orders: Sequence[str], activation: str | None) -> torch.Tensor:
    """x (B, K, D, L), weight (K, D, W), bias (K, D) or None -> (B, K, D, L) in native layout."""
    width = weight.shape[-1]
    outs = []
    for k, order in enumerate(orders):
        pi = scan_order(spatial, order).to(x.device)
        xs = x[:, k].index_select(-1, pi)  # (B, D, L) in scan order
        ys = F.conv1d(F.pad(xs, (width - 1, 0)), weight[k].unsqueeze(1), None if bias is None else bias[k],
                      groups=weight.shape[1])
        if activation == "silu":
            ys = F.silu(ys)
        outs.append(ys.index_select(-1, torch.argsort(pi)))  # back to native positions
    return torch.stack(outs, dim=1)
