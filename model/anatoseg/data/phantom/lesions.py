"""Breast-cancer lesions for the phantom: primaries, nodal, bone, liver, lung, brain and pleural metastases.

Sites and their ranges (diameter mm, SUV):

=======================  ========  ========  ================================================================
site                     diameter  SUV       placed
=======================  ========  ========  ================================================================
breast                   8-40      2-15      in the glandular tissue of a breast
axillary_node            5-25      1.5-12    in the axillary fat
mediastinal_node         5-25      2.5-12    at a mediastinal nodal station
internal_mammary_node    5-15      2-10      beside the sternum, behind the chest wall
supraclavicular_node     5-20      2-12      above a clavicle, where supraclavicular brown fat sits
bone                     5-30      3-12      in bone marrow (spine, pelvis, femora, ...)
liver                    5-40      3.5-12    in the liver
lung                     3-20      1.5-10    in a lung
pleural                  5-25      2-10      on the lung surface against the chest wall
brain                    5-25      8-20      in the brain (hard tag ``in_brain``)
adrenal                  10-35     3-12      above and medial to a kidney, touching it (``near_kidney``)
vertebral                24-40     3-12      in a vertebra (body or processes), reaching the aorta (p 0.5)
                                             or a kidney, often through the psoas (``near_aorta``/``near_kidney``)
bone_diffuse             4-9       3-8       8-20 small marrow lesions (diffuse bone disease)
pelvic_node (hard)       5-15      2-6       just outside the bladder wall (``near_bladder``)
paracardiac_node (hard)  5-15      2.5-8     just outside the heart (``near_heart``)
=======================  ========  ========  ================================================================

Per positive case (:func:`plan_lesions`): a breast primary with probability 0.85;
Poisson(2) metastases (one more without a primary) at the sites and weights of
:data:`METASTASIS_WEIGHTS` (brain 0.04, so about 8 % of cases have one); an adrenal
metastasis with probability :data:`P_ADRENAL` (0.15), a vertebral one touching a
kidney or the aorta with :data:`P_VERTEBRAL` (0.15), a pelvic or paracardiac node
with 0.25, and diffuse bone disease with :data:`P_DIFFUSE_BONE` (0.08). Other
lesions are *hard* with probability 0.3: small (3-6 mm) or low contrast (1.3-1.8
times the host's SUV). Lesions larger than 25 mm get a necrotic core with less
uptake. Every lesion is hotter than the tissue it sits in (``suv > host_suv``);
a lymph node lies mostly outside every organ but brown fat.
Where a lesion sits relative to the organs is measured on the organ map, not
declared (:mod:`.records`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from anatoseg.data.labels import ORGAN_IDS
from anatoseg.data.phantom.body import Anatomy
from anatoseg.data.phantom.grid import Grid
from anatoseg.data.phantom.shapes import Ellipsoid, Wobble, rotation
from anatoseg.data.phantom.tissues import Tissue

_SITES = {  # diameter range mm, SUV range
    "breast": ((8.0, 40.0), (2.0, 15.0)),
    "axillary_node": ((5.0, 25.0), (1.5, 12.0)),
    "mediastinal_node": ((5.0, 25.0), (2.5, 12.0)),
    "internal_mammary_node": ((5.0, 15.0), (2.0, 10.0)),
    "supraclavicular_node": ((5.0, 20.0), (2.0, 12.0)),
    "bone": ((5.0, 30.0), (3.0, 12.0)),
    "liver": ((5.0, 40.0), (3.5, 12.0)),
    "lung": ((3.0, 20.0), (1.5, 10.0)),
    "pleural": ((5.0, 25.0), (2.0, 10.0)),
    "brain": ((5.0, 25.0), (8.0, 20.0)),
    "adrenal": ((10.0, 35.0), (3.0, 12.0)),
    "vertebral": ((24.0, 40.0), (3.0, 12.0)),
    "bone_diffuse": ((4.0, 9.0), (3.0, 8.0)),
    "pelvic_node": ((5.0, 15.0), (2.0, 6.0)),
    "paracardiac_node": ((5.0, 15.0), (2.5, 8.0)),
}
METASTASIS_WEIGHTS = {"axillary_node": 0.28, "mediastinal_node": 0.10, "internal_mammary_node": 0.08,
                      "supraclavicular_node": 0.08, "bone": 0.15, "liver": 0.12, "lung": 0.10, "pleural": 0.05,
                      "brain": 0.04}
"""Site -> probability of each of a case's Poisson(2) metastases."""
P_PRIMARY, P_ADRENAL, P_VERTEBRAL, P_HARD_NODE, P_DIFFUSE_BONE = 0.85, 0.15, 0.15, 0.25, 0.08
_HOST_TISSUE = {"breast": Tissue.BREAST_GLAND, "bone": Tissue.MARROW, "bone_diffuse": Tissue.MARROW,
                "liver": Tissue.LIVER, "lung": Tissue.LUNG, "brain": Tissue.BRAIN}
