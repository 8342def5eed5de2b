"""Where anatoseg may read and write: data names, temporary names, and folders keyed by case id.

- Readers never take a hidden name (``.anything``) or a temporary name (``*.tmp``,
  ``*.tmp.nii.gz``, the names :mod:`anatoseg.data.atomic` makes) for data:
  :func:`is_temporary`, :func:`visible_entries`.
- Every writer keyed by a case id builds its path with :func:`inside`, which refuses
  a name that would leave its folder, before anything is touched.
- :func:`same_file` compares two paths as the file system does (symlinks, hard links).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

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

    ``name`` must be non-empty, hold no path separator or NUL, not be ``.``/``..`` or hidden,
    and the result must resolve (symlinked folders followed) to an entry of ``folder``.
    """
    folder = Path(folder)
    bad = (not isinstance(name, str) or not name or name.startswith(".") or "\0" in name
           or any(sep in name for sep in ("/", "\\", os.sep, os.altsep) if sep))
    target = folder / name if not bad else None
    if target is None or target.resolve().parent != folder.resolve():
        raise AnatoError(f"refusing to write {name!r}: not a plain name inside the folder", folder)
    return target


def same_file(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """True if ``a`` and ``b`` are the same file (after symlinks; hard links too when both exist)."""
    a, b = Path(a), Path(b)
    if a.exists() and b.exists():
        return os.path.samefile(a, b)
    return a.resolve() == b.resolve()
