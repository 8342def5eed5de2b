"""Analytic solid shapes in world mm, evaluated on grid sub-blocks.

Every shape has world bounds ``lo``/``hi`` (mm, shape ``(3,)``) and
``contains(x, y, z)``, where ``x``, ``y``, ``z`` are broadcastable coordinate
arrays (``(nx, 1, 1)``, ``(1, ny, 1)``, ``(1, 1, nz)``) and the result is a
boolean ``(nx, ny, nz)`` array. Shapes are painted only inside their bounds,
so small organs cost little on a large grid.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from anatoseg.data.phantom.grid import Grid


@dataclass(frozen=True)
class Wobble:
    """A smooth random surface perturbation: ``sum_i amp_i * sin(k_i . d + phase_i)`` (relative radius change).

    ``k``: ``(n, 3)`` wave vectors in rad/mm; ``phase``, ``amp``: ``(n,)``.
    """

    k: np.ndarray
    phase: np.ndarray
    amp: np.ndarray

    @classmethod
    def random(cls, rng: np.random.Generator, amplitude: float, wavelength_mm: float, n: int = 3) -> Wobble:
        directions = rng.normal(size=(n, 3))
        directions /= np.linalg.norm(directions, axis=1, keepdims=True)
        k = directions * (2 * np.pi / (wavelength_mm * rng.uniform(0.7, 1.4, size=(n, 1))))
        return cls(k=k, phase=rng.uniform(0, 2 * np.pi, n), amp=amplitude * rng.uniform(0.5, 1.0, n) / np.sqrt(n))

    @property
    def bound(self) -> float:
        return float(np.abs(self.amp).sum())

    def __call__(self, dx, dy, dz):
        total = 0.0
        for (kx, ky, kz), phase, amp in zip(self.k, self.phase, self.amp):
            total = total + amp * np.sin(kx * dx + ky * dy + kz * dz + phase)
        return total


def rotation(rx: float = 0.0, ry: float = 0.0, rz: float = 0.0) -> np.ndarray:
    """Rotation matrix ``(3, 3)`` from angles in degrees about x, then y, then z."""
    ax, ay, az = np.radians([rx, ry, rz])
    rot_x = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    rot_y = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rot_z = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    return rot_z @ rot_y @ rot_x


@dataclass(frozen=True)
class Ellipsoid:
    """Ellipsoid with semi-axes ``radii`` (mm) along the columns of ``rot``, centred at ``centre`` (mm)."""

    centre: tuple[float, float, float]
    radii: tuple[float, float, float]
    rot: np.ndarray = field(default_factory=lambda: np.eye(3))
    wobble: Wobble | None = None

    @property
    def lo(self) -> np.ndarray:
        return np.asarray(self.centre) - self._extent()

    @property
    def hi(self) -> np.ndarray:
        return np.asarray(self.centre) + self._extent()

    def _extent(self) -> np.ndarray:
        grow = 1.0 + (self.wobble.bound if self.wobble else 0.0)
        return np.sqrt(((np.asarray(self.rot) * np.asarray(self.radii)) ** 2).sum(axis=1)) * grow

    def scaled(self, factor: float) -> Ellipsoid:
        """The same ellipsoid with all radii multiplied by ``factor`` (same wobble)."""
        return Ellipsoid(self.centre, tuple(r * factor for r in self.radii), self.rot, self.wobble)

    def contains(self, x, y, z):
        d = (x - self.centre[0], y - self.centre[1], z - self.centre[2])
        s = 0.0
        for j in range(3):
            u = self.rot[0, j] * d[0] + self.rot[1, j] * d[1] + self.rot[2, j] * d[2]
            s = s + (u / self.radii[j]) ** 2
        if self.wobble is None:
            return s < 1.0
        return s < (1.0 + self.wobble(*d)) ** 2


@dataclass(frozen=True)
class Capsule:
    """Points within ``radius`` mm of the segment ``p0``-``p1`` (mm)."""

    p0: tuple[float, float, float]
    p1: tuple[float, float, float]
    radius: float

    @property
    def lo(self) -> np.ndarray:
        return np.minimum(self.p0, self.p1) - self.radius

    @property
    def hi(self) -> np.ndarray:
        return np.maximum(self.p0, self.p1) + self.radius

    def contains(self, x, y, z):
        d = np.subtract(self.p1, self.p0)
        px, py, pz = x - self.p0[0], y - self.p0[1], z - self.p0[2]
        t = np.clip((px * d[0] + py * d[1] + pz * d[2]) / max(float(d @ d), 1e-9), 0.0, 1.0)
        return (px - t * d[0]) ** 2 + (py - t * d[1]) ** 2 + (pz - t * d[2]) ** 2 < self.radius ** 2


@dataclass(frozen=True)
class Column:
    """A solid around the z axis with elliptical cross-sections that vary with z.

    ``profile``: ``(n, 5)`` control rows ``(z, half_width_x, half_depth_y, centre_x, centre_y)``
    in mm with increasing z, linearly interpolated; the solid spans the first to
    the last z. ``shrink`` (mm) takes that much off both half-axes (for inner layers).
    """

    profile: np.ndarray
    shrink: float = 0.0

    @property
    def lo(self) -> np.ndarray:
        p = self.profile
        return np.array([(p[:, 3] - p[:, 1]).min(), (p[:, 4] - p[:, 2]).min(), p[0, 0]])

    @property
    def hi(self) -> np.ndarray:
        p = self.profile
        return np.array([(p[:, 3] + p[:, 1]).max(), (p[:, 4] + p[:, 2]).max(), p[-1, 0]])

    def inner(self, shrink: float) -> Column:
        return Column(self.profile, self.shrink + shrink)

    def at(self, z) -> tuple[np.ndarray, ...]:
        """(half_width, half_depth, centre_x, centre_y) at heights ``z`` (after ``shrink``)."""
        zs = self.profile[:, 0]
        a, b, cx, cy = (np.interp(z, zs, self.profile[:, c]).astype(np.float32) for c in (1, 2, 3, 4))
        return np.maximum(a - self.shrink, 1e-3), np.maximum(b - self.shrink, 1e-3), cx, cy

    def contains(self, x, y, z):
        a, b, cx, cy = self.at(z)
        inside_z = (z >= self.profile[0, 0]) & (z <= self.profile[-1, 0])
        return (((x - cx) / a) ** 2 + ((y - cy) / b) ** 2 < 1.0) & inside_z


@dataclass(frozen=True)
class Subtract:
    """Points inside ``a`` but not inside ``b`` (bounded by ``a``)."""

    a: object
    b: object

    @property
    def lo(self) -> np.ndarray:
        return self.a.lo

    @property
    def hi(self) -> np.ndarray:
        return self.a.hi

    def contains(self, x, y, z):
        inside = self.a.contains(x, y, z)
        axes = _axis_coordinates(x, y, z)
        if axes is None:
            return inside & ~self.b.contains(x, y, z)
        # On a block, ``b`` is evaluated only where its bounds overlap (a small organ cut out of a large one).
        window = tuple(np.flatnonzero((c >= lo) & (c <= hi)) for c, lo, hi in zip(axes, self.b.lo, self.b.hi))
        if any(w.size == 0 for w in window):
            return inside
        sub = tuple(slice(int(w[0]), int(w[-1]) + 1) for w in window)
        inside = np.array(np.broadcast_to(inside, tuple(c.size for c in axes)))
        inside[sub] &= ~self.b.contains(x[sub[0]], y[:, sub[1]], z[:, :, sub[2]])
        return inside


def _axis_coordinates(x, y, z):
    """The 1-D coordinates of block coordinates shaped ``(nx, 1, 1)``, ``(1, ny, 1)``, ``(1, 1, nz)``, else None."""
    if not all(isinstance(c, np.ndarray) and c.ndim == 3 for c in (x, y, z)):
        return None
    if x.shape[1:] != (1, 1) or y.shape[::2] != (1, 1) or z.shape[:2] != (1, 1):
        return None
    return x.ravel(), y.ravel(), z.ravel()


@dataclass(frozen=True)
class Intersect(Subtract):
    """Points inside both ``a`` and ``b`` (bounded by both)."""

    @property
    def lo(self) -> np.ndarray:
        return np.maximum(self.a.lo, self.b.lo)

    @property
    def hi(self) -> np.ndarray:
        return np.minimum(self.a.hi, self.b.hi)

    def contains(self, x, y, z):
        return self.a.contains(x, y, z) & self.b.contains(x, y, z)


def paint(grid: Grid, shape, targets: list[tuple[np.ndarray, int]], *, where=None) -> None:
    """Set ``array[inside shape] = value`` for each ``(array, value)`` in ``targets`` (arrays on ``grid``).

    A negative value leaves that array unchanged. ``where(block_slices)`` may
    return an extra boolean mask restricting the painted voxels.
    """
    found = grid.block(shape.lo, shape.hi)
    if found is None:
        return
    slices, (x, y, z) = found
    mask = np.broadcast_to(shape.contains(x, y, z), tuple(s.stop - s.start for s in slices))
    if where is not None:
        mask = mask & where(slices)
    for array, value in targets:
        if value >= 0:
            array[slices][mask] = value


def fraction(grid: Grid, shape, supersample: int = 3) -> tuple[tuple[slice, slice, slice], np.ndarray] | None:
    """Fraction of each voxel's volume inside ``shape`` (``supersample``³ points per voxel).

    Returns (block slices, float32 fractions of the block's shape) or None when
    the shape misses the grid. The block is widened by one voxel so partial
    voxels at the edge are counted.
    """
    pad = np.asarray(grid.spacing)
    found = grid.block(shape.lo - pad, shape.hi + pad)
    if found is None:
        return None
    slices, (x, y, z) = found
    offsets = (np.arange(supersample) + 0.5) / supersample - 0.5
    total = np.zeros(tuple(s.stop - s.start for s in slices), dtype=np.float32)
    for ox in offsets * grid.spacing[0]:
        for oy in offsets * grid.spacing[1]:
            for oz in offsets * grid.spacing[2]:
                total += shape.contains(x + ox, y + oy, z + oz)
    return slices, total / supersample ** 3
