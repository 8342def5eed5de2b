"""Connected components of lesion masks with autoPET's 18-connectivity.

18-connectivity joins voxels that share a face or an edge, but not voxels that
touch only at a corner (26-connectivity would join those too).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

CONNECTIVITY_18 = ndimage.generate_binary_structure(3, 2)
"""3×3×3 structuring element of 18-connectivity (faces and edges, no corners)."""


def components(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """Label the 18-connected components of a boolean ``(Z, Y, X)`` mask: (int32 labels, count)."""
    labels, n = ndimage.label(np.asarray(mask, dtype=bool), structure=CONNECTIVITY_18)
    return labels.astype(np.int32, copy=False), int(n)


def component_sizes(labels: np.ndarray, n: int) -> np.ndarray:
    """Voxel count of each component 1..n, shape ``(n,)``."""
    return np.bincount(labels.ravel(), minlength=n + 1)[1:]


def touched(labels: np.ndarray, n: int, other: np.ndarray) -> np.ndarray:
    """Boolean ``(n,)``: does component k (1..n) share at least one voxel with mask ``other``?"""
    return np.bincount(labels[np.asarray(other, dtype=bool)], minlength=n + 1)[1:] > 0
