"""Atomic output: a file appears complete under its final name, or not at all.

Every writer in :mod:`anatoseg` writes to a temporary name and renames it into
place with :func:`os.replace` (atomic on POSIX and Windows within one file
system). On any error the temporary is removed, so an interrupted or failed
command never leaves a half-written file behind. Temporaries are hidden names
(``.<name>.<random>.tmp``) in the target's folder, or, for a target inside a run
folder held with :func:`run_temporaries`, in that folder's hidden ``.tmp/``
(:data:`TEMP_FOLDER`), which the run empties when it starts: a process killed
mid-write leaves nothing that outlives the next run. Readers never take hidden
names as data. An ``OSError`` of a write names the target (disk full reads
``<target>: no space left on device``).
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from anatoseg.errors import DataError

TEMP_FOLDER = ".tmp"  # a run folder's temporaries (see run_temporaries)
_RUN_FOLDERS: list[Path] = []  # the run folders whose temporaries go to <folder>/.tmp


@contextmanager
def run_temporaries(folder: str | os.PathLike) -> Iterator[Path]:
    """While open, temporaries of targets inside ``folder`` go to ``folder/.tmp`` (emptied first, and
    removed at the end when empty). The caller holds the folder (:func:`anatoseg.training.run_folder.hold`)."""
    folder = Path(folder).resolve()
    temp = folder / TEMP_FOLDER
    shutil.rmtree(temp, ignore_errors=True)
    for orphan in folder.parent.glob(f".{glob.escape(folder.name)}.*.tmp"):  # of atomic_dir(folder)
        shutil.rmtree(orphan, ignore_errors=True)
    _RUN_FOLDERS.append(folder)
    try:
        yield temp
    finally:
        _RUN_FOLDERS.remove(folder)
        with contextlib.suppress(OSError):
            temp.rmdir()


def _temp_folder(target: Path) -> Path:
    """Where the temporary of ``target`` goes: its run folder's ``.tmp`` (same file system), else its folder."""
    parent = target.parent
    if _RUN_FOLDERS:
        resolved = parent.resolve()
        for folder in reversed(_RUN_FOLDERS):
            if (resolved == folder or folder in resolved.parents) and target.resolve() != folder \
                    and os.stat(folder).st_dev == os.stat(resolved).st_dev:
                (folder / TEMP_FOLDER).mkdir(exist_ok=True)
                return folder / TEMP_FOLDER
    return parent


@contextmanager
def _naming(target: Path) -> Iterator[None]:
    """Give an ``OSError`` without a file name (a failed ``write``: disk full) the target's name."""
    try:
        yield
    except OSError as exc:
        if exc.filename is None and exc.errno is not None:
            raise OSError(exc.errno, exc.strerror or str(exc), str(target)) from exc
        raise


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextmanager
def atomic_path(target: str | os.PathLike, *, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path next to ``target``; on success rename it to ``target``.

    ``suffix`` (default: the target's own suffixes, e.g. ``.nii.gz``) is kept on
    the temporary so that writers which infer the format from the name work.
    """
    target = Path(target)
    if suffix is None:
        suffix = "".join(target.suffixes)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=f".tmp{suffix}", dir=_temp_folder(target))
    os.close(fd)
    tmp_path = Path(tmp)
    os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp makes 0600; give the file the usual permissions
    try:
        with _naming(target):
            yield tmp_path
            os.replace(tmp_path, target)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_text_atomic(target: str | os.PathLike, text: str) -> None:
    """Write ``text`` (UTF-8) to ``target`` atomically."""
    with atomic_path(target) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_bytes_atomic(target: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``target`` atomically, flushed to the disk before the rename."""
    with atomic_path(target) as tmp, open(tmp, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


@contextmanager
def atomic_dir(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary folder next to ``target``; on success it replaces ``target``.

    An existing ``target`` folder is removed just before the rename. On error the
    temporary folder and everything in it are removed and ``target`` is untouched.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=_temp_folder(target)))
    os.chmod(tmp, 0o777 & ~_umask())
    try:
        with _naming(target):
            yield tmp
            if target.exists():
                shutil.rmtree(target)
            os.replace(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def read_json(path: Path) -> Any:
    """The JSON value in ``path``; DataError naming the file if it is missing or not valid JSON."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError("file not found", path) from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"not valid JSON ({exc})", path) from None
