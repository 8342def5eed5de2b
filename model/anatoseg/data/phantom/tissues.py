"""Tissue classes of the phantom and their CT (HU) and PET (SUV) values.

The anatomy paints a tissue code per voxel; CT and PET look the codes up in
per-case tables drawn here. HU values are for 120 kVp; the ``diagnostic``
domain adds portal-venous iodine contrast (blood, liver, spleen, kidneys,
pancreas, bowel wall enhance), the ``petct`` domain is unenhanced low-dose CT.
SUV ranges are typical FDG values at 60 min. Tissues with a resting and an
active state (brown fat, premenopausal uterus and ovaries, tense muscle) draw
from their active range in the cases whose anatomy marks them active.
"""

from __future__ import annotations

from enum import IntEnum

import numpy as np

DOMAINS = ("petct", "diagnostic")


class Tissue(IntEnum):
    """Tissue codes painted by the anatomy (0 = air outside the body)."""

    AIR = 0
    FAT = 1
    MUSCLE = 2
    LUNG = 3
    CORTICAL_BONE = 4
    MARROW = 5
    BRAIN = 6
    MYOCARDIUM = 7
    BLOOD = 8
    LIVER = 9
    SPLEEN = 10
    KIDNEY = 11
    URINE = 12
    STOMACH_WALL = 13
    STOMACH_CONTENT = 14
    BREAST_GLAND = 15
    PANCREAS = 16
    ESOPHAGUS = 17
    BOWEL = 18
    GAS = 19
    TABLE = 20
    SOFT_TISSUE = 21
    BOWEL_HOT = 22
    URETER = 23
    THYROID = 24
    BROWN_FAT = 25
    SALIVARY = 26
    UTERUS = 27
    OVARY = 28
    MUSCLE_GROUP = 29
    INJECTION = 30
    REACTIVE_NODE = 31


# (HU petct, HU diagnostic, SUV low, SUV high); SUV drawn uniformly per case.
_TABLE: dict[Tissue, tuple[float, float, float, float]] = {
    Tissue.AIR: (-1000, -1000, 0.0, 0.0),
    Tissue.FAT: (-100, -100, 0.2, 0.4),
    Tissue.MUSCLE: (45, 55, 0.5, 0.9),
    Tissue.LUNG: (-850, -850, 0.3, 0.5),
    Tissue.CORTICAL_BONE: (850, 850, 0.3, 0.6),
    Tissue.MARROW: (230, 230, 1.0, 2.0),
    Tissue.BRAIN: (35, 38, 6.0, 11.0),
    Tissue.MYOCARDIUM: (45, 110, 1.5, 9.0),
    Tissue.BLOOD: (40, 190, 1.3, 2.0),
    Tissue.LIVER: (58, 110, 1.8, 2.8),
    Tissue.SPLEEN: (48, 120, 1.5, 2.3),
    Tissue.KIDNEY: (32, 180, 2.5, 5.0),
    Tissue.URINE: (8, 10, 5.0, 40.0),
    Tissue.STOMACH_WALL: (40, 90, 1.5, 3.0),
    Tissue.STOMACH_CONTENT: (15, 15, 0.3, 0.8),
    Tissue.BREAST_GLAND: (25, 35, 0.8, 1.5),
    Tissue.PANCREAS: (40, 100, 1.2, 2.0),
    Tissue.ESOPHAGUS: (40, 70, 1.3, 2.2),
    Tissue.BOWEL: (30, 80, 1.0, 3.0),
    Tissue.GAS: (-1000, -1000, 0.0, 0.0),
    Tissue.TABLE: (150, 150, 0.0, 0.0),
    Tissue.SOFT_TISSUE: (35, 45, 0.6, 1.0),
    Tissue.BOWEL_HOT: (30, 80, 3.0, 9.0),
    Tissue.URETER: (25, 60, 1.5, 4.0),
    Tissue.THYROID: (90, 160, 1.0, 4.0),
    Tissue.BROWN_FAT: (-60, -55, 0.3, 0.6),
    Tissue.SALIVARY: (15, 50, 1.5, 4.0),
    Tissue.UTERUS: (40, 90, 1.2, 2.2),
    Tissue.OVARY: (30, 60, 0.8, 1.5),
    Tissue.MUSCLE_GROUP: (45, 55, 0.5, 0.9),
    Tissue.INJECTION: (40, 60, 8.0, 60.0),
    Tissue.REACTIVE_NODE: (35, 70, 1.5, 3.5),
}
_ACTIVE: dict[Tissue, tuple[float, float]] = {  # SUV range in the active state
    Tissue.BROWN_FAT: (3.0, 12.0),
    Tissue.UTERUS: (3.0, 7.0),
    Tissue.OVARY: (3.0, 8.0),
    Tissue.MUSCLE_GROUP: (2.0, 5.0),
}

N_TISSUES = len(Tissue)


def hu_table(domain: str, rng: np.random.Generator) -> np.ndarray:
    """HU per tissue code, ``(N_TISSUES,)`` float32, with a few HU of per-case jitter (contrast more)."""
    column = DOMAINS.index(domain)
    table = np.array([_TABLE[t][column] for t in Tissue], dtype=np.float32)
    jitter = rng.normal(0.0, 4.0, N_TISSUES)
    contrast_jitter = rng.normal(0.0, 20.0, N_TISSUES)  # drawn in both domains: same stream, same lesions
    if domain == "diagnostic":  # contrast timing varies more than tissue density
        enhanced = table > np.array([_TABLE[t][0] for t in Tissue]) + 20
        jitter[enhanced] = contrast_jitter[enhanced]
    jitter[[Tissue.AIR, Tissue.GAS, Tissue.TABLE]] = 0.0
    return table + jitter.astype(np.float32)


def suv_table(rng: np.random.Generator, active=frozenset()) -> np.ndarray:
    """SUV per tissue code, ``(N_TISSUES,)`` float32, each drawn uniformly from its range (the active
    range for the tissues in ``active``)."""
    low = np.array([_TABLE[t][2] for t in Tissue])
    high = np.array([_TABLE[t][3] for t in Tissue])
    for tissue in active:
        low[tissue], high[tissue] = _ACTIVE[tissue]
    return rng.uniform(low, high).astype(np.float32)
