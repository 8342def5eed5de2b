"""A random female body from the top of the head to the upper thighs, as analytic shapes.

World axes are RAS+ in mm: +x towards the subject's right, +y anterior, +z
towards the head. The back rests at y = 0, 15 mm above the patient table; the lower edge
of the body (mid-thigh) is at z = 0. Positions are written as depth ``d`` below
the vertex of an average woman and then scaled per case (height, girth, fat,
breast size, organ positions and sizes, surface wobble all vary).

:func:`build_anatomy` returns an :class:`~anatoseg.data.phantom.body.Anatomy`: an
ordered list of paint operations (later ones overwrite earlier ones), the
landmarks that lesion placement needs, and the uptake sources that are not
lesions (:mod:`.uptake`: ureters, thyroid, brown fat, salivary glands,
uterus/ovaries, muscle groups, injection site, reactive nodes; bowel hot spots
here). :func:`paint_anatomy` renders it on a grid as a tissue map
(:class:`~anatoseg.data.phantom.tissues.Tissue`) and an organ map (ids of
:data:`anatoseg.data.labels.ORGANS`).
"""

from __future__ import annotations

import numpy as np

from anatoseg.data.labels import ORGAN_IDS
from anatoseg.data.phantom import uptake
from anatoseg.data.phantom.body import KEEP, Anatomy, Body
from anatoseg.data.phantom.grid import Grid
from anatoseg.data.phantom.shapes import Capsule, Column, Ellipsoid, Intersect, Subtract, paint, rotation
from anatoseg.data.phantom.tissues import Tissue

# Rib cage: per rib 1..12, maximal half-width (mm) and drop of the anterior end below the head (mm).
_RIB_HALF_WIDTH = np.array([55, 80, 95, 105, 112, 118, 120, 120, 118, 115, 110, 105])
_RIB_DROP = np.array([25, 40, 55, 65, 70, 75, 80, 80, 75, 65, 50, 40])
_RIB_END = np.array([0.85, 0.87, 0.88, 0.88, 0.88, 0.86, 0.84, 0.78, 0.74, 0.70, 0.55, 0.45]) * np.pi


def _outline(body: Body, a: Anatomy) -> dict:
    """Skin, subcutaneous fat, muscle, head, neck, arms, thighs and the patient table."""
    rows = [(d, w, h, 0.0, h) for d, w, h in body.trunk_rows]
    trunk = body.column(rows)
    head = Ellipsoid((0.0, 105.0, float(body.z(112))), (75.0, 96.0, 112.0 * body.height), wobble=body.wobble(0.03))
    neck = body.column([(195, 56, 52, 0, 78), (285, 62, 58, 0, 75)])
    arm_x = body.half_width(420) + 42.0
    arms, thighs = [], []
    for side in (-1, 1):
        arms.append(body.column([(290, 48, 48, side * (arm_x - 8), 85), (590, 42, 42, side * arm_x, 88),
                                 (600, 38, 38, side * arm_x, 92), (860, 30, 32, side * (arm_x - 10), 98)]))
        g = body.girth  # thighs rest on the table: centre y = half-depth + a few mm
        thighs.append(body.column([(820, 92 * g, 88 * g, side * 88 * g, 88 * g + 2),
                                   (1010, 78 * g, 78 * g, side * 92 * g, 78 * g + 4)]))
    pieces = [trunk, head, neck, *arms, *thighs]
    for shape in pieces:
        a.add(shape, Tissue.FAT, 0)
    for shape in [trunk, neck, *arms, *thighs]:
        a.add(shape.inner(body.fat * (1.0 if shape is trunk else 0.6)), Tissue.MUSCLE, 0)
    a.add(head.scaled(0.95), Tissue.SOFT_TISSUE, 0)
    width = max(body.half_width(d) for d in (300, 420, 780)) + 110.0
    table = Column(np.array([[-200.0, width, 5.0, 0.0, -20.0], [body.top + 200.0, width, 5.0, 0.0, -20.0]]))
    a.add(table, Tissue.TABLE, 0)
    lo = np.array([-width, 0.0, 0.0])
    hi = np.array([width, max(body.anterior(d) for d in range(300, 900, 20)) + 90.0, body.top + 5.0])
    a.bounds = (lo, hi)
    return {"trunk": trunk, "arm_x": arm_x}


