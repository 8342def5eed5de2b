"""Patch sampling and augmentation for the stage-1 networks (torch, on the CPU or GPU).

Geometric augmentation (:func:`random_affine`) is applied identically to the
image, the labels and the confidence map, so the student's strong view and the
mean teacher's weak view of a patch stay voxel-aligned. Intensity augmentation
(:func:`strong_intensity`) only touches images. There are no flips: the label
set has left and right kidneys, and a mirrored body is not a plausible input.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F


class ClassVoxels:
    """Flat voxel indices of every class of a label map ``(Z, Y, X)``, grouped by class (built once per case).

    ``order``: ``(N,)`` int32 flat indices sorted by class; class ``k`` owns
    ``order[starts[k]:starts[k + 1]]``.
    """

    def __init__(self, labels: np.ndarray):
        flat = np.asarray(labels).ravel()
        self.shape = tuple(labels.shape)
        self.order = np.argsort(flat, kind="stable").astype(np.int32)
        self.starts = np.concatenate([[0], np.cumsum(np.bincount(flat))])
        self.present = [k for k in range(1, len(self.starts) - 1) if self.starts[k + 1] > self.starts[k]]

    def random_voxel(self, k: int, rng: np.random.Generator) -> tuple[int, int, int]:
        """A uniformly drawn voxel ``(z, y, x)`` of class ``k`` (which must be present)."""
        flat = self.order[int(rng.integers(self.starts[k], self.starts[k + 1]))]
        return tuple(int(i) for i in np.unravel_index(int(flat), self.shape))


def sample_patch(shape: Sequence[int], patch: Sequence[int], classes: ClassVoxels | None,
                 rng: np.random.Generator, foreground_prob: float = 0.67) -> tuple[slice, slice, slice]:
    """A crop box of size ``patch`` inside a volume of ``shape`` (both (Z, Y, X)).

    With probability ``foreground_prob`` (and when ``classes`` has a foreground
    class), the box is centred on a random voxel of a random present class, so
    small organs are seen as often as large ones; otherwise it is uniform.
    Boxes larger than the volume start at 0 (the caller pads).
    """
    centre = None
    if classes is not None and classes.present and rng.random() < foreground_prob:
        centre = classes.random_voxel(int(rng.choice(classes.present)), rng)
    box = []
    for axis, (n, p) in enumerate(zip(shape, patch, strict=True)):
        if centre is None:
            start = int(rng.integers(max(n - p, 0) + 1))
        else:
            start = int(min(max(centre[axis] - p // 2, 0), max(n - p, 0)))
        box.append(slice(start, start + p))
    return tuple(box)


def crop_padded(array: np.ndarray, box: tuple[slice, slice, slice], fill: float | None = None) -> np.ndarray:
    """``array[..., box]`` (leading axes kept), padded at the end up to the box size.

    ``fill`` None pads with the edge values (images), else with ``fill`` (labels).
    """
    out = array[(Ellipsis, *box)]
    pad = [(0, s.stop - s.start - n) for s, n in zip(box, out.shape[-3:], strict=True)]
    if any(after for _, after in pad):
        pad = [(0, 0)] * (out.ndim - 3) + pad
        out = np.pad(out, pad, mode="edge") if fill is None else np.pad(out, pad, constant_values=fill)
    return out


def random_affine(tensors: Sequence[torch.Tensor], modes: Sequence[str], generator: torch.Generator, *,
                  rotate_deg: float = 10.0, scale: float = 0.1) -> list[torch.Tensor]:
    """Rotate (uniform in ±``rotate_deg`` about each axis) and zoom (1 ± ``scale``) a batch of patches.

    ``tensors``: each ``(B, C, Z, Y, X)`` float, with one ``mode`` per tensor
    (``"bilinear"`` for images and probabilities, ``"nearest"`` for labels);
    every tensor gets the same transform per sample. Border values fill the corners.
    """
    batch = tensors[0].shape[0]
    angles = (torch.rand(batch, 3, generator=generator) * 2 - 1) * math.radians(rotate_deg)
    zoom = 1 + (torch.rand(batch, 1, 1, generator=generator) * 2 - 1) * scale
    cos, sin = angles.cos(), angles.sin()
    eye = torch.eye(3).expand(batch, 3, 3)
    rotation = eye
    for axis in range(3):
        i, j = [a for a in range(3) if a != axis]
        r = eye.clone()
        r[:, i, i], r[:, i, j], r[:, j, i], r[:, j, j] = cos[:, axis], -sin[:, axis], sin[:, axis], cos[:, axis]
        rotation = rotation @ r
    # affine_grid works in [-1, 1] coordinates ordered last tensor axis first (X, Y, Z); conjugate with the
    # half-sizes so that angles are kept in voxel space on non-cubic patches.
    half = torch.tensor([float(n) for n in reversed(tensors[0].shape[2:])])
    linear = (rotation * zoom) * half[None, None, :] / half[None, :, None]
    theta = torch.cat([linear, torch.zeros(batch, 3, 1)], dim=2).to(tensors[0].device)
    grid = F.affine_grid(theta, list(tensors[0].shape), align_corners=False)
    return [F.grid_sample(t, grid, mode=mode, padding_mode="border", align_corners=False)
            for t, mode in zip(tensors, modes, strict=True)]


def _blur(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Separable Gaussian blur of ``x`` (B, C, Z, Y, X) with one ``sigma`` (B,) in voxels per sample."""
    radius = 2
    offsets = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    kernel = torch.exp(-0.5 * (offsets[None] / sigma[:, None].clamp_min(1e-3)) ** 2)
    kernel = kernel / kernel.sum(1, keepdim=True)  # (B, 2r+1)
    b, c = x.shape[:2]
    out = x.reshape(1, b * c, *x.shape[2:])
    weights = kernel.repeat_interleave(c, dim=0)  # (B*C, 2r+1)
    for axis in range(3):
        shape = [b * c, 1, 1, 1, 1]
        shape[2 + axis] = 2 * radius + 1
        pad = [0] * 6  # F.pad order: (Z lo, Z hi, Y lo, Y hi, X lo, X hi)
        pad[2 * (2 - axis)] = pad[2 * (2 - axis) + 1] = radius
        out = F.conv3d(F.pad(out, pad, mode="replicate"), weights.reshape(shape), groups=b * c)
    return out.reshape(x.shape)


