"""Where the hard-negative training patches of one case are centred: the voxels of high-uptake organs, and
hot voxels outside the lesions (PET above a high quantile of the case, which needs no organ labels).

Both teach a network what physiological uptake looks like, so that it does not learn to call every bright
spot a lesion, as it does when every patch is centred on one.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


class HardNegatives:
    """The centre candidates of one case (built once per case, by the process that samples): ``pet`` and
    ``label`` (lesion mask) ``(Z, Y, X)``, ``organs`` ``(Z, Y, X)`` organ ids or None.

    ``organ_ids``: organ label ids whose voxels are candidates; a patch picks one of the listed organs
    present in the case uniformly, then one of its voxels, so that a small thyroid is drawn as often as
    the bowel. ``hot_quantile``: voxels whose PET value is at least this quantile of the case's PET values
    (the preprocessed volume, cropped to the body) and that are not lesion voxels are the hot candidates.
    """

    def __init__(self, pet: np.ndarray, label: np.ndarray, organs: np.ndarray | None, organ_ids: Sequence[int],
                 hot_quantile: float):
        self.shape = tuple(label.shape)
        pet = np.asarray(pet)
        hot = (pet >= np.quantile(pet, hot_quantile)) & (np.asarray(label) == 0)
        #: ``(H,)`` int64 flat indices of the hot non-lesion voxels.
        self.hot = np.flatnonzero(hot)
        self.organ_voxels = np.zeros(0, np.int64)
        self.organ_starts = np.zeros(1, np.int64)
        if organs is not None and len(organ_ids):
            organs = np.asarray(organs).ravel()
            flat = np.flatnonzero(np.isin(organs, np.asarray(organ_ids)))
            ids = organs[flat]
            order = np.argsort(ids, kind="stable")
            #: flat indices of the listed organs' voxels grouped by organ: organ k is
            #: ``organ_voxels[organ_starts[k]:organ_starts[k + 1]]`` (the organs present, in id order).
            self.organ_voxels = flat[order]
            counts = np.unique(ids[order], return_counts=True)[1]
            self.organ_starts = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)

    @property
    def num_organs(self) -> int:
        """Listed organs present in the case."""
        return len(self.organ_starts) - 1

    def _voxel(self, flat: int) -> np.ndarray:
        return np.asarray(np.unravel_index(int(flat), self.shape))

    def organ_centre(self, rng: np.random.Generator) -> np.ndarray | None:
        """``(3,)`` a voxel (Z, Y, X) of a listed organ drawn as the class docstring says; None when the case
        holds none of them (or has no organ labels)."""
        if not self.num_organs:
            return None
        k = int(rng.integers(self.num_organs))
        return self._voxel(self.organ_voxels[int(rng.integers(self.organ_starts[k], self.organ_starts[k + 1]))])

    def hot_centre(self, rng: np.random.Generator) -> np.ndarray | None:
        """``(3,)`` a hot non-lesion voxel (Z, Y, X) drawn uniformly; None when there is none."""
        if not len(self.hot):
            return None
        return self._voxel(self.hot[int(rng.integers(len(self.hot)))])