def _cavities(body: Body, a: Anatomy, trunk: Column) -> dict:
    """Mediastinal and abdominal fat inside the muscle wall; returns both cavities."""
    wall = body.fat + 22.0
    thorax = Intersect(trunk.inner(wall), body.column([(285, 400, 400, 0, 0), (560, 400, 400, 0, 0)]))
    abdomen = Intersect(trunk.inner(body.fat + 18.0), body.column([(490, 400, 400, 0, 0),
                                                                     (895, 400, 400, 0, 0)]))
    a.add(thorax, Tissue.FAT, 0)
    a.add(abdomen, Tissue.FAT, 0)
    for side in (-1, 1):  # axillary fat pads, where axillary nodes sit
        centre = (side * (body.half_width(400) - body.fat - 20), 95.0, float(body.z(395)))
        pad = Intersect(Ellipsoid(centre, (24.0, 34.0, 40.0)), trunk.inner(body.fat))
        a.add(pad, Tissue.FAT, 0)
        a.landmarks.setdefault("axilla", []).append(centre)
        a.landmarks.setdefault("axilla_pads", []).append(pad)
    return {"thorax": thorax, "abdomen": abdomen}


def _bowel(body: Body, a: Anatomy, abdomen) -> None:
    """Colon (cecum to rectum), small-bowel loops and 1-4 focal hot spots in them, all labelled bowel."""
    o, rng, bowel = body.organ_scale, body.rng, ORGAN_IDS["bowel"]
    colon = [(75 * o, 105, 800), (85 * o, 100, 700), (70 * o, 125, 655), (0, body.anterior(690) - 40, 690),
             (-75 * o, 120, 640), (-85 * o, 95, 700), (-80 * o, 100, 790), (-35, 105, 835), (-10, 65, 860),
             (0, 62, 895)]
    segments = []
    for (x0, y0, d0), (x1, y1, d1) in zip(colon[:-1], colon[1:]):
        segments.append(Capsule((float(x0), float(y0), float(body.z(d0))), (float(x1), float(y1), float(body.z(d1))),
                                18.0 if d1 < 850 else 13.0))
    for _ in range(18):
        centre = (rng.uniform(-105, 105) * o, rng.uniform(95, body.anterior(760) - 35),
                  float(body.z(rng.uniform(660, 850))))
        segments.append(Ellipsoid(centre, tuple(rng.uniform(14, 28, 3)), rotation(*rng.uniform(-40, 40, 3)),
                                  body.wobble(0.1, 40)))
    for segment in segments:
        a.add(Intersect(segment, abdomen), Tissue.BOWEL, bowel)
        if rng.random() < 0.4:
            core = segment.scaled(0.45) if isinstance(segment, Ellipsoid) else Capsule(segment.p0, segment.p1, 8.0)
            a.add(Intersect(core, abdomen), Tissue.GAS, bowel)
    for k in rng.choice(len(segments), size=int(rng.integers(1, 5)), replace=False):
        segment = segments[int(k)]
        t = rng.uniform(0.2, 0.8)
        centre = (segment.centre if isinstance(segment, Ellipsoid)
                  else tuple(float(c) for c in (1 - t) * np.asarray(segment.p0) + t * np.asarray(segment.p1)))
        spot = Ellipsoid(centre, tuple(rng.uniform(5.0, 11.0, 3)), rotation(*rng.uniform(-40, 40, 3)))
        a.add(Intersect(spot, abdomen), Tissue.BOWEL_HOT, bowel)
        a.source("bowel_focal", "bowel", centre, Tissue.BOWEL_HOT)