def strong_intensity(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Strong per-sample, per-channel intensity augmentation of ``x`` (B, C, Z, Y, X) → same shape.

    Contrast × U(0.7, 1.3) and brightness + U(-0.3, 0.3) per channel, Gaussian
    blur (σ ∈ [0.3, 1.2] voxels, half the samples), simulated low resolution
    (down- and upsampling by up to 2, half the samples), Gaussian noise
    (σ ∈ [0, 0.3]), and a cut-out: per sample and channel, one box of up to half
    of each side set to the channel's patch mean. The boxes of the CT and the PET
    channel are placed independently, so where one modality is blanked the other
    is usually still there and the student has to learn to read both.
    """
    b, c = x.shape[:2]

    def uniform(lo: float, hi: float, *shape: int) -> torch.Tensor:
        return (lo + (hi - lo) * torch.rand(*shape, generator=generator)).to(x)

    view = (b, c, 1, 1, 1)
    out = x * uniform(0.7, 1.3, b * c).reshape(view) + uniform(-0.3, 0.3, b * c).reshape(view)
    blur = torch.rand(b, generator=generator) < 0.5
    if blur.any():
        out[blur] = _blur(out[blur], uniform(0.3, 1.2, int(blur.sum())))
    lowres = torch.rand(b, generator=generator) < 0.5
    for i in torch.nonzero(lowres).flatten().tolist():
        factor = float(uniform(1.0, 2.0, 1))
        small = F.interpolate(out[i:i + 1], scale_factor=1 / factor, mode="trilinear", align_corners=False)
        out[i:i + 1] = F.interpolate(small, size=x.shape[2:], mode="trilinear", align_corners=False)
    out = out + torch.randn(out.shape, generator=generator).to(x) * uniform(0.0, 0.3, b).reshape(b, 1, 1, 1, 1)
    means = out.mean(dim=(2, 3, 4))
    for i in range(b):
        for channel in range(c):
            size = [int(torch.randint(1, max(2, n // 2 + 1), (1,), generator=generator)) for n in x.shape[2:]]
            start = [int(torch.randint(0, n - s + 1, (1,), generator=generator)) for n, s in zip(x.shape[2:], size)]
            out[(i, channel, *(slice(s, s + n) for s, n in zip(start, size)))] = means[i, channel]
    return out


def mild_intensity(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """The teacher's augmentation: contrast × U(0.9, 1.1), brightness ± 0.1, noise σ ≤ 0.05; (B, C, Z, Y, X)."""
    b, c = x.shape[:2]
    scale = 0.9 + 0.2 * torch.rand(b, c, 1, 1, 1, generator=generator)
    shift = 0.2 * torch.rand(b, c, 1, 1, 1, generator=generator) - 0.1
    noise = torch.randn(x.shape, generator=generator) * (0.05 * torch.rand(b, 1, 1, 1, 1, generator=generator))
    return x * scale.to(x) + shift.to(x) + noise.to(x)



UNENHANCED_HU: dict[str, float] = {
    "heart": 40.0, "liver": 55.0, "spleen": 45.0, "kidney_left": 30.0, "kidney_right": 30.0, "stomach": 35.0,
    "aorta": 40.0, "pancreas": 40.0, "esophagus": 40.0, "bowel": 30.0,
}
"""Typical unenhanced CT values (HU, 120 kVp) of the organs that take up iodine contrast; by organ name."""


def remove_contrast(ct: torch.Tensor, labels: torch.Tensor, unenhanced: dict[int, float],
                    generator: torch.Generator, probability: float = 0.5) -> torch.Tensor:
    """Contrast-removal augmentation: enhanced organs pulled toward their unenhanced value, per organ.

    ``ct``: ``(B, 1, Z, Y, X)`` normalised CT; ``labels``: ``(B, Z, Y, X)`` int64 organ ids;
    ``unenhanced``: organ id -> its unenhanced value in the same normalised units (from
    :data:`UNENHANCED_HU`). With ``probability`` per sample, every listed organ present in the patch
    whose median lies above its unenhanced value moves by ``f * (unenhanced - median)``, with
    ``f ~ U(0, 1)`` drawn per organ: ``f = 1`` gives the organ its unenhanced level, texture and noise
    kept. Returns a new tensor.
    """
    out = ct.clone()
    for i in range(ct.shape[0]):
        if float(torch.rand(1, generator=generator)) >= probability:
            continue
        factors = torch.rand(len(unenhanced), generator=generator).tolist()
        for (organ, value), factor in zip(unenhanced.items(), factors, strict=True):
            mask = labels[i] == organ
            if not bool(mask.any()):
                continue
            shift = value - float(out[i, 0][mask].median())
            if shift < 0:
                out[i, 0][mask] += factor * shift
    return out
