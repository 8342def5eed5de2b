"""Structures with physiological FDG uptake that anatomy explains: the phantom's false-positive sources.

Each is painted with its organ label (:mod:`anatoseg.data.labels`) and recorded as an uptake
source (:meth:`~anatoseg.data.phantom.body.Anatomy.source`), except the last two, which a CT
model would not label and so count as "other":

=====================  ===============  ====================================================
structure              label            uptake
=====================  ===============  ====================================================
ureters                ureters          tube 3 mm in radius, 1-3 focal urine pools (SUV 5-40)
thyroid                thyroid          two lobes and the isthmus, SUV 1-4
brown fat              brown_fat        supraclavicular and paravertebral, -60 HU; SUV 3-12
                                        when active (p 0.25), else 0.3-0.6
salivary glands        salivary_glands  parotid and submandibular glands, tonsils, SUV 1.5-4
uterus, ovaries        uterus_ovaries   SUV 3-7 / 3-8 when premenopausal (p 0.4), else low
muscle groups          muscle           iliopsoas, erector spinae, gluteus; SUV 2-5 when
                                        tense or exercised (p 0.3), else as other muscle
injection site         (none)           in an arm (p 0.5), SUV 8-60
reactive axillary      (none)           1-2 benign nodes 8-12 mm (p 0.4), SUV 1.5-3.5
nodes
=====================  ===============  ====================================================

Bowel (``bowel`` label, with 1-4 focal hot spots) is painted with the other abdominal
organs in :mod:`.anatomy`.
"""

from __future__ import annotations

import numpy as np

from anatoseg.data.labels import ORGAN_IDS
from anatoseg.data.phantom.body import Anatomy, Body
from anatoseg.data.phantom.shapes import Capsule, Ellipsoid, Intersect, Subtract, rotation
from anatoseg.data.phantom.tissues import Tissue

P_BROWN_FAT, P_PREMENOPAUSAL, P_MUSCLE, P_INJECTION, P_REACTIVE_NODES = 0.25, 0.4, 0.3, 0.5, 0.4


def _organ(a: Anatomy, shape, tissue: Tissue, organ: str, kind: str, centre=None) -> None:
    a.add(shape, tissue, ORGAN_IDS[organ])
    a.source(kind, organ, shape.centre if centre is None else centre, tissue)


def muscle_groups(body: Body, a: Anatomy, trunk) -> None:
    """Iliopsoas, erector spinae and gluteus maximus on both sides (painted before the organs overwrite them)."""
    o, fat = body.organ_scale, body.fat
    if body.rng.random() < P_MUSCLE:
        a.active.add(Tissue.MUSCLE_GROUP)
    muscle = ORGAN_IDS["muscle"]
    for side in (-1, 1):
        psoas = [(side * 28.0, 55.0, float(body.z(600))), (side * 45 * o, 68.0, float(body.z(760))),
                 (side * 70 * o, 92.0, float(body.z(850)))]
        for p0, p1 in zip(psoas[:-1], psoas[1:]):
            a.add(Capsule(p0, p1, 15.0), Tissue.MUSCLE_GROUP, muscle)
        a.source("muscle", "muscle", psoas[1], Tissue.MUSCLE_GROUP)
        erector = body.column([(300, 13, 11, side * 30, fat + 16), (560, 16, 13, side * 30, fat + 18),
                               (780, 18, 14, side * 32, fat + 18)])
        a.add(erector, Tissue.MUSCLE_GROUP, muscle)
        a.source("muscle", "muscle", (side * 30.0, fat + 18, float(body.z(560))), Tissue.MUSCLE_GROUP)
        gluteus = Ellipsoid((side * 80 * o, fat + 32, float(body.z(860))), (58 * o, 28.0, 50 * body.height),
                            rotation(0, 0, side * 10))
        _organ(a, Intersect(gluteus, trunk.inner(fat)), Tissue.MUSCLE_GROUP, "muscle", "muscle", gluteus.centre)


def pelvic_organs(body: Body, a: Anatomy) -> None:
    """Uterus and ovaries (hot before the menopause)."""
    if body.rng.random() < P_PREMENOPAUSAL:
        a.active.update({Tissue.UTERUS, Tissue.OVARY})
    s, o = body.height, body.organ_scale
    _organ(a, Ellipsoid((0.0, 95.0, float(body.z(820))), (30.0, 22.0, 38 * s), rotation(20, 0, 0)), Tissue.UTERUS,
           "uterus_ovaries", "uterus")
    for side in (-1, 1):
        ovary = Ellipsoid(tuple(np.array([side * 45 * o, 92, body.z(812)]) + body.jitter(0.5)), (11.0, 8.0, 15.0))
        _organ(a, ovary, Tissue.OVARY, "uterus_ovaries", "ovary")


