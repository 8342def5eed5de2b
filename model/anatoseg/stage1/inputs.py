"""What the stage-1 networks read: body-frame coordinates, then the image channels.

Several organs of the label set share their CT values with their neighbours
(with contrast, spleen, kidneys, pancreas and the aorta all enhance like the
liver; urine is as dark as stomach content): only where they lie tells them
apart. A convolutional network sees a patch, not where the patch lies in the
body, so with ``Stage1Config.coordinates`` three channels give every voxel its
position in the working grid (the body crop, axes (Z, Y, X), RAS: X grows
toward the patient's left), each from -1 to 1. They come first, so a CT-only
network's input weights load unchanged into a CT + PET network
(:func:`~anatoseg.stage1.net.expand_input_channels` adds the PET weights last).
"""

from __future__ import annotations

import numpy as np

COORDINATE_CHANNELS = 3
SOFT_TISSUE_HU = (-160.0, 240.0)  # the CT window the networks also read (net.windowed)


def ct_window(config) -> tuple[float, float, int] | None:
    """The ``window`` of :class:`~anatoseg.stage1.net.OrganUNet` for ``config`` (soft-tissue window
    in the working CT normalisation, CT channel index), or None when ``config.ct_window`` is off."""
    if not config.ct_window:
        return None
    from anatoseg.stage1.data import make_preprocessing

    params = make_preprocessing(config.data.spacing)
    low, high = ((hu - params.ct_mean) / params.ct_std for hu in SOFT_TISSUE_HU)
    return low, high, COORDINATE_CHANNELS if config.coordinates else 0


def body_coordinates(shape) -> np.ndarray:
    """``(3, Z, Y, X)`` float32: per axis, the voxel position from -1 (first) to 1 (last)."""
    axes = [np.linspace(-1.0, 1.0, int(n), dtype=np.float32) if n > 1 else np.zeros(1, np.float32) for n in shape]
    return np.stack(np.broadcast_arrays(*np.meshgrid(*axes, indexing="ij", sparse=True))).astype(np.float32)


def network_input(image: np.ndarray, coordinates: bool) -> np.ndarray:
    """The network input for ``image`` ``(C, Z, Y, X)``: ``(3 + C, Z, Y, X)`` with the coordinates
    first, or ``image`` itself without them."""
    if not coordinates:
        return image
    return np.concatenate([body_coordinates(image.shape[1:]), np.asarray(image, dtype=np.float32)])


def image_channels(in_channels: int, coordinates: bool) -> int:
    """Image channels (CT, or CT + PET) of a network with ``in_channels`` inputs."""
    return in_channels - COORDINATE_CHANNELS if coordinates else in_channels
