"""``anato`` command-line interface.

Errors of type :class:`anatoseg.errors.AnatoError` are printed as one line
``error: ...`` on stderr with exit code 1, never as a traceback; so are the
failures of the machine rather than of the code: an ``OSError`` (disk full,
read-only folder, a file where a folder should be, ...: the path and the cause)
and an allocation that does not fit in memory. Ctrl-C prints one line and exits 130.
"""

from __future__ import annotations

import sys

from anatoseg.cli import (
    backends_command,  # noqa: F401  (registers `anato backends`)
    demo_command,  # noqa: F401  (registers `anato demo`)
    evaluate_command,  # noqa: F401  (registers `anato evaluate`)
    experiment_command,  # noqa: F401  (registers `anato experiment`)
    phantom_command,  # noqa: F401  (registers `anato phantom`)
    predict_command,  # noqa: F401  (registers `anato predict`)
    pretrain_command,  # noqa: F401  (registers `anato pretrain`)
    pseudolabel_command,  # noqa: F401  (registers `anato pseudolabel`)
    train_command,  # noqa: F401  (registers `anato train`)
    view_command,  # noqa: F401  (registers `anato view`)
)
from anatoseg.cli.app import app
from anatoseg.errors import AnatoError, describe_memory_error, describe_os_error

INTERRUPTED = "error: interrupted"
INTERRUPTED_TRAINING = "error: interrupted; the last checkpoint is kept, continue with --resume"


def _fail(message: str, code: int = 1) -> None:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(code)


def main() -> None:
    try:
        app(standalone_mode=True)
    except AnatoError as exc:
        _fail(str(exc))
    except OSError as exc:
        _fail(describe_os_error(exc))
    except (MemoryError, RuntimeError) as exc:  # torch reports a failed allocation as a RuntimeError
        message = describe_memory_error(exc)
        if message is None:
            raise
        _fail(message)
    except KeyboardInterrupt:
        _interrupted()
    except SystemExit as exc:  # typer turns Ctrl-C into a silent exit 130
        if exc.code == 130 and _caused_by_interrupt(exc):
            _interrupted()
        raise


def _caused_by_interrupt(exc: BaseException | None) -> bool:
    seen = 0
    while exc is not None and seen < 8:
        if isinstance(exc, KeyboardInterrupt):
            return True
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return False


def _interrupted() -> None:
    training = sys.argv[1:2] == ["train"]
    print(INTERRUPTED_TRAINING if training else INTERRUPTED, file=sys.stderr)
    sys.exit(130)


__all__ = ["app", "main"]
