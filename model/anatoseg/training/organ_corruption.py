"""Random corruption of organ label maps, so that a prompted network tolerates the errors of stage-1 labels.

A stage-3 model is trained on the organ maps it is given (ground truth or
pseudo-labels) but predicts with stage-1 labels, which miss organs, misplace their
boundaries and sit a few voxels off where PET and CT disagree. Corrupting the prompt
of each training patch at random teaches the network not to trust the map blindly:

- drop: an organ present in the patch is erased (its voxels become background);
- morph: an organ is dilated (taking neighbouring voxels, background or another
  organ's) or eroded (giving its rim to background) by 1..``morph_radius`` voxels,
  6-connected steps;
- shift: the whole map moves by up to ``shift_max`` voxels along each axis; the
  voxels it uncovers become background.

Only the prompt is corrupted: the lesion label, the image, and an organ map used as
a training target (the auxiliary organ head) stay as they are. Everything is drawn
from the ``rng`` passed in, so a patch's corruption is a function of the
generator's state (of (seed, step, index) in the stage-3 sampler).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from anatoseg.errors import ConfigError

_CROSS = ndimage.generate_binary_structure(3, 1)  # 6-connectivity: one step along an axis


@dataclass
class OrganCorruptionConfig:
    """Probabilities and sizes of the corruptions (all probabilities 0: off)."""

    drop_prob: float = 0.1  # per organ present in the patch
    morph_prob: float = 0.3  # per organ left: dilated or eroded, equal odds
    morph_radius: int = 2  # voxels, drawn uniformly in 1..morph_radius
    shift_prob: float = 0.2  # per patch
    shift_max: int = 3  # voxels along each axis, drawn uniformly in -shift_max..shift_max

    @property
    def enabled(self) -> bool:
        return any(p > 0 for p in (self.drop_prob, self.morph_prob, self.shift_prob))

    def validate(self, prefix: str = "organ_corruption") -> None:
        """ConfigError naming the first value out of range."""
        for name in ("drop_prob", "morph_prob", "shift_prob"):
            value = getattr(self, name)
            if not 0 <= value <= 1:
                raise ConfigError(f"{prefix}.{name} must lie in [0, 1], got {value}")
        for name in ("morph_radius", "shift_max"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ConfigError(f"{prefix}.{name} must be an int ≥ 0, got {value!r}")
        if self.morph_prob > 0 and self.morph_radius == 0:
            raise ConfigError(f"{prefix}.morph_radius must be ≥ 1 when morph_prob > 0")


def corrupt_organs(organs: np.ndarray, config: OrganCorruptionConfig, rng: np.random.Generator) -> np.ndarray:
    """A corrupted copy of ``organs`` (Z, Y, X) uint8 (0 = background), as (Z, Y, X) uint8.

    Organs are visited in increasing label order; each present one is dropped with
    ``drop_prob``, else morphed with ``morph_prob``; then the whole map is shifted with
    ``shift_prob``. The input is not modified; the same generator state gives the same output.
    """
    if not isinstance(organs, np.ndarray) or organs.dtype != np.uint8 or organs.ndim != 3:
        raise TypeError(f"corrupt_organs: organs must be a (Z, Y, X) uint8 numpy array, got "
                        f"{getattr(organs, 'dtype', type(organs).__name__)} {getattr(organs, 'shape', '')}")
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"corrupt_organs: rng must be a numpy.random.Generator, got {type(rng).__name__}")
    out = organs.copy()
    present = np.flatnonzero(np.bincount(organs.ravel(), minlength=256)[1:]) + 1
    for label in present:
        if rng.random() < config.drop_prob:
            out[out == label] = 0
        elif rng.random() < config.morph_prob:
            radius = int(rng.integers(1, config.morph_radius + 1))
            _morph(out, int(label), radius, grow=bool(rng.random() < 0.5))
    if rng.random() < config.shift_prob:
        offset = rng.integers(-config.shift_max, config.shift_max + 1, size=3)
        out = _shift(out, offset)
    return out


def _morph(organs: np.ndarray, label: int, radius: int, *, grow: bool) -> None:
    """Dilate (``grow``) or erode ``label`` in place by ``radius`` 6-connected steps, within its bounding box
    widened by ``radius``. Erosion treats the patch border as inside the organ (it continues beyond)."""
    mask = organs == label
    if not mask.any():  # a dilation of an earlier organ can have covered it
        return
    box = tuple(slice(max(int(i.min()) - radius, 0), int(i.max()) + radius + 1) for i in np.nonzero(mask))
    region, inside = organs[box], mask[box]
    if grow:
        region[ndimage.binary_dilation(inside, _CROSS, iterations=radius) & ~inside] = label
    else:
        region[inside & ~ndimage.binary_erosion(inside, _CROSS, iterations=radius, border_value=1)] = 0


def _shift(organs: np.ndarray, offset: np.ndarray) -> np.ndarray:
    """``organs`` moved by ``offset`` (dz, dy, dx) voxels: out[p + offset] = organs[p]; uncovered voxels 0."""
    out = np.zeros_like(organs)
    target, source = [], []
    for d, size in zip(offset.tolist(), organs.shape, strict=True):
        kept = max(size - abs(d), 0)
        target.append(slice(max(d, 0), max(d, 0) + kept))
        source.append(slice(max(-d, 0), max(-d, 0) + kept))
    out[tuple(target)] = organs[tuple(source)]
    return out
