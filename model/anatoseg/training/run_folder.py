"""What the run folders of stages 1, 2 and 3 hold in common: the lock, the config copy and the case cache.

A run folder is held by one process at a time (:func:`hold`): ``OUT/.lock``
(:data:`LOCK_NAME`) is locked with ``flock`` for the whole command and holds the
process id. The operating system drops the lock when the process ends, however it
ends, so a killed run never leaves the folder locked. While held, the folder's
temporaries live in ``OUT/.tmp`` (:func:`anatoseg.data.atomic.run_temporaries`),
emptied at the start.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from anatoseg.data.atomic import TEMP_FOLDER, run_temporaries, write_text_atomic
from anatoseg.errors import AnatoError

CONFIG_NAME = "config.yaml"  # the run's resolved config
CACHE_NAME = "preprocessed"  # the preprocessed-case cache (anatoseg.training.cache)
LOCK_NAME = ".lock"  # flock-ed while a process works in the folder
RUN_FILES = (LOCK_NAME, TEMP_FOLDER)  # what a run keeps in its folder besides its outputs


@contextlib.contextmanager
def hold(out: str | os.PathLike) -> Iterator[Path]:
    """Create ``out`` if needed and hold it for this process until the block ends.

    Raises AnatoError when ``out`` is a file, or when another process holds it
    ("is in use by another anato process (pid N)"). A folder created here that ends
    with nothing but the lock in it (the run failed before writing) is removed again.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise AnatoError("exists and is not a folder", out)
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    handle = open(out / LOCK_NAME, "a+")  # noqa: SIM115 (held open for the whole block)
    locked = False
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            pid = handle.read().strip() or "?"
            raise AnatoError(f"is in use by another anato process (pid {pid}); wait for it to end or choose "
                             "another folder", out) from None
        locked = True
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        with run_temporaries(out):
            yield out
    finally:
        if locked and created:
            _remove_if_unused(out)
        handle.close()  # closing the last descriptor releases the lock


def _remove_if_unused(out: Path) -> None:
    """Remove a folder :func:`hold` created when a failed run left nothing in it but the lock."""
    with contextlib.suppress(OSError):
        if {path.name for path in out.iterdir()} <= {LOCK_NAME}:
            (out / LOCK_NAME).unlink()
            out.rmdir()


def write_config(out: Path, values: dict[str, Any]) -> None:
    """``out/config.yaml``: the run's config (its ``to_dict()``), keys in their declared order."""
    write_text_atomic(out / CONFIG_NAME, yaml.safe_dump(values, sort_keys=False))


def jsonable(values: Any) -> Any:
    """``values`` as plain JSON types (tuples become lists), as checkpoints store them."""
    return json.loads(json.dumps(values))
