"""Breast-cancer lesions for the phantom: primaries, nodal, bone, liver and lung metastases.

Sites and their ranges (diameter mm, SUV):

=====================  ==========  =========  ===========================================
site                   diameter    SUV        placed
=====================  ==========  =========  ===========================================
breast                 8-40        2-15       in the glandular tissue of a breast
axillary_node          5-25        1.5-12     in the axillary fat
mediastinal_node       5-25        2.5-12     at a mediastinal nodal station
bone                   5-30        3-12       in bone marrow (spine, pelvis, femora, ...)
liver                  5-40        3.5-12     in the liver
lung                   3-20        1.5-10     in a lung
pelvic_node (hard)     5-15        2-6        just outside the bladder wall
paracardiac_node (h.)  5-15        2.5-8      just outside the heart
=====================  ==========  =========  ===========================================

A lesion is *hard* with probability 0.3: small (3-6 mm) or low contrast
(1.3-1.8 times its host's SUV); about one positive case in four also gets a
pelvic or paracardiac node next to the bladder or heart. Lesions larger than
25 mm get a necrotic core with less uptake. Every lesion is hotter than the
tissue it sits in (``suv > host_suv``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from anatoseg.data.labels import ORGAN_IDS
from anatoseg.data.phantom.anatomy import Anatomy
from anatoseg.data.phantom.grid import Grid
from anatoseg.data.phantom.shapes import Ellipsoid, Wobble, rotation
from anatoseg.data.phantom.tissues import Tissue

_SITES = {  # diameter range mm, SUV range
    "breast": ((8.0, 40.0), (2.0, 15.0)),
    "axillary_node": ((5.0, 25.0), (1.5, 12.0)),
    "mediastinal_node": ((5.0, 25.0), (2.5, 12.0)),
    "bone": ((5.0, 30.0), (3.0, 12.0)),
    "liver": ((5.0, 40.0), (3.5, 12.0)),
    "lung": ((3.0, 20.0), (1.5, 10.0)),
    "pelvic_node": ((5.0, 15.0), (2.0, 6.0)),
    "paracardiac_node": ((5.0, 15.0), (2.5, 8.0)),
}
_METASTASIS_SITES = ("axillary_node", "mediastinal_node", "bone", "liver", "lung")
_METASTASIS_WEIGHTS = (0.35, 0.15, 0.2, 0.15, 0.15)
_HOST_TISSUE = {"breast": Tissue.BREAST_GLAND, "bone": Tissue.MARROW, "liver": Tissue.LIVER, "lung": Tissue.LUNG}


@dataclass(frozen=True)
class Lesion:
    """One lesion: its shape (world mm), uptake, CT value and where it sits.

    ``suv``: SUV of viable tumour; ``core``/``core_suv``: optional necrotic core;
    ``hu``: CT value; ``host_suv``: SUV of the tissue around it; ``hard``: None,
    ``"small"``, ``"low_contrast"`` or ``"near_bladder"``/``"near_heart"``.
    """

    site: str
    shape: Ellipsoid
    suv: float
    hu: float
    host_suv: float
    hard: str | None = None
    core: Ellipsoid | None = None
    core_suv: float = 0.0

    @property
    def diameter_mm(self) -> float:
        return 2.0 * float(np.mean(self.shape.radii))

    def info(self) -> dict:
        """JSON-ready description (written into the manifest)."""
        return {"site": self.site, "centre_mm": [round(float(c), 1) for c in self.shape.centre],
                "diameter_mm": round(self.diameter_mm, 1), "suv": round(self.suv, 2),
                "host_suv": round(self.host_suv, 2), "hard": self.hard}


def _sample_voxel(rng: np.random.Generator, grid: Grid, mask: np.ndarray) -> np.ndarray | None:
    """World position (mm) of a random voxel of ``mask``, or None if it is empty."""
    flat = np.flatnonzero(mask)
    if flat.size == 0:
        return None
    index = np.unravel_index(flat[rng.integers(flat.size)], grid.shape)
    return np.asarray(grid.origin) + np.asarray(index) * np.asarray(grid.spacing)


def _just_outside(shape: Ellipsoid, direction: np.ndarray, gap: float) -> np.ndarray:
    """Point ``gap`` mm beyond the surface of ``shape`` along ``direction`` from its centre."""
    centre = np.asarray(shape.centre)
    direction = direction / np.linalg.norm(direction)
    t = 0.0
    while shape.contains(*(centre + (t + 1.0) * direction)):
        t += 1.0
    return centre + (t + gap) * direction


class _Placer:
    def __init__(self, rng, anatomy: Anatomy, grid: Grid, tissue, organs, suv_table, hu_table, domain):
        self.rng, self.anatomy, self.grid = rng, anatomy, grid
        self.tissue, self.organs = tissue, organs
        self.suv_table, self.hu_table, self.domain = suv_table, hu_table, domain
        self.placed: list[Lesion] = []

    def host_suv(self, centre) -> float:
        return float(self.suv_table[int(self.tissue[self.grid.index_of(centre)])])

    def centre(self, site: str, radius: float) -> np.ndarray | None:
        rng, marks = self.rng, self.anatomy.landmarks
        if site in _HOST_TISSUE:
            mask = self.tissue == _HOST_TISSUE[site]
            if site == "bone":
                mask &= self.organs == ORGAN_IDS["skeleton"]
            return _sample_voxel(rng, self.grid, mask)
        if site == "axillary_node":
            base = marks["axilla"][rng.integers(len(marks["axilla"]))]
            return np.asarray(base) + rng.uniform(-1, 1, 3) * np.array([12.0, 22.0, 28.0])
        if site == "mediastinal_node":
            base = marks["mediastinum"][rng.integers(len(marks["mediastinum"]))]
            return np.asarray(base) + rng.uniform(-1, 1, 3) * 6.0
        if site == "pelvic_node":
            direction = np.array([rng.choice([-1.0, 1.0]), rng.uniform(-0.6, 0.2), rng.uniform(-0.3, 0.3)])
            return _just_outside(marks["bladder"], direction, radius + 3.0)
        if site == "paracardiac_node":
            direction = np.array([rng.uniform(0.3, 1.0), rng.uniform(-0.2, 1.0), rng.uniform(-0.4, 0.1)])
            return _just_outside(marks["heart"], direction, radius + 3.0)
        raise ValueError(f"unknown lesion site {site!r}")

    def lesion_hu(self, site: str) -> float:
        diagnostic = self.domain == "diagnostic"
        if site == "bone":
            return 650.0 if self.rng.random() < 0.5 else 45.0
        if site == "liver":
            return float(self.hu_table[Tissue.LIVER]) - (45.0 if diagnostic else 15.0)
        if site == "breast":
            return 60.0 if diagnostic else 40.0
        return 70.0 if diagnostic else 40.0

    def place(self, site: str, hard: str | None) -> Lesion | None:
        rng = self.rng
        (d_lo, d_hi), (s_lo, s_hi) = _SITES[site]
        diameter = rng.uniform(3.0, 6.0) if hard == "small" else float(np.exp(rng.uniform(np.log(d_lo), np.log(d_hi))))
        radius = diameter / 2
        for _ in range(10):
            centre = self.centre(site, radius)
            if centre is None:
                return None
            if all(np.linalg.norm(centre - np.asarray(p.shape.centre)) > radius + p.diameter_mm / 2 + 2.0
                   for p in self.placed):
                break
        else:
            return None
        host_suv = self.host_suv(centre)
        if hard == "low_contrast":
            suv = max(host_suv * rng.uniform(1.3, 1.8), host_suv + 0.3)
        else:
            suv = max(rng.uniform(s_lo, s_hi), host_suv * 1.5 + 0.2)
        radii = tuple(radius * rng.uniform(0.8, 1.2, 3))
        wobble = Wobble.random(rng, 0.1, diameter * 1.5) if diameter > 10 else None
        shape = Ellipsoid(tuple(float(c) for c in centre), radii, rotation(*rng.uniform(0, 180, 3)), wobble)
        core, core_suv = None, 0.0
        if diameter > 25:
            core, core_suv = shape.scaled(0.45), max(0.35 * suv, host_suv * 1.1)
        lesion = Lesion(site=site, shape=shape, suv=float(suv), hu=self.lesion_hu(site),
                        host_suv=host_suv, hard=hard, core=core, core_suv=float(core_suv))
        self.placed.append(lesion)
        return lesion


def place_lesions(rng: np.random.Generator, anatomy: Anatomy, grid: Grid, tissue: np.ndarray, organs: np.ndarray,
                  suv_table: np.ndarray, hu_table: np.ndarray, domain: str) -> list[Lesion]:
    """Lesions of one positive case (at least one). ``tissue``/``organs``: the anatomy painted on ``grid``."""
    placer = _Placer(rng, anatomy, grid, tissue, organs, suv_table, hu_table, domain)
    plan = []
    if rng.random() < 0.85:
        plan.append("breast")
    n_metastases = int(rng.poisson(2.0)) + (0 if plan else 1)
    plan += [str(site) for site in rng.choice(_METASTASIS_SITES, size=n_metastases, p=_METASTASIS_WEIGHTS)]
    if rng.random() < 0.25:
        plan.append(str(rng.choice(["pelvic_node", "paracardiac_node"])))
    for site in plan[:10]:
        if site in ("pelvic_node", "paracardiac_node"):
            hard = "near_bladder" if site == "pelvic_node" else "near_heart"
        else:
            draw = rng.random()
            hard = "small" if draw < 0.15 else "low_contrast" if draw < 0.3 else None
        placer.place(site, hard)
    if not placer.placed:  # every positive case has a lesion; a breast primary always fits
        placer.place("breast", None)
    return placer.placed
