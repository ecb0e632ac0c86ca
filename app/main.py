"""Entry point of the `stride` GUI."""

from __future__ import annotations

import sys


def main() -> int:
    print("The Stride GUI is not yet available; use `stride-cli` (see README.md).", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
