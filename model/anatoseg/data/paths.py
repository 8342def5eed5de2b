"""Where anatoseg may read and write: data names, temporary names, and folders keyed by case id.

- Readers never take a hidden name (``.anything``) or a temporary name (``*.tmp``,
  ``*.tmp.nii.gz``, the names :mod:`anatoseg.data.atomic` makes) for data:
  :func:`is_temporary`, :func:`visible_entries`.
- Every writer keyed by a case id builds its path with :func:`inside`, which refuses
  a name that would leave its folder, before anything is touched.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from anatoseg.data.case_ids import case_id_problem
from anatoseg.errors import AnatoError

_TEMPORARY = re.compile(r"\.tmp(\.|$)")


def is_temporary(name: str) -> bool:
    """True for a hidden name (``.x``) or a temporary one (``x.tmp``, ``x.tmp.nii.gz``): never data."""
    return name.startswith(".") or bool(_TEMPORARY.search(name))


def visible_entries(folder: Path) -> list[Path]:
    """The entries of ``folder`` that may be data (no hidden or temporary names), sorted by name."""
    return sorted(p for p in Path(folder).iterdir() if not is_temporary(p.name))


def inside(folder: str | os.PathLike, name: str) -> Path:
    """``folder / name``, refusing (AnatoError) a ``name`` that is not one plain entry of ``folder``.

    ``name`` must pass the plain-name rule of case ids (:func:`~anatoseg.data.case_ids.case_id_problem`),
    and the result must resolve (symlinked folders followed) to an entry of ``folder``.
    """
    folder = Path(folder)
    bad = case_id_problem(name) is not None or (os.altsep is not None and os.altsep in name)
    target = folder / name if not bad else None
    if target is None or target.resolve().parent != folder.resolve():
        raise AnatoError(f"refusing to write {name!r}: not a plain name inside the folder", folder)
    return target