def _abdomen(body: Body, a: Anatomy, abdomen) -> None:
    """Bowel, liver, spleen, stomach, kidneys, pancreas, uterus, ovaries and bladder."""
    s, o, rng = body.height, body.organ_scale, body.rng
    _bowel(body, a, abdomen)
    liver = Ellipsoid(tuple(np.array([55 * o, 122, body.z(605)]) + body.jitter()),
                      (100 * o * rng.uniform(0.9, 1.1), 78 * rng.uniform(0.9, 1.1), 85 * s * rng.uniform(0.9, 1.1)),
                      rotation(10, 0, 10), body.wobble(0.06, 120))
    left_lobe = Ellipsoid((-35 * o, 148.0, float(body.z(575))), (60 * o, 38.0, 40 * s), rotation(0, 10, 0),
                          body.wobble(0.06, 80))
    for shape in (liver, left_lobe):
        a.add(Intersect(shape, abdomen), Tissue.LIVER, ORGAN_IDS["liver"])
    a.add(Intersect(Ellipsoid(tuple(np.array([-100 * o, 70, body.z(612)]) + body.jitter(0.5)),
                              (28.0, 55.0 * rng.uniform(0.85, 1.15), 55 * s), rotation(0, 0, -30),
                              body.wobble(0.05, 70)), abdomen), Tissue.SPLEEN, ORGAN_IDS["spleen"])
    stomach = Ellipsoid((-55 * o, 132.0, float(body.z(600))), (48.0, 40.0, 65 * s), rotation(0, 20, 0),
                        body.wobble(0.05, 80))
    a.add(Intersect(stomach, abdomen), Tissue.STOMACH_WALL, ORGAN_IDS["stomach"])
    a.add(Intersect(stomach.scaled(0.82), abdomen), Tissue.STOMACH_CONTENT, ORGAN_IDS["stomach"])
    a.add(Ellipsoid((-58 * o, 140.0, float(body.z(560))), (22.0, 18.0, 12.0)), Tissue.GAS, ORGAN_IDS["stomach"])
    for side, name, depth in ((-1, "kidney_left", 680), (1, "kidney_right", 700)):
        centre = np.array([side * 68 * o, 62, body.z(depth)]) + body.jitter(0.5)
        kidney = Ellipsoid(tuple(centre), (27.0, 24.0, 55 * s), rotation(0, -side * 10, side * 20),
                           body.wobble(0.04, 60))
        a.add(kidney, Tissue.KIDNEY, ORGAN_IDS[name])
        a.landmarks.setdefault("kidneys", {})[name] = kidney
        a.add(Ellipsoid(tuple(centre - np.array([side * 12, -4, 0])), (9.0, 8.0, 20 * s)), Tissue.URINE,
              ORGAN_IDS[name])
    pancreas = [(25 * o, 118, body.z(662)), (-15 * o, 126, body.z(648)), (-55 * o, 112, body.z(638)),
                (-85 * o, 92, body.z(628))]
    for p0, p1 in zip(pancreas[:-1], pancreas[1:]):
        a.add(Capsule(p0, p1, 11.0), Tissue.PANCREAS, ORGAN_IDS["pancreas"])
    uptake.pelvic_organs(body, a)
    fill = rng.uniform(0.6, 1.3)
    bladder = Ellipsoid((0.0, 125.0, float(body.z(868 - 20 * fill))), (42 * fill ** 0.5, 35 * fill ** 0.5, 33 * fill),
                        wobble=body.wobble(0.04, 60))
    a.add(bladder, Tissue.SOFT_TISSUE, ORGAN_IDS["urinary_bladder"])
    a.add(bladder.scaled(0.88), Tissue.URINE, ORGAN_IDS["urinary_bladder"])
    a.landmarks["bladder"] = bladder


