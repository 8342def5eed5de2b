"""Training-patch augmentation (stages 2 and 3): nnU-Net's transforms that matter for PET-CT.

In this order, each with its probability from :class:`~anatoseg.config.AugmentConfig`:

1. mirroring along each axis; a flip of X (left-right in (Z, Y, X)) also swaps the left/right organ labels
   (:func:`anatoseg.data.labels.swap_left_right`), so the organ now on the left is named left;
2. rotation and scaling (MONAI ``RandAffined``: bilinear image, nearest labels);
3. per channel (PET and CT draw apart): brightness (scale, shift), gamma, contrast, Gaussian noise, Gaussian
   blur, simulated low resolution (MONAI transforms);
4. PET-CT misregistration: the PET channel shifted by a few whole voxels against the CT (edge-padded).

Every draw comes from the generator passed in, so a patch is a function of (seed, step, index).
"""

from __future__ import annotations

import numpy as np
from monai.transforms import (
    Compose,
    RandAdjustContrastd,
    RandAffined,
    RandGaussianNoised,
    RandGaussianSmoothd,
    RandScaleIntensityd,
    RandScaleIntensityFixedMeand,
    RandShiftIntensityd,
    RandSimulateLowResolutiond,
)

from anatoseg.config import AugmentConfig
from anatoseg.data.axes import AXES
from anatoseg.data.labels import swap_left_right

CHANNELS = ("pet", "ct")  # the image's channels, in order, as the per-channel transforms name them
X_AXIS = AXES.index("x")  # left-right


def _channel_transforms(config: AugmentConfig, key: str) -> list:
    """MONAI intensity transforms of one channel ``key`` ``(1, *P)``."""
    blur = tuple(config.blur_sigma)
    return [
        RandScaleIntensityd(key, factors=config.intensity_scale, prob=config.intensity_prob),
        RandShiftIntensityd(key, offsets=config.intensity_shift, prob=config.intensity_prob),
        RandAdjustContrastd(key, prob=config.gamma_prob, gamma=tuple(config.gamma_range)),
        RandScaleIntensityFixedMeand(key, factors=config.contrast_range, preserve_range=True,
                                     prob=config.contrast_prob),
        RandGaussianNoised(key, prob=config.noise_prob, std=config.noise_std),
        RandGaussianSmoothd(key, sigma_x=blur, sigma_y=blur, sigma_z=blur, prob=config.blur_prob),
        RandSimulateLowResolutiond(key, prob=config.lowres_prob, zoom_range=tuple(config.lowres_zoom)),
    ]


def mirror(item: dict[str, np.ndarray], axes: tuple[bool, bool, bool]) -> dict[str, np.ndarray]:
    """``item`` (arrays ``(C, Z, Y, X)``) flipped along each spatial axis marked in ``axes`` (Z, Y, X);
    ``organs`` (``(1, Z, Y, X)``, organ ids) has its left/right labels swapped when X is flipped."""
    dims = tuple(axis + 1 for axis, flip in enumerate(axes) if flip)
    if not dims:
        return item
    out = {key: np.ascontiguousarray(np.flip(value, dims)) for key, value in item.items()}
    if axes[X_AXIS] and "organs" in out:
        organs = out["organs"]
        out["organs"] = swap_left_right(organs[0].astype(np.uint8))[None].astype(organs.dtype)
    return out


def shift_channel(channel: np.ndarray, offset: tuple[int, int, int]) -> np.ndarray:
    """``channel`` ``(Z, Y, X)`` moved by whole voxels ``offset`` (Z, Y, X), the uncovered border edge-padded:
    ``out[p] = channel[clip(p - offset)]``."""
    index = np.ix_(*(np.clip(np.arange(n) - o, 0, n - 1) for n, o in zip(channel.shape, offset, strict=True)))
    return channel[index]


class Augmentation:
    """``augmentation(item, rng)``: item ``{"image": (2, *P) [PET, CT], "label": (1, *P), "organs": (1, *P)}``
    (``organs`` only ``with_organs``) -> the augmented item, float32 arrays of the same shapes."""

    def __init__(self, config: AugmentConfig, with_organs: bool):
        self.config = config
        keys = [*CHANNELS, "label"] + (["organs"] if with_organs else [])
        nearest = ["nearest"] * (len(keys) - 2)
        angle = np.deg2rad(config.rotate_deg)
        self.spatial = RandAffined(keys, prob=config.affine_prob, rotate_range=(angle, angle, angle),
                                   scale_range=(config.scale,) * 3, mode=["bilinear", "bilinear", *nearest],
                                   padding_mode=["border", "border", *(["zeros"] * len(nearest))])
        self.intensity = Compose([t for key in CHANNELS for t in _channel_transforms(config, key)])

    def __call__(self, item: dict[str, np.ndarray], rng: np.random.Generator) -> dict[str, np.ndarray]:
        config = self.config
        item = mirror(item, tuple(bool(rng.random() < config.flip_prob) for _ in range(3)))
        image = item.pop("image")
        item = {"pet": image[0:1], "ct": image[1:2], **item}
        self.spatial.set_random_state(seed=int(rng.integers(2**31)))
        self.intensity.set_random_state(seed=int(rng.integers(2**31)))
        item = self.intensity(self.spatial(item))
        pet, ct = (np.asarray(item.pop(key), dtype=np.float32) for key in CHANNELS)
        if config.misalign_voxels and rng.random() < config.misalign_prob:
            offset = tuple(int(o) for o in rng.integers(-config.misalign_voxels, config.misalign_voxels + 1, 3))
            pet = shift_channel(pet[0], offset)[None]
        out = {key: np.asarray(value, dtype=np.float32) for key, value in item.items()}
        return {"image": np.concatenate([pet, ct]), **out}
