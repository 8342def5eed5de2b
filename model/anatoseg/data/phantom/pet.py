"""PET synthesis in SUV: uptake per tissue, lesions, scanner resolution, sampling, count noise.

Activity is built on the fine anatomy grid, blurred by the scanner's point
spread function (6-7 mm FWHM) combined with the PET voxel's own extent,
sampled at the PET voxel centres (moved by the PET–CT misregistration,
:mod:`.misregister`), and given Poisson-like noise whose standard
deviation grows with the square root of the local SUV (coefficient of
variation 12-25 % in the liver), spatially correlated over about a voxel.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from anatoseg.data.phantom.ct import FWHM_TO_SIGMA, blend, correlated_noise
from anatoseg.data.phantom.grid import Grid
from anatoseg.data.phantom.misregister import Misregistration
from anatoseg.data.resample import resample_to_grid


def synthesize_pet(tissue: np.ndarray, suv_table: np.ndarray, lesion_pieces, core_pieces, fine: Grid, pet: Grid,
                   rng: np.random.Generator, misregistration: Misregistration, *,
                   noise: bool = True) -> tuple[np.ndarray, dict]:
    """SUV ``pet.shape`` float32 from tissue codes on ``fine``; returns (SUV, parameters used).

    ``lesion_pieces``/``core_pieces``: ``(lesion, slices, fractions)`` on ``fine``.
    """
    activity = suv_table[tissue]
    blend(activity, lesion_pieces, lambda lesion: lesion.suv)
    blend(activity, core_pieces, lambda lesion: lesion.core_suv)
    fwhm = rng.uniform(6.0, 7.0)
    # PSF and the PET voxel's box (variance spacing^2 / 12), minus what the fine voxel already averages.
    var = (fwhm * FWHM_TO_SIGMA) ** 2 + (np.square(pet.spacing) - np.square(fine.spacing)) / 12.0
    ndimage.gaussian_filter(activity, np.sqrt(np.maximum(var, 0.0)) / np.asarray(fine.spacing), output=activity)
    source = misregistration.source_grid(pet)
    suv = misregistration.warp(resample_to_grid(activity, fine.affine, pet.shape, source.affine, order=1, fill=0.0),
                               pet)
    params = {"psf_fwhm_mm": round(float(fwhm), 2)}
    if noise:
        cov = rng.uniform(0.12, 0.25)
        liver = 2.2
        scale = cov * liver / np.sqrt(liver)  # sd = scale * sqrt(SUV)
        suv += scale * np.sqrt(np.maximum(suv, 0.02)) * correlated_noise(rng, suv.shape, 0.7)
        np.maximum(suv, 0.0, out=suv)
        params["noise_cov_liver"] = round(float(cov), 3)
    return suv, params
