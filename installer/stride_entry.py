"""The frozen bundle's one executable: `stride` opens the app, `stride-cli` (a link to it) is the CLI.

One executable keeps the bundle to a single copy of the Python runtime and its archive; the
name it was started under picks the entry point, as the `stride` and `stride-cli` scripts do
in a pip install.
"""

from __future__ import annotations

import sys
from pathlib import Path


def main() -> int:
    if Path(sys.argv[0]).stem == "stride-cli":
        from engine.cli import main as cli_main

        return cli_main()
    from app.main import main as app_main

    return app_main()


if __name__ == "__main__":
    sys.exit(main())
