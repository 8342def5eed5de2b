"""Where the hard-negative training patches of one case are centred: the voxels of high-uptake organs, and
hot voxels outside the lesions (PET above a high quantile of the case, which needs no organ labels).

Both teach a network what physiological uptake looks like, so that it does not learn to call every bright
spot a lesion, as it does when every patch is centred on one.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

#: Centre candidates kept per organ and for the hot voxels of a case: a uniform subset (fixed per case) when there
#: are more, so that a DataLoader worker holding a thousand whole-body cases keeps ~200 KB per case, not the
#: tens of MB of every voxel index.
MAX_CANDIDATES = 4096


def _subset(flat: np.ndarray) -> np.ndarray:
    """``flat`` (int64 flat indices) as int32-or-int64 indices, at most :data:`MAX_CANDIDATES` of them drawn
    uniformly with a fixed generator (the same in every process)."""
    if len(flat) > MAX_CANDIDATES:
        flat = np.sort(np.random.default_rng(len(flat)).choice(flat, MAX_CANDIDATES, replace=False))
    return flat.astype(np.int32) if len(flat) and flat[-1] < 2**31 else flat


class HardNegatives:
    """The centre candidates of one case (built once per case, by the process that samples): ``pet`` and
    ``label`` (lesion mask) ``(Z, Y, X)``, ``organs`` ``(Z, Y, X)`` organ ids or None.

    ``organ_ids``: organ label ids whose voxels are candidates; a patch picks one of the listed organs
    present in the case uniformly, then one of its voxels, so that a small thyroid is drawn as often as
    the bowel. ``hot_quantile``: voxels whose PET value is at least this quantile of the case's PET values
    (the preprocessed volume, cropped to the body) and that are not lesion voxels are the hot candidates.
    Each set keeps at most :data:`MAX_CANDIDATES` voxels.
    """

    def __init__(self, pet: np.ndarray, label: np.ndarray, organs: np.ndarray | None, organ_ids: Sequence[int],
                 hot_quantile: float):
        self.shape = tuple(label.shape)
        pet = np.asarray(pet)
        #: flat indices of the hot non-lesion voxels.
        self.hot = _subset(np.flatnonzero((pet >= np.quantile(pet, hot_quantile)) & (np.asarray(label) == 0)))
        #: per listed organ present in the case (in id order), flat indices of its voxels.
        self.organ_sets: list[np.ndarray] = []
        if organs is not None and len(organ_ids):
            organs = np.asarray(organs).ravel()
            flat = np.flatnonzero(np.isin(organs, np.asarray(organ_ids)))
            ids = organs[flat]
            self.organ_sets = [_subset(flat[ids == k]) for k in np.unique(ids)]

    @property
    def num_organs(self) -> int:
        """Listed organs present in the case."""
        return len(self.organ_sets)

    def _voxel(self, flat: int) -> np.ndarray:
        return np.asarray(np.unravel_index(int(flat), self.shape))

    def organ_centre(self, rng: np.random.Generator) -> np.ndarray | None:
        """``(3,)`` a voxel (Z, Y, X) of a listed organ drawn as the class docstring says; None when the case
        holds none of them (or has no organ labels)."""
        if not self.organ_sets:
            return None
        voxels = self.organ_sets[int(rng.integers(len(self.organ_sets)))]
        return self._voxel(voxels[int(rng.integers(len(voxels)))])

    def hot_centre(self, rng: np.random.Generator) -> np.ndarray | None:
        """``(3,)`` a hot non-lesion voxel (Z, Y, X) drawn uniformly; None when there is none."""
        if not len(self.hot):
            return None
        return self._voxel(self.hot[int(rng.integers(len(self.hot)))])
