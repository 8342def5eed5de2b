"""CT synthesis: HU per tissue, lesions blended by partial volume, scanner blur and correlated noise.

The two domains differ the way Stage 1's domain shift needs them to:

- ``petct`` (low-dose CT of a PET/CT): no iodine contrast, noise 18-35 HU,
  soft reconstruction (2-3 mm FWHM blur);
- ``diagnostic``: portal-venous contrast (see :mod:`.tissues`), noise 7-14 HU,
  sharp reconstruction (0.8-1.4 mm FWHM).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

FWHM_TO_SIGMA = 1.0 / (2.0 * np.sqrt(2.0 * np.log(2.0)))
HU_MIN, HU_MAX = -1024, 3071

_DOMAIN = {"petct": ((18.0, 35.0), (2.0, 3.0)), "diagnostic": ((7.0, 14.0), (0.8, 1.4))}


def blend(values: np.ndarray, pieces, value_of) -> None:
    """In place: ``values[block] = (1 - f) * values[block] + f * value_of(item)`` for each ``(item, slices, f)``."""
    for item, slices, f in pieces:
        block = values[slices]
        block *= 1.0 - f
        block += f * np.float32(value_of(item))


def correlated_noise(rng: np.random.Generator, shape, sigma_voxels) -> np.ndarray:
    """Unit-variance Gaussian noise ``shape`` float32, smoothed with ``sigma_voxels`` per axis."""
    noise = rng.standard_normal(shape, dtype=np.float32)
    ndimage.gaussian_filter(noise, sigma_voxels, output=noise, mode="wrap")
    noise /= max(float(noise[::3, ::3, ::3].std()), 1e-6)  # a subsample estimates the std well enough
    return noise


def synthesize_ct(tissue: np.ndarray, hu_table: np.ndarray, lesion_pieces, domain: str, spacing,
                  rng: np.random.Generator, *, noise: bool = True) -> np.ndarray:
    """CT in HU, ``(X, Y, Z)`` int16, from tissue codes ``(X, Y, Z)`` on a grid of ``spacing`` mm.

    ``lesion_pieces``: ``(lesion, block slices, volume fractions)`` on this grid; the
    lesion's ``hu`` is blended in by fraction.
    """
    (noise_lo, noise_hi), (fwhm_lo, fwhm_hi) = _DOMAIN[domain]
    hu = hu_table[tissue]
    blend(hu, lesion_pieces, lambda lesion: lesion.hu)
    sigma = rng.uniform(fwhm_lo, fwhm_hi) * FWHM_TO_SIGMA / np.asarray(spacing)
    ndimage.gaussian_filter(hu, sigma, output=hu)
    if noise:
        level = rng.uniform(noise_lo, noise_hi)
        hu += level * correlated_noise(rng, hu.shape, 0.6)
    return np.clip(np.rint(hu), HU_MIN, HU_MAX).astype(np.int16)
