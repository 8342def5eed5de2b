"""Plain PyTorch reference for the masked 3D patch ops (view/permute/gather).

Shapes: x (B, C, D, H, W); patches (B, G, P) with G = GD·GH·GW patches in
raster order (id = (gd·GH + gh)·GW + gw) and P = C·pd·ph·pw in (c, pd, ph, pw)
order. Autograd gives every gradient.
"""

from __future__ import annotations

import torch


def patchify(x: torch.Tensor, patch: tuple[int, int, int]) -> torch.Tensor:
    """(B, C, D, H, W) -> (B, G, C·pd·ph·pw)."""
    b, c, d, h, w = x.shape
    pd, ph, pw = patch
    gd, gh, gw = d // pd, h // ph, w // pw
    p = x.reshape(b, c, gd, pd, gh, ph, gw, pw).permute(0, 2, 4, 6, 1, 3, 5, 7)
    return p.reshape(b, gd * gh * gw, c * pd * ph * pw)


def unpatchify(patches: torch.Tensor, patch: tuple[int, int, int], spatial: tuple[int, int, int]) -> torch.Tensor:
    """(B, G, C·pd·ph·pw) -> (B, C, D, H, W)."""
    b, _, p_len = patches.shape
    pd, ph, pw = patch
    d, h, w = spatial
    gd, gh, gw = d // pd, h // ph, w // pw
    c = p_len // (pd * ph * pw)
    x = patches.reshape(b, gd, gh, gw, c, pd, ph, pw).permute(0, 4, 1, 5, 2, 6, 3, 7)
    return x.reshape(b, c, d, h, w)


def masked_patch_gather(x: torch.Tensor, index: torch.Tensor, patch: tuple[int, int, int]) -> torch.Tensor:
    """``patchify(x)[b, index[b]]``: (B, C, D, H, W), (B, M) -> (B, M, P)."""
    rows = torch.arange(x.shape[0], device=x.device).unsqueeze(1)
    return patchify(x, patch)[rows, index]


def masked_patch_scatter(patches: torch.Tensor, index: torch.Tensor, patch: tuple[int, int, int],
                         spatial: tuple[int, int, int], fill: torch.Tensor) -> torch.Tensor:
    """Write (B, M, P) patches at ``index`` into a (B, C, D, H, W) volume filled with ``fill`` (C,)."""
    b, _, p_len = patches.shape
    pd, ph, pw = patch
    g = (spatial[0] // pd) * (spatial[1] // ph) * (spatial[2] // pw)
    fill_patch = fill.to(patches.dtype).repeat_interleave(pd * ph * pw)
    base = fill_patch.expand(b, g, p_len)
    rows = torch.arange(b, device=patches.device).unsqueeze(1).expand_as(index)
    return unpatchify(base.index_put((rows, index), patches), patch, spatial)
