"""Compile the C++ (and, where possible, CUDA) extension ahead of time.

    python -m anatokernels.build

Exits non-zero if the build fails, so ``make test`` stops loudly.
"""

import sys

from anatokernels import _extension


def main() -> int:
    if _extension.load(build=True):
        print(f"anatokernels: extension ready ({_extension._state['loaded']})")
        return 0
    print(f"anatokernels: extension unavailable: {_extension.status()}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