def _thorax(body: Body, a: Anatomy, thorax) -> None:
    """Lungs (kept out of the mediastinum and the axillae), heart, great vessels, trachea and oesophagus."""
    s, o, rng = body.height, body.organ_scale, body.rng
    rows = []
    for d, half_width, x in ((285, 26, -2), (400, 38, -4), (560, 40, -8)):
        y_lo, y_hi = body.spine_y(d) + 12, body.anterior(d) - body.fat - 18
        rows.append((d, half_width, (y_hi - y_lo) / 2, x, (y_hi + y_lo) / 2))
    mediastinum = body.column(rows)
    for side, top in ((-1, 528.0), (1, 512.0)):  # diaphragm domes (the right one is higher)
        top += rng.uniform(-15, 15)
        dome = Ellipsoid((side * 70 * o, 100.0, float(body.z(top + 125))), (135 * o, 120.0, 125 * s))
        lung = Ellipsoid(tuple(np.array([side * 80 * o, 88, body.z(415)]) + body.jitter(0.5)),
                         ((67 if side > 0 else 63) * o, 84.0, 150 * s), wobble=body.wobble(0.04, 120))
        lung = Subtract(Subtract(Intersect(lung, thorax), dome), mediastinum)
        for pad in a.landmarks["axilla_pads"]:
            lung = Subtract(lung, pad)
        a.add(lung, Tissue.LUNG, ORGAN_IDS["lungs"])
    heart_centre = np.array([-20 * o, 122, body.z(495)]) + body.jitter(0.7)
    heart = Ellipsoid(tuple(heart_centre), (62.0, 50.0, 56 * s), rotation(0, 15, -35), body.wobble(0.03, 80))
    a.add(heart, Tissue.BLOOD, ORGAN_IDS["heart"])
    ventricle = Ellipsoid(tuple(heart_centre + np.array([-22, 6, -12])), (40.0, 34.0, 44 * s), rotation(0, 15, -35))
    a.add(ventricle, Tissue.MYOCARDIUM, ORGAN_IDS["heart"])
    a.add(ventricle.scaled(0.62), Tissue.BLOOD, ORGAN_IDS["heart"])
    a.landmarks["heart"] = heart
    aorta = [(-5, 118, 470, 14), (0, 112, 400, 14), (-12, 95, 368, 13), (-26, 72, 385, 12), (-25, 62, 450, 12),
             (-20, 66, 560, 11), (-10, 76, 650, 10), (-5, 80, 720, 9)]
    for (x0, y0, d0, r0), (x1, y1, d1, _) in zip(aorta[:-1], aorta[1:]):
        a.add(Capsule((x0, y0, float(body.z(d0))), (x1, y1, float(body.z(d1))), r0), Tissue.BLOOD, ORGAN_IDS["aorta"])
    a.landmarks["descending_aorta"] = (np.array([-45.0, 40.0, body.z(720)]), np.array([10.0, 100.0, body.z(560)]))
    for side in (-1, 1):
        a.add(Capsule((-5.0, 80.0, float(body.z(720))), (side * 55 * o, 88.0, float(body.z(830))), 6.0), Tissue.BLOOD)
    trachea = [(0.0, 100.0, float(body.z(215))), (0.0, 88.0, float(body.z(400)))]
    a.add(Capsule(*trachea, 12.0), Tissue.SOFT_TISSUE, 0)
    a.add(Capsule(*trachea, 9.0), Tissue.GAS, 0)
    for side in (-1, 1):
        a.add(Capsule(trachea[1], (side * 42.0, 82.0, float(body.z(430))), 6.0), Tissue.GAS, 0)
    oesophagus = [(0, 70, 230), (-4, 68, 400), (-15, 72, 520), (-40, 100, 565)]
    for (x0, y0, d0), (x1, y1, d1) in zip(oesophagus[:-1], oesophagus[1:]):
        a.add(Capsule((x0, y0, float(body.z(d0))), (x1, y1, float(body.z(d1))), 8.0), Tissue.ESOPHAGUS,
              ORGAN_IDS["esophagus"])
    a.landmarks["mediastinum"] = [(24.0, 92.0, float(body.z(380))), (-24.0, 96.0, float(body.z(385))),
                                  (8.0, 84.0, float(body.z(430))), (-32.0, 104.0, float(body.z(400))),
                                  (20.0, 112.0, float(body.z(445)))]


def _bone(a: Anatomy, shape, marrow_shape=None) -> None:
    skeleton = ORGAN_IDS["skeleton"]
    a.add(shape, Tissue.CORTICAL_BONE, skeleton)
    if marrow_shape is not None:
        a.add(marrow_shape, Tissue.MARROW, skeleton)


def _spine(body: Body, a: Anatomy) -> list[float]:
    """Vertebrae C1-L5 (body, arch, spinous process), sacrum; returns the depth of each thoracic vertebra."""
    levels = ([(d, 12.0, 9.0, 7.0) for d in np.linspace(215, 290, 7)]
              + [(d, 16.0, 13.0, 8.0) for d in np.linspace(300, 550, 12)]
              + [(d, 22.0, 16.0, 9.0) for d in np.linspace(570, 720, 5)])
    heights = np.diff([210] + [lv[0] for lv in levels]) * 0.82
    for (d, half_w, half_d, canal), h in zip(levels, heights):
        y = body.spine_y(d)
        canal_y = y - half_d - canal
        top, bottom = d - h / 2, d + h / 2
        arch = body.column([(top, canal + 5, canal + 5, 0, canal_y), (bottom, canal + 5, canal + 5, 0, canal_y)])
        _bone(a, arch)
        a.add(arch.inner(5), Tissue.SOFT_TISSUE, 0)
        z = float(body.z(d))
        _bone(a, Capsule((0.0, canal_y - canal, z), (0.0, canal_y - canal - 22, z - 10), 4.0))
        for side in (-1, 1):
            _bone(a, Capsule((side * 6.0, canal_y, z), (side * (half_w + 14), canal_y - 4, z), 4.0))
        vertebra = body.column([(top, half_w, half_d, 0, y), (bottom, half_w, half_d, 0, y)])
        _bone(a, vertebra, vertebra.inner(2.5))
    sacrum = Ellipsoid((0.0, 40.0, float(body.z(790))), (46.0, 20.0, 60 * body.height), rotation(-25, 0, 0))
    _bone(a, sacrum, sacrum.scaled(0.78))
    return [lv[0] for lv in levels[7:19]]


