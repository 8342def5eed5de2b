"""PET–CT misregistration of the phantom: a small rigid shift plus a breathing-like deformation of the PET.

A CT is a snapshot of one breathing phase; a PET is averaged over minutes of breathing, and the
patient may move a little between the two scans. The PET here shows the body displaced by

    u(p) = shift + e_z * breathing * profile(z) * w(x, y)

relative to the CT: a rigid ``shift`` (world x, y, z mm; normal, sd 1.5 mm, within ±4 mm per
axis) and a cranio-caudal displacement ``breathing`` (±4-12 mm) whose ``profile`` is 0 at the
lung apices, grows linearly to 1 at the diaphragm, stays 1 through the upper abdomen (liver,
spleen, kidneys) and falls to 0 in the pelvis; ``w`` keeps the arms and the back (the table side)
still. All sizes are multiplied by the generator's ``misregistration`` scale (0: none).

The PET activity and the lesion mask (autoPET draws SEG on the PET) follow the PET; the CT and the
organ map (a CT model's output) stay in the CT frame.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from anatoseg.data.phantom.grid import Grid

_RAMP_MM = 20.0  # width of the lateral and posterior edges of the moving region


@dataclass(frozen=True)
class Misregistration:
    """The PET's displacement field (module docstring). ``z_profile``: world z (mm), increasing, where the
    breathing weight is 0, reaches 1, leaves 1 and is 0 again; ``half_width_mm``: |x| beyond which nothing
    moves; ``back_y_mm``: y below which (towards the back) nothing moves."""

    shift_mm: tuple[float, float, float]
    breathing_mm: float
    z_profile: tuple[float, float, float, float]
    half_width_mm: float
    back_y_mm: float

    @property
    def active(self) -> bool:
        return bool(np.any(self.shift_mm) or self.breathing_mm)

    def weight(self, x, y):
        """Share of the breathing displacement at world ``x``, ``y`` (broadcasting arrays), in [0, 1]."""
        return (np.clip((self.half_width_mm - np.abs(x)) / _RAMP_MM, 0.0, 1.0)
                * np.clip((y - self.back_y_mm) / _RAMP_MM, 0.0, 1.0))

    def breathing(self, x, y, z):
        """Cranio-caudal displacement (mm) of the PET at world point(s) ``(x, y, z)`` of the PET frame."""
        profile = np.interp(z, self.z_profile, [0.0, 1.0, 1.0, 0.0])
        return self.breathing_mm * profile * self.weight(x, y)

    def to_pet(self, point) -> np.ndarray:
        """World position in the PET of a CT-frame point ``(x, y, z)`` mm (solves p = c + u(p))."""
        p = np.asarray(point, dtype=np.float64) + np.asarray(self.shift_mm)
        z = p[2]
        for _ in range(8):  # a contraction: the profile's slope is far below 1
            z = p[2] + self.breathing(p[0], p[1], z)
        return np.array([p[0], p[1], z])

    def source_grid(self, pet: Grid) -> Grid:
        """The PET grid moved back by the rigid shift: sample the CT frame on it, then :meth:`warp`."""
        return Grid(pet.shape, pet.spacing, tuple(float(o - s) for o, s in zip(pet.origin, self.shift_mm)))

    def warp(self, volume: np.ndarray, pet: Grid, *, nearest: bool = False) -> np.ndarray:
        """Apply the breathing displacement to ``volume`` ``(X, Y, Z)`` sampled on :meth:`source_grid`:
        ``out[p] = volume[p - breathing(p)]`` along z, linear (or ``nearest``), edges clamped. Only the
        block of columns and slices that moves is computed."""
        x, y, z = (pet.axis(a) for a in range(3))
        weight = self.weight(x[:, None], y[None, :])                              # (X, Y)
        profile = np.interp(z, self.z_profile, [0.0, 1.0, 1.0, 0.0]) * self.breathing_mm / pet.spacing[2]
        columns, slices = np.flatnonzero(weight.any(axis=1)), np.flatnonzero(profile)
        if not self.breathing_mm or not columns.size or not slices.size:
            return volume
        rows = np.flatnonzero(weight.any(axis=0))
        block = (slice(columns[0], columns[-1] + 1), slice(rows[0], rows[-1] + 1), slice(slices[0], slices[-1] + 1))
        source = (np.arange(pet.shape[2], dtype=np.float32)[block[2]]
                  - weight[block[:2]][:, :, None] * profile[block[2]].astype(np.float32))
        np.clip(source, 0, pet.shape[2] - 1, out=source)
        stack = volume[block[:2]]                                                 # all slices of the moving columns
        out = volume.copy()
        if nearest:
            out[block] = np.take_along_axis(stack, np.rint(source).astype(np.intp), axis=2)
            return out
        low = source.astype(np.intp)                                              # floor: source >= 0
        frac = (source - low).astype(volume.dtype)
        below = np.take_along_axis(stack, low, axis=2)
        out[block] = below + frac * (np.take_along_axis(stack, np.minimum(low + 1, pet.shape[2] - 1), axis=2)
                                     - below)
        return out

    def params(self) -> dict:
        """JSON-ready record (world mm)."""
        return {"shift_xyz_mm": [round(float(v), 2) for v in self.shift_mm],
                "breathing_mm": round(float(self.breathing_mm), 2),
                "breathing_z_mm": [round(float(v), 1) for v in self.z_profile],
                "half_width_mm": round(float(self.half_width_mm), 1), "back_y_mm": float(self.back_y_mm)}


def draw_misregistration(rng: np.random.Generator, landmarks: dict, scale: float = 1.0) -> Misregistration:
    """A random misregistration for the body of ``landmarks`` (``body`` and ``breathing`` entries), sizes
    times ``scale`` (0 gives none; the same random numbers are drawn either way)."""
    if not (np.isfinite(scale) and scale >= 0):
        raise ValueError(f"misregistration scale must be a finite number >= 0, got {scale!r}")
    shift = np.clip(rng.normal(0.0, 1.5, 3), -4.0, 4.0) * scale
    breathing = float(rng.choice([-1.0, 1.0]) * rng.uniform(4.0, 12.0)) * scale
    frame = landmarks["breathing"]
    return Misregistration(shift_mm=tuple(float(v) + 0.0 for v in shift), breathing_mm=breathing + 0.0,
                           z_profile=tuple(frame["z_profile"]), half_width_mm=frame["half_width_mm"],
                           back_y_mm=frame["back_y_mm"])