def ureters(body: Body, a: Anatomy) -> None:
    """Ureters from each renal pelvis to the bladder, outside both, with 1-3 focal urine pools."""
    rng, o = body.rng, body.organ_scale
    bladder = a.landmarks["bladder"]
    bz = bladder.centre[2]
    segments = []
    for name, kidney in a.landmarks["kidneys"].items():
        side = -1 if name.endswith("left") else 1
        kx, _, kz = kidney.centre
        path = [(kx - side * 22, 68.0, kz), (side * 48 * o, 74.0, float(body.z(760))),
                (side * 40 * o, 88.0, bz + 15.0), (side * 18.0, bladder.centre[1] - 20, bz)]
        for p0, p1 in zip(path[:-1], path[1:]):
            a.add(Subtract(Subtract(Capsule(p0, p1, 3.0), kidney), bladder), Tissue.URETER, ORGAN_IDS["ureters"])
            segments.append((np.asarray(p0), np.asarray(p1), kidney))
    for k in rng.choice(len(segments), size=int(rng.integers(1, 4)), replace=False):
        p0, p1, kidney = segments[int(k)]
        t = rng.uniform(0.2, 0.8)
        centre = (1 - t) * p0 + t * p1
        pool = Ellipsoid(tuple(float(c) for c in centre), (4.5, 4.5, rng.uniform(5.0, 9.0)))
        _organ(a, Subtract(Subtract(pool, kidney), bladder), Tissue.URINE, "ureters", "ureter_urine", centre)


def neck(body: Body, a: Anatomy) -> None:
    """Thyroid and the supraclavicular and paravertebral brown fat (painted before the skeleton)."""
    rng, s, o = body.rng, body.height, body.organ_scale
    for side in (-1, 1):
        _organ(a, Ellipsoid((side * 20.0, 106.0, float(body.z(262))), (8.0, 9.0, 20 * s), rotation(10, 0, 0)),
               Tissue.THYROID, "thyroid", "thyroid")
    a.add(Capsule((-12.0, 116.0, float(body.z(270))), (12.0, 116.0, float(body.z(270))), 4.0), Tissue.THYROID,
          ORGAN_IDS["thyroid"])
    if rng.random() < P_BROWN_FAT:
        a.active.add(Tissue.BROWN_FAT)
    for side in (-1, 1):
        depot = Ellipsoid((side * 62 * o, 84.0, float(body.z(274))), (22.0, 15.0, 12.0), wobble=body.wobble(0.1, 30))
        _organ(a, depot, Tissue.BROWN_FAT, "brown_fat", "brown_fat")
        for d in rng.uniform(330, 470, 2):
            paravertebral = Ellipsoid((side * 25.0, body.spine_y(d) - 4, float(body.z(d))), (6.0, 9.0, 22 * s))
            _organ(a, paravertebral, Tissue.BROWN_FAT, "brown_fat", "brown_fat")


def head_glands(body: Body, a: Anatomy) -> None:
    """Parotid and submandibular glands and the tonsils (painted after the skull)."""
    s = body.height
    for side in (-1, 1):
        for centre, radii in (((side * 55.0, 100.0, body.z(175)), (12.0, 18.0, 22 * s)),
                              ((side * 32.0, 128.0, body.z(200)), (10.0, 10.0, 9 * s)),
                              ((side * 12.0, 115.0, body.z(195)), (6.0, 7.0, 9 * s))):
            kind = "tonsil" if abs(centre[0]) < 20 else "salivary_gland"
            _organ(a, Ellipsoid(tuple(map(float, centre)), radii), Tissue.SALIVARY, "salivary_glands", kind)


def unlabelled_hot_spots(body: Body, a: Anatomy, arm_x: float) -> None:
    """Injection site in an arm and benign reactive axillary nodes: hot, with no organ label."""
    rng = body.rng
    if rng.random() < P_INJECTION:
        side = float(rng.choice([-1.0, 1.0]))
        spot = Ellipsoid((side * arm_x + rng.uniform(-8, 8), 112.0, float(body.z(rng.uniform(570, 640)))),
                         tuple(rng.uniform(4.0, 8.0, 3)))
        a.add(spot, Tissue.INJECTION, 0)
        a.source("injection_site", None, spot.centre, Tissue.INJECTION)
    if rng.random() < P_REACTIVE_NODES:
        axillae = a.landmarks["axilla"]
        for _ in range(int(rng.integers(1, 3))):
            base = np.asarray(axillae[rng.integers(len(axillae))])
            node = Ellipsoid(tuple(base + rng.uniform(-1, 1, 3) * np.array([8.0, 14.0, 20.0])),
                             tuple(rng.uniform(4.0, 6.0, 3)))
            a.add(node, Tissue.REACTIVE_NODE, 0)
            a.source("reactive_node", None, node.centre, Tissue.REACTIVE_NODE)