_NODE_ORGANS = (0, ORGAN_IDS["brown_fat"])  # what a lymph node's centre may lie in
_FIXED_HARD = {"pelvic_node": "near_bladder", "paracardiac_node": "near_heart", "brain": "in_brain",
               "bone_diffuse": None}


@dataclass(frozen=True)
class Lesion:
    """One lesion: its shape (world mm, CT frame), uptake, CT value and where it sits.

    ``suv``: SUV of viable tumour; ``core``/``core_suv``: optional necrotic core;
    ``hu``: CT value; ``host_suv``: SUV of the tissue around it; ``hard``: None or a
    reason (``"small"``, ``"low_contrast"``, ``"near_bladder"``, ``"near_kidney"``, ...).
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
        """JSON-ready description (the manifest adds the measured fields of :mod:`.records`)."""
        return {"site": self.site, "centre_mm": [round(float(c), 1) for c in self.shape.centre],
                "diameter_mm": round(self.diameter_mm, 1), "suv": round(self.suv, 2),
                "host_suv": round(self.host_suv, 2), "contrast": round(self.suv / max(self.host_suv, 1e-3), 2),
                "hard": self.hard}


def plan_lesions(rng: np.random.Generator) -> list[tuple[str, str | None]]:
    """The ``(site, hard tag)`` list of one positive case, before placement (rates in the module docstring)."""
    plan = ["breast"] if rng.random() < P_PRIMARY else []
    n_metastases = int(rng.poisson(2.0)) + (0 if plan else 1)
    plan += [str(site) for site in rng.choice(list(METASTASIS_WEIGHTS), size=n_metastases,
                                              p=list(METASTASIS_WEIGHTS.values()))]
    plan = plan[:8]
    for site, p in (("adrenal", P_ADRENAL), ("vertebral", P_VERTEBRAL)):
        if rng.random() < p:
            plan.append(site)
    if rng.random() < P_HARD_NODE:
        plan.append(str(rng.choice(["pelvic_node", "paracardiac_node"])))
    if rng.random() < P_DIFFUSE_BONE:
        plan += ["bone_diffuse"] * int(rng.integers(8, 21))
    out = []
    for site in plan:
        draw = rng.random()
        hard = _FIXED_HARD[site] if site in _FIXED_HARD else (
            "small" if draw < 0.15 else "low_contrast" if draw < 0.3 else None)
        out.append((site, hard))
    return out


def _sample_voxel(rng: np.random.Generator, grid: Grid, flat: np.ndarray, shape, offset=(0, 0, 0)) -> np.ndarray | None:
    """World position (mm) of a random one of the voxels ``flat`` (flat indices into a block of ``shape``
    starting at voxel ``offset`` of ``grid``), or None if there are none."""
    if flat.size == 0:
        return None
    index = np.asarray(np.unravel_index(flat[rng.integers(flat.size)], shape)) + np.asarray(offset)
    return np.asarray(grid.origin) + index * np.asarray(grid.spacing)


def _just_outside(shape: Ellipsoid, direction: np.ndarray, gap: float) -> np.ndarray:
    """Point ``gap`` mm beyond the surface of ``shape`` along ``direction`` from its centre."""
    centre = np.asarray(shape.centre)
    direction = direction / np.linalg.norm(direction)
    t = 0.0
    while shape.contains(*(centre + (t + 1.0) * direction)):
        t += 1.0
    return centre + (t + gap) * direction


class LesionPlacer:
    """Places lesions one at a time in a painted anatomy, never overlapping the ones already placed."""

    def __init__(self, rng, anatomy: Anatomy, grid: Grid, tissue, organs, suv_table, hu_table, domain):
        self.rng, self.anatomy, self.grid = rng, anatomy, grid
        self.tissue, self.organs = tissue, organs
        self.suv_table, self.hu_table, self.domain = suv_table, hu_table, domain
        self.placed: list[Lesion] = []
        self._hosts: dict[str, np.ndarray] = {}

    def host(self, site: str) -> np.ndarray | None:
        """A random voxel (world mm) of the host tissue of ``site`` (flat indices computed once per case)."""
        if site not in self._hosts:
            mask = self.tissue == _HOST_TISSUE[site]
            if site in ("bone", "bone_diffuse"):
                mask &= self.organs == ORGAN_IDS["skeleton"]
            self._hosts[site] = np.flatnonzero(mask)
        return _sample_voxel(self.rng, self.grid, self._hosts[site], self.grid.shape)

    def host_suv(self, centre) -> float:
        return float(self.suv_table[int(self.tissue[self.grid.index_of(centre)])])

    def touching(self, site: str, box, organ: str, radius: float, host, keep=()) -> tuple[np.ndarray | None, str,
                                                                                          float]:
        """(centre, hard tag, radius) of a lesion touching ``organ``: a voxel 0.6-1.0 radius from ``organ``
        and at least 0.9 radius from every other organ but ``keep``, inside world ``box`` grown by the
        site's largest radius, where ``host(slices, coords)`` holds. The radius grows (up to the site's
        largest) when no host voxel is that close to the organ."""
        tag = "near_aorta" if organ == "aorta" else "near_kidney"
        largest = _SITES[site][0][1] / 2
        lo, hi = (np.asarray(v, float) for v in box)
        found = self.grid.block(lo - largest - 4.0, hi + largest + 4.0)
        if found is None:
            return None, tag, radius
        slices, coords = found
        organs = self.organs[slices]
        target = organs == ORGAN_IDS[organ]
        others = (organs != 0) & ~target & ~np.isin(organs, [ORGAN_IDS[name] for name in keep])
        to_target = ndimage.distance_transform_edt(~target, sampling=self.grid.spacing)
        to_others = (ndimage.distance_transform_edt(~others, sampling=self.grid.spacing) if others.any()
                     else np.full(organs.shape, np.inf))
        base = host(slices, coords) & (to_others >= 0.9 * radius)
        if not base.any():
            return None, tag, radius
        radius = min(max(radius, float(to_target[base].min()) / 0.9), largest)
        ok = base & (to_target >= 0.6 * radius) & (to_target <= radius) & (to_others >= 0.9 * radius)
        return _sample_voxel(self.rng, self.grid, np.flatnonzero(ok), ok.shape, [s.start for s in slices]), tag, radius

    def adrenal(self, radius: float):
        name = str(self.rng.choice(["kidney_left", "kidney_right"]))
        kidney = self.anatomy.landmarks["kidneys"][name]
        top = kidney.centre[2] + 0.4 * (kidney.hi[2] - kidney.centre[2])

        def host(slices, coords):  # outside every organ, above the upper third, not lateral to the kidney
            x, _, z = coords
            return (self.organs[slices] == 0) & (z > top) & (np.abs(x) < abs(kidney.centre[0]) + 5.0)
        return self.touching("adrenal", (kidney.lo, kidney.hi), name, radius, host)

    def vertebral(self, radius: float):
        marks = self.anatomy.landmarks
        name = str(self.rng.choice(["aorta", "kidney_left", "kidney_right"], p=[0.5, 0.25, 0.25]))
        box = marks["descending_aorta"] if name == "aorta" else (marks["kidneys"][name].lo, marks["kidneys"][name].hi)

        def host(slices, coords):  # a vertebra: its body, arch or transverse processes
            return (self.organs[slices] == ORGAN_IDS["skeleton"]) & (np.abs(coords[0]) < 40.0)
        return self.touching("vertebral", box, name, radius, host, keep=("skeleton", "muscle"))

    def pleural(self) -> np.ndarray | None:
        """A point of the lung surface facing the chest wall (walk out from a lung voxel)."""
        point = self.host("lung")
        if point is None:
            return None
        direction = np.array([np.sign(point[0]) or 1.0, self.rng.uniform(-0.8, 0.5), 0.0])
        direction /= np.linalg.norm(direction)
        for _ in range(400):
            if self.organs[self.grid.index_of(point)] != ORGAN_IDS["lungs"]:
                return point
            point = point + direction
        return None

    def centre(self, site: str, radius: float) -> tuple[np.ndarray | None, str | None, float]:
        """Centre of a lesion at ``site`` (world mm, or None where none fits), a hard tag it implies, and its
        radius (grown for a lesion that must reach an organ)."""
        if site in ("adrenal", "vertebral"):
            return getattr(self, site)(radius)
        return (*self._centre(site, radius), radius)

    def _centre(self, site: str, radius: float) -> tuple[np.ndarray | None, str | None]:
        rng, marks = self.rng, self.anatomy.landmarks
        if site in _HOST_TISSUE:
            return self.host(site), None
        if site == "pleural":
            return self.pleural(), None
        side = float(rng.choice([-1.0, 1.0]))
        if site == "axillary_node":
            base = marks["axilla"][rng.integers(len(marks["axilla"]))]
            return np.asarray(base) + rng.uniform(-1, 1, 3) * np.array([12.0, 22.0, 28.0]), None
        if site == "mediastinal_node":
            base = marks["mediastinum"][rng.integers(len(marks["mediastinum"]))]
            return np.asarray(base) + rng.uniform(-1, 1, 3) * 6.0, None
        if site == "internal_mammary_node":
            sternum = marks["sternum"]
            z = sternum.centre[2] + rng.uniform(-0.3, 0.8) * sternum.radii[2]
            return np.array([side * rng.uniform(22, 32), sternum.centre[1] - rng.uniform(6, 12), z]), None
        if site == "supraclavicular_node":
            body = marks["body"]
            z = body["top_z"] - rng.uniform(262, 285) * body["height"]
            return np.array([side * rng.uniform(38, 72), rng.uniform(72, 100), z]), None
        if site == "pelvic_node":
            direction = np.array([side, rng.uniform(-0.6, 0.2), rng.uniform(-0.3, 0.3)])
            return _just_outside(marks["bladder"], direction, radius + 3.0), None
        if site == "paracardiac_node":
            direction = np.array([rng.uniform(0.3, 1.0), rng.uniform(-0.2, 1.0), rng.uniform(-0.4, 0.1)])
            return _just_outside(marks["heart"], direction, radius + 3.0), None
        raise ValueError(f"unknown lesion site {site!r}")

    def lesion_hu(self, site: str) -> float:
        diagnostic = self.domain == "diagnostic"
        if site in ("bone", "vertebral", "bone_diffuse"):
            return 650.0 if self.rng.random() < 0.5 else 45.0
        if site == "liver":
            return float(self.hu_table[Tissue.LIVER]) - (45.0 if diagnostic else 15.0)
        if site == "breast":
            return 60.0 if diagnostic else 40.0
        return 70.0 if diagnostic else 40.0

    def fits(self, site: str, centre, radius: float) -> bool:
        """No overlap with the lesions placed so far; a node's centre, and at least 4 of the 6 points half its
        radius away along the axes, outside every organ but brown fat."""
        if site.endswith("_node"):
            points = np.asarray(centre) + 0.5 * radius * np.vstack([np.zeros(3), np.eye(3), -np.eye(3)])
            outside = [self.organs[self.grid.index_of(point)] in _NODE_ORGANS for point in points]
            if not outside[0] or sum(outside) < 5:
                return False
        return all(np.linalg.norm(centre - np.asarray(p.shape.centre)) > radius + p.diameter_mm / 2 + 2.0
                   for p in self.placed)

    def place(self, site: str, hard: str | None) -> Lesion | None:
        """Place one lesion (None where no free spot is found in 10 tries)."""
        rng = self.rng
        (d_lo, d_hi), (s_lo, s_hi) = _SITES[site]
        diameter = rng.uniform(3.0, 6.0) if hard == "small" else float(np.exp(rng.uniform(np.log(d_lo), np.log(d_hi))))
        radius = diameter / 2
        for _ in range(10):
            centre, implied, radius = self.centre(site, radius)
            if centre is None:
                return None
            if self.fits(site, centre, radius):
                hard = implied or hard
                break
        else:
            return None
        host_suv = self.host_suv(centre)
        if hard == "low_contrast":
            suv = max(host_suv * rng.uniform(1.3, 1.8), host_suv + 0.3)
        else:
            suv = max(rng.uniform(s_lo, s_hi), host_suv * 1.5 + 0.2)
        diameter = 2 * radius
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
    placer = LesionPlacer(rng, anatomy, grid, tissue, organs, suv_table, hu_table, domain)
    for site, hard in plan_lesions(rng):
        placer.place(site, hard)
    if not placer.placed:  # every positive case has a lesion; a breast primary always fits
        placer.place("breast", None)
    return placer.placed
