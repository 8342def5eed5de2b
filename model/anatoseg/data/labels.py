"""The fixed organ label set used as anatomical prompts.

Twenty-one structures, each with a stable numeric id (0 is background). An organ
label map is a ``uint8`` array on the PET grid holding these ids. The set
covers the organs with characteristic physiological FDG uptake (brain, heart,
kidneys, bladder, liver, spleen, stomach, and since ids 15-21 bowel, ureters,
thyroid, brown fat, salivary glands, uterus/ovaries, muscle), the hosts of
breast-cancer lesions (breasts, lungs, liver, skeleton) and the mediastinal
landmarks next to nodal stations (aorta, oesophagus). There is no lymph-node
class: nodes are what the network has to find.

Three classes have no TotalSegmentator source (:data:`PHANTOM_ONLY`): label maps
imported from TotalSegmentator never hold them, only the phantom paints them.

====  =================  ==========================================================
 id   name               TotalSegmentator v2 source classes
====  =================  ==========================================================
  1   brain              brain (total 90)
  2   heart              heart (total 51)
  3   lungs              lung_{upper,lower}_lobe_left, lung_{upper,middle,lower}_lobe_right (10-14)
  4   liver              liver (5)
  5   spleen             spleen (1)
  6   kidney_left        kidney_left, kidney_cyst_left (3, 23)
  7   kidney_right       kidney_right, kidney_cyst_right (2, 24)
  8   urinary_bladder    urinary_bladder (21)
  9   stomach            stomach (6)
 10   breasts            breast (task ``breasts``, 1)
 11   skeleton           skull, vertebrae_*, sacrum, ribs, sternum, costal_cartilages,
                         clavicula_*, scapula_*, humerus_*, hip_*, femur_* (25-50, 69-78, 91-117)
 12   aorta              aorta (52)
 13   pancreas           pancreas (7)
 14   esophagus          esophagus (15)
 15   bowel              small_bowel, duodenum, colon (18, 19, 20)
 16   ureters            phantom only
 17   thyroid            thyroid_gland (17)
 18   brown_fat          phantom only
 19   salivary_glands    parotid_gland_{left,right}, submandibular_gland_{left,right}
                         (task ``head_glands_cavities``, 7-10); tonsils phantom only
 20   uterus_ovaries     phantom only
 21   muscle             gluteus_{maximus,medius,minimus}_*, autochthon_*, iliopsoas_* (80-89)
====  =================  ==========================================================
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Organ:
    """One entry of the organ label set: numeric ``id`` in label maps, ``name``, short ``description``."""

    id: int
    name: str
    description: str


ORGANS: tuple[Organ, ...] = (
    Organ(1, "brain", "brain parenchyma; high physiological FDG uptake"),
    Organ(2, "heart", "heart including chambers; variable myocardial uptake"),
    Organ(3, "lungs", "both lungs, all lobes; host of lung metastases"),
    Organ(4, "liver", "liver; moderate uptake, the usual SUV reference; host of liver metastases"),
    Organ(5, "spleen", "spleen"),
    Organ(6, "kidney_left", "left kidney; renal excretion of FDG"),
    Organ(7, "kidney_right", "right kidney; renal excretion of FDG"),
    Organ(8, "urinary_bladder", "urinary bladder; very high uptake from excreted FDG"),
    Organ(9, "stomach", "stomach; variable wall uptake"),
    Organ(10, "breasts", "both breasts; site of the primary tumour"),
    Organ(11, "skeleton", "axial and proximal appendicular skeleton; host of bone metastases"),
    Organ(12, "aorta", "aorta; blood-pool reference and mediastinal landmark"),
    Organ(13, "pancreas", "pancreas"),
    Organ(14, "esophagus", "oesophagus; mediastinal landmark, frequent mild uptake"),
    Organ(15, "bowel", "colon, small bowel and duodenum; focal and segmental physiological uptake"),
    Organ(16, "ureters", "ureters; focal hot spots of excreted urine"),
    Organ(17, "thyroid", "thyroid gland; diffuse or focal uptake"),
    Organ(18, "brown_fat", "supraclavicular and paravertebral brown fat; intense uptake when activated"),
    Organ(19, "salivary_glands", "parotid and submandibular glands and tonsils; moderate uptake"),
    Organ(20, "uterus_ovaries", "uterus and ovaries; cyclic uptake before the menopause"),
    Organ(21, "muscle", "gluteal, paravertebral and iliopsoas muscles; uptake after exercise or tension"),
)
"""The organ label set, ordered by id (ids 1..21, no gaps)."""

ORGAN_IDS: dict[str, int] = {organ.name: organ.id for organ in ORGANS}
"""Organ name -> id."""

ORGAN_NAMES: dict[int, str] = {0: "background", **{organ.id: organ.name for organ in ORGANS}}
"""Organ id -> name (0 is ``"background"``)."""

NUM_ORGANS: int = len(ORGANS)
"""Number of organ classes (21), not counting background."""

ORGAN_LABEL_VALUES: frozenset[int] = frozenset(range(NUM_ORGANS + 1))
"""Values allowed in an organ label map: background 0 and the organ ids."""

LESION_LABEL_VALUES: frozenset[int] = frozenset({0, 1})
"""Values allowed in a lesion mask (autoPET ``SEG``): 0 background, 1 lesion."""

PHANTOM_ONLY: frozenset[str] = frozenset({"ureters", "brown_fat", "uterus_ovaries"})
"""Organs no TotalSegmentator task segments: only phantom label maps hold them."""

LEFT_RIGHT_PAIRS: tuple[tuple[str, str], ...] = (("kidney_left", "kidney_right"),)
"""Organ names that trade places under a left-right flip (left first)."""


def _left_right_lut() -> np.ndarray:
    lut = np.arange(256, dtype=np.uint8)
    for left, right in LEFT_RIGHT_PAIRS:
        lut[ORGAN_IDS[left]], lut[ORGAN_IDS[right]] = ORGAN_IDS[right], ORGAN_IDS[left]
    return lut


_LEFT_RIGHT_LUT = _left_right_lut()


def swap_left_right(organs: np.ndarray) -> np.ndarray:
    """Organ label map ``(Z, Y, X)`` uint8 -> a new map with the ids of each :data:`LEFT_RIGHT_PAIRS` pair swapped.

    Only the labels change, not the voxels: flip the array along X yourself and
    then swap, so that the organ now on the left is named left.
    """
    if not isinstance(organs, np.ndarray) or organs.dtype != np.uint8:
        raise TypeError(f"swap_left_right: organs must be a numpy uint8 array, got "
                        f"{type(organs).__name__} {getattr(organs, 'dtype', '')}")
    if organs.ndim != 3:
        raise ValueError(f"swap_left_right: organs must be (Z, Y, X), got shape {organs.shape}")
    return _LEFT_RIGHT_LUT[organs]


def organ_table() -> dict[str, str]:
    """The label set as a JSON-ready ``{"1": "brain", ...}`` mapping (written into manifests)."""
    return {str(organ.id): organ.name for organ in ORGANS}
