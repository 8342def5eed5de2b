"""Axis-aligned voxel grids in world mm (RAS+), and their sub-blocks."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Grid:
    """An axis-aligned grid: voxel ``(i, j, k)`` has its centre at ``origin + (i, j, k) * spacing`` (mm).

    ``shape``: ``(X, Y, Z)`` voxels; ``spacing``, ``origin``: mm, RAS+ world axes.
    """

    shape: tuple[int, int, int]
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float]

    @classmethod
    def covering(cls, lo, hi, spacing) -> Grid:
        """The grid with voxel 0 centred at ``lo`` whose voxel centres reach at least ``hi`` (mm)."""
        lo, hi, spacing = (np.asarray(v, float) for v in (lo, hi, spacing))
        shape = np.floor((hi - lo) / spacing + 1e-6).astype(int) + 1
        return cls(tuple(int(n) for n in shape), tuple(float(s) for s in spacing), tuple(float(v) for v in lo))

    @property
    def affine(self) -> np.ndarray:
        """``(4, 4)`` voxel index -> world mm."""
        affine = np.diag([*self.spacing, 1.0])
        affine[:3, 3] = self.origin
        return affine

    def axis(self, a: int) -> np.ndarray:
        """World coordinates (mm, float32) of the voxel centres along axis ``a``."""
        return (self.origin[a] + self.spacing[a] * np.arange(self.shape[a])).astype(np.float32)

    def block(self, lo, hi) -> tuple[tuple[slice, slice, slice], tuple[np.ndarray, np.ndarray, np.ndarray]] | None:
        """Sub-block of voxels whose centres lie in the world box [lo, hi].

        Returns (slices, (x, y, z)) with the coordinates shaped ``(nx, 1, 1)``,
        ``(1, ny, 1)``, ``(1, 1, nz)`` for broadcasting, or None if the box misses the grid.
        """
        slices, coords = [], []
        for a in range(3):
            start = max(0, int(np.ceil((lo[a] - self.origin[a]) / self.spacing[a] - 1e-6)))
            stop = min(self.shape[a], int(np.floor((hi[a] - self.origin[a]) / self.spacing[a] + 1e-6)) + 1)
            if stop <= start:
                return None
            slices.append(slice(start, stop))
            shape = [1, 1, 1]
            shape[a] = stop - start
            coords.append(self.axis(a)[start:stop].reshape(shape))
        return tuple(slices), tuple(coords)

    def index_of(self, point) -> tuple[int, int, int]:
        """Index of the voxel containing world ``point`` (clamped to the grid)."""
        idx = np.round((np.asarray(point, float) - self.origin) / self.spacing).astype(int)
        return tuple(int(np.clip(i, 0, n - 1)) for i, n in zip(idx, self.shape))
