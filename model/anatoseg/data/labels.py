"""The fixed organ label set used as anatomical prompts.

Fourteen structures, each with a stable numeric id (0 is background). An organ
label map is a ``uint8`` array on the PET grid holding these ids. The set
covers the organs with characteristic physiological FDG uptake (brain, heart,
kidneys, bladder, liver, spleen, stomach), the hosts of breast-cancer lesions
(breasts, lungs, liver, skeleton) and the mediastinal landmarks next to nodal
stations (aorta, oesophagus). There is no lymph-node class: nodes are what the
network has to find.

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
====  =================  ==========================================================
"""

from __future__ import annotations

from dataclasses import dataclass


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
)
"""The organ label set, ordered by id (ids 1..14, no gaps)."""

ORGAN_IDS: dict[str, int] = {organ.name: organ.id for organ in ORGANS}
"""Organ name -> id."""

ORGAN_NAMES: dict[int, str] = {0: "background", **{organ.id: organ.name for organ in ORGANS}}
"""Organ id -> name (0 is ``"background"``)."""

NUM_ORGANS: int = len(ORGANS)
"""Number of organ classes (14), not counting background."""

ORGAN_LABEL_VALUES: frozenset[int] = frozenset(range(NUM_ORGANS + 1))
"""Values allowed in an organ label map: background 0 and the organ ids."""

LESION_LABEL_VALUES: frozenset[int] = frozenset({0, 1})
"""Values allowed in a lesion mask (autoPET ``SEG``): 0 background, 1 lesion."""


def organ_table() -> dict[str, str]:
    """The label set as a JSON-ready ``{"1": "brain", ...}`` mapping (written into manifests)."""
    return {str(organ.id): organ.name for organ in ORGANS}
