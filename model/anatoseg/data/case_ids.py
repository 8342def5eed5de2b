"""The one rule for case ids, for every layout (:mod:`anatoseg.data.layouts`) and every writer.

A case id names files and folders (``<out>/<case_id>.nii.gz``, ``<cache>/<case_id>/``),
so it must be a plain, visible file name: a non-empty string without ``/``, ``\\`` or NUL
that does not start with ``.`` (so neither ``.`` nor ``..``, nor a name readers skip as
hidden). Ids are unique within a dataset. An autoPET study ``<patient>/<study>`` is
``<patient>_<study>`` (:func:`autopet_case_id`), whichever way it is read: as a tree,
as one study folder, or through a manifest written by ``anato phantom``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

from anatoseg.errors import DataError


def case_id_problem(value: object) -> str | None:
    """Why ``value`` is not a valid case id, or None if it is."""
    if not isinstance(value, str):
        return f"must be a string, got {value!r}"
    if not value:
        return "is empty"
    if value.startswith("."):
        return f"{value!r} starts with '.' (hidden, or '.'/'..')"
    for bad, what in (("/", "'/'"), ("\\", "'\\'"), ("\0", "NUL")):
        if bad in value:
            return f"{value!r} contains {what}"
    return None


def check_case_id(value: object, where: object = None, context: str = "case id") -> str:
    """``value`` if it is a valid case id (module docstring), else DataError naming ``where``."""
    problem = case_id_problem(value)
    if problem is not None:
        raise DataError(f"{context} {problem}; a case id must be a plain file name", where)
    return value


def check_unique(ids: Iterable[str], where: object = None) -> None:
    """DataError naming every id that occurs more than once."""
    repeated = sorted(case for case, n in Counter(ids).items() if n > 1)
    if repeated:
        raise DataError(f"duplicate case ids: {', '.join(repeated)}", where)


def autopet_case_id(patient: str, study: str) -> str:
    """The case id of the autoPET study folder ``<patient>/<study>``."""
    return f"{patient}_{study}"