def _ribs(body: Body, a: Anatomy, thoracic: list[float]) -> None:
    """Twelve pairs of ribs around the thorax, the sternum and the clavicles."""
    for k, d in enumerate(thoracic):
        y_post = body.spine_y(d) - 18.0
        y_ant = body.anterior(d + _RIB_DROP[k]) - body.fat - 10.0
        half_depth = (y_ant - y_post) / 2
        half_width = min(body.half_width(d) - body.fat - 12.0, _RIB_HALF_WIDTH[k] * body.organ_scale)
        angles = np.linspace(0.12 * np.pi, _RIB_END[k], 9)
        for side in (-1, 1):
            points = [(side * half_width * np.sin(t), y_post + half_depth * (1 - np.cos(t)),
                       float(body.z(d + _RIB_DROP[k] * t / np.pi))) for t in angles]
            points[0] = (side * 14.0, body.spine_y(d) - 12.0, float(body.z(d)))
            for p0, p1 in zip(points[:-1], points[1:]):
                _bone(a, Capsule(p0, p1, 5.0), Capsule(p0, p1, 3.0))
    y_sternum = body.anterior(420) - body.fat - 14.0
    sternum = Ellipsoid((0.0, y_sternum, float(body.z(410))), (16.0, 7.0, 95 * body.height), rotation(-8, 0, 0))
    a.landmarks["sternum"] = sternum
    _bone(a, sternum, sternum.scaled(0.6))
    for side in (-1, 1):
        points = [(side * 14.0, body.anterior(300) - 25, float(body.z(300))),
                  (side * 70.0 * body.organ_scale, body.anterior(300) - 22, float(body.z(292))),
                  (side * (body.half_width(300) - 30), 70.0, float(body.z(285)))]
        for p0, p1 in zip(points[:-1], points[1:]):
            _bone(a, Capsule(p0, p1, 7.0), Capsule(p0, p1, 4.0))
        scapula = Ellipsoid((side * 100.0 * body.organ_scale, body.fat + 24.0, float(body.z(385))),
                            (52.0 * body.organ_scale, 7.0, 72 * body.height), rotation(0, 0, side * 12))
        _bone(a, scapula, scapula.scaled(0.65))


def _limb_bones(body: Body, a: Anatomy, arm_x: float) -> None:
    """Humeri, forearm bones, pelvis and femora."""
    o = body.organ_scale
    for side in (-1, 1):
        x = side * arm_x
        head = Ellipsoid((x - side * 12, 78.0, float(body.z(322))), (22.0, 22.0, 22.0))
        _bone(a, head, head.scaled(0.75))
        shaft = ((x - side * 6, 82.0, float(body.z(330))), (x, 86.0, float(body.z(585))))
        _bone(a, Capsule(*shaft, 11.0), Capsule(*shaft, 6.0))
        for offset, radius in ((-7, 7.0), (8, 6.0)):
            fore = ((x + side * offset, 90.0, float(body.z(605))), (x + side * (offset - 10), 96.0, float(body.z(850))))
            a.add(Capsule(*fore, radius), Tissue.CORTICAL_BONE, KEEP)
        wing = Ellipsoid((side * 95 * o, 66.0, float(body.z(790))), (18.0, 62.0, 58 * body.height),
                         rotation(0, -side * 15, side * 35))
        _bone(a, wing, wing.scaled(0.7))
        acetabulum = Ellipsoid((side * 86 * o, 86.0, float(body.z(852))), (26.0, 26.0, 26.0))
        _bone(a, acetabulum, acetabulum.scaled(0.7))
        pubis_y = body.anterior(870) - body.fat - 18.0
        for p0, p1, r in (((side * 84 * o, 96.0, body.z(860)), (side * 12.0, pubis_y, body.z(872)), 9.0),
                          ((side * 80 * o, 74.0, body.z(862)), (side * 56 * o, 58.0, body.z(905)), 11.0)):
            p0, p1 = tuple(map(float, p0)), tuple(map(float, p1))
            _bone(a, Capsule(p0, p1, r), Capsule(p0, p1, r * 0.55))
        femur_head = Ellipsoid((side * 88 * o, 86.0, float(body.z(856))), (23.0, 23.0, 23.0))
        _bone(a, femur_head, femur_head.scaled(0.78))
        for p0, p1, r in (((side * 88 * o, 86.0, body.z(856)), (side * 118 * o, 80.0, body.z(876)), 15.0),
                          ((side * 120 * o, 84.0, body.z(872)), (side * 100 * o, 95.0, body.z(1200)), 14.0)):
            p0, p1 = tuple(map(float, p0)), tuple(map(float, p1))
            _bone(a, Capsule(p0, p1, r), Capsule(p0, p1, r * 0.55))
        trochanter = Ellipsoid((side * 126 * o, 80.0, float(body.z(872))), (19.0, 20.0, 26.0))
        _bone(a, trochanter, trochanter.scaled(0.7))


