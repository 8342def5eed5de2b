"""The per-case body of the phantom: proportions, the depth-to-world mapping, and the paint list.

World axes are RAS+ in mm: +x towards the subject's right, +y anterior, +z
towards the head. The back rests at y = 0, 15 mm above the patient table; the lower edge
of the body (mid-thigh) is at z = 0. Positions are written as depth ``d`` below
the vertex of an average woman and then scaled per case (:class:`Body`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from anatoseg.data.phantom.shapes import Column, Wobble
from anatoseg.data.phantom.tissues import Tissue

KEEP = -1  # organ value meaning "leave the organ map as it is"
BODY_LENGTH_MM = 960.0  # vertex to the lower edge of the field, average woman

# Trunk outline: depth below vertex, half-width (x), half-depth (y), mm.
_TRUNK = np.array([
    [262, 62, 58], [275, 105, 70], [290, 150, 85], [305, 170, 94], [340, 168, 98], [420, 155, 104], [520, 146, 104],
    [600, 136, 100], [700, 150, 104], [780, 172, 108], [860, 168, 100], [905, 150, 90],
])
# Spine: depth, y of the vertebral body centre (lordosis/kyphosis).
_SPINE_Y = np.array([[200, 62], [290, 56], [380, 42], [480, 45], [560, 55], [650, 66], [720, 60],
                     [760, 45], [830, 30]])


@dataclass
class Anatomy:
    """Paint operations ``(shape, tissue, organ id or KEEP)`` in order, landmarks (world mm), uptake sources."""

    ops: list = field(default_factory=list)
    landmarks: dict = field(default_factory=dict)
    bounds: tuple[np.ndarray, np.ndarray] | None = None
    sources: list[tuple[str, str | None, tuple[float, float, float], Tissue]] = field(default_factory=list)
    """Uptake sources that are not lesions: ``(kind, organ name or None, centre (world mm), tissue)``."""
    active: set[Tissue] = field(default_factory=set)
    """Tissues in their active (hot) state in this case (brown fat, premenopausal uterus, ...)."""

    def add(self, shape, tissue: Tissue, organ: int = KEEP) -> None:
        self.ops.append((shape, tissue, organ))

    def source(self, kind: str, organ: str | None, centre, tissue: Tissue) -> None:
        """Record an uptake source (its shape is painted separately)."""
        self.sources.append((kind, organ, tuple(float(c) for c in centre), tissue))


class Body:
    """Per-case proportions and the depth-to-world mapping."""

    def __init__(self, rng: np.random.Generator):
        self.rng = rng
        self.height = rng.uniform(0.92, 1.08)           # scales z
        self.girth = rng.uniform(0.88, 1.18)            # scales the trunk's x and y
        self.fat = rng.uniform(6.0, 16.0) * self.girth ** 3  # subcutaneous fat, mm
        self.top = BODY_LENGTH_MM * self.height         # z of the vertex
        self.organ_scale = 0.5 + 0.5 * self.girth       # lateral organ positions
        trunk = _TRUNK.astype(float).copy()
        trunk[:, 1:] *= self.girth
        trunk[:, 1:] *= rng.uniform(0.96, 1.04, size=(len(trunk), 2))
        self.trunk_rows = trunk

    def z(self, d) -> float:
        """World z of depth ``d`` mm below the vertex."""
        return self.top - np.asarray(d, float) * self.height

    def half_width(self, d) -> float:
        return float(np.interp(d, self.trunk_rows[:, 0], self.trunk_rows[:, 1]))

    def half_depth(self, d) -> float:
        return float(np.interp(d, self.trunk_rows[:, 0], self.trunk_rows[:, 2]))

    def anterior(self, d) -> float:
        """y of the anterior skin surface of the trunk at depth ``d``."""
        return 2.0 * self.half_depth(d)

    def spine_y(self, d) -> float:
        return float(np.interp(d, _SPINE_Y[:, 0], _SPINE_Y[:, 1]))

    def jitter(self, scale: float = 1.0) -> np.ndarray:
        return self.rng.normal(0.0, 6.0 * scale, 3)

    def column(self, rows) -> Column:
        """Column from rows ``(d, half_width, half_depth, centre_x, centre_y)`` (any order of d)."""
        rows = np.asarray(rows, float)
        rows[:, 0] = self.z(rows[:, 0])
        return Column(rows[np.argsort(rows[:, 0])])

    def wobble(self, amplitude: float = 0.06, wavelength: float = 90.0) -> Wobble:
        return Wobble.random(self.rng, amplitude, wavelength)
