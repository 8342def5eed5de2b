"""``anato`` command-line interface.

Errors of type :class:`anatoseg.errors.AnatoError` are printed as one line
``error: ...`` on stderr with exit code 1, never as a traceback.
"""

from __future__ import annotations

import sys

from anatoseg.cli import (
    backends_command,  # noqa: F401  (registers `anato backends`)
    demo_command,  # noqa: F401  (registers `anato demo`)
    evaluate_command,  # noqa: F401  (registers `anato evaluate`)
    phantom_command,  # noqa: F401  (registers `anato phantom`)
    predict_command,  # noqa: F401  (registers `anato predict`)
    pretrain_command,  # noqa: F401  (registers `anato pretrain`)
    pseudolabel_command,  # noqa: F401  (registers `anato pseudolabel`)
    train_command,  # noqa: F401  (registers `anato train`)
    view_command,  # noqa: F401  (registers `anato view`)
)
from anatoseg.cli.app import app
from anatoseg.errors import AnatoError


def main() -> None:
    try:
        app(standalone_mode=True)
    except AnatoError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        sys.exit(130)


__all__ = ["app", "main"]
