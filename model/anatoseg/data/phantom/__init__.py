"""Synthetic whole-body female PET/CT phantom with breast-cancer lesions.

- :func:`generate_case` — one case in memory (:class:`PhantomCase`), deterministic per seed;
- :func:`generate_cohort` — N cases on disk in the autoPET layout plus a manifest
  (what ``anato phantom`` runs);
- :func:`write_phantom_case` — write one generated case.

Modules: :mod:`.body` (per-case proportions, the paint list), :mod:`.anatomy` (organs as
smooth random shapes), :mod:`.uptake` (labelled and unlabelled false-positive sources),
:mod:`.lesions` (sites, rates, placement), :mod:`.tissues` (HU and SUV tables, the
petct/diagnostic domains), :mod:`.misregister` (PET–CT misregistration), :mod:`.ct`,
:mod:`.pet`, :mod:`.records` (per-lesion and per-source manifest records),
:mod:`.generate`, :mod:`.cohort`.

Version 2 (issue 16) changed what every seed generates: cases from before it are not
reproduced.
"""

from anatoseg.data.phantom.cohort import generate_cohort, write_phantom_case
from anatoseg.data.phantom.generate import DEFAULT_SPACING, PhantomCase, generate_case
from anatoseg.data.phantom.tissues import DOMAINS

__all__ = ["DEFAULT_SPACING", "DOMAINS", "PhantomCase", "generate_case", "generate_cohort", "write_phantom_case"]