def _head(body: Body, a: Anatomy) -> None:
    """Skull and brain."""
    skull = Ellipsoid((0.0, 102.0, float(body.z(100))), (70.0, 88.0, 90 * body.height), wobble=body.wobble(0.02, 150))
    _bone(a, skull)
    a.add(Ellipsoid(skull.centre, (63.0, 81.0, skull.radii[2] - 7), wobble=skull.wobble), Tissue.BRAIN,
          ORGAN_IDS["brain"])


def _breasts(body: Body, a: Anatomy, trunk: Column) -> None:
    """Breasts: fat with a glandular core, outside the chest wall."""
    rng = body.rng
    size = rng.uniform(0.7, 1.4)
    a.landmarks["breasts"] = []
    for side in (-1, 1):
        depth = 470 + rng.uniform(-10, 15)
        radii = (58 * size ** 0.6, 46 * size, 55 * size ** 0.6)
        centre = (side * 84 * body.organ_scale, body.anterior(depth) - 0.25 * radii[1], float(body.z(depth)))
        breast = Ellipsoid(centre, radii, rotation(-10, 0, side * 15), body.wobble(0.05, 70))
        wall = trunk.inner(body.fat)
        a.add(Subtract(breast, wall), Tissue.FAT, ORGAN_IDS["breasts"])
        gland = Ellipsoid((centre[0], centre[1] + 0.1 * radii[1], centre[2]), tuple(0.6 * r for r in radii),
                          wobble=body.wobble(0.15, 40))
        a.add(Subtract(gland, wall), Tissue.BREAST_GLAND, ORGAN_IDS["breasts"])
        a.landmarks["breasts"].append(breast)


def build_anatomy(rng: np.random.Generator) -> Anatomy:
    """A random body (see the module docstring). All randomness comes from ``rng``."""
    body = Body(rng)
    a = Anatomy()
    parts = _outline(body, a)
    cavities = _cavities(body, a, parts["trunk"])
    uptake.muscle_groups(body, a, parts["trunk"])
    _abdomen(body, a, cavities["abdomen"])
    uptake.ureters(body, a)
    _thorax(body, a, cavities["thorax"])
    uptake.neck(body, a)
    _breasts(body, a, parts["trunk"])
    thoracic = _spine(body, a)
    _ribs(body, a, thoracic)
    _limb_bones(body, a, parts["arm_x"])
    _head(body, a)
    uptake.head_glands(body, a)
    uptake.unlabelled_hot_spots(body, a, parts["arm_x"])
    a.landmarks["body"] = {"height": body.height, "girth": body.girth, "fat_mm": body.fat, "top_z": body.top}
    a.landmarks["breathing"] = {"z_profile": tuple(float(body.z(d)) for d in (820, 700, 540, 330)),
                                "half_width_mm": body.half_width(600) - body.fat, "back_y_mm": 25.0}
    return a


def paint_anatomy(anatomy: Anatomy, grid: Grid) -> tuple[np.ndarray, np.ndarray]:
    """Render on ``grid``: (tissue codes ``(X, Y, Z)`` uint8, organ ids ``(X, Y, Z)`` uint8)."""
    tissue = np.zeros(grid.shape, dtype=np.uint8)
    organs = np.zeros(grid.shape, dtype=np.uint8)
    for shape, tissue_code, organ in anatomy.ops:
        paint(grid, shape, [(tissue, int(tissue_code)), (organs, organ)])
    return tissue, organs
