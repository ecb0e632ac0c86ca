"""Render resources/icons/stride.svg to the PNGs the packages need, with Qt (already a dependency).

    python installer/make_icons.py OUT_DIR

writes OUT_DIR/stride-<N>.png for the Linux icon theme's fixed sizes and for PyInstaller, which
turns a PNG into the Windows .ico and the macOS .icns (with Pillow).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")  # a build machine has no display

from PySide6.QtGui import QGuiApplication, QIcon

SIZES = (48, 64, 128, 256, 512)
SOURCE = Path(__file__).resolve().parents[1] / "resources" / "icons" / "stride.svg"


def main(out_dir: Path) -> None:
    _app = QGuiApplication.instance() or QGuiApplication([])
    out_dir.mkdir(parents=True, exist_ok=True)
    icon = QIcon(str(SOURCE))
    for size in SIZES:
        target = out_dir / f"stride-{size}.png"
        pixmap = icon.pixmap(size, size)
        if pixmap.width() != size or not pixmap.save(str(target)):
            raise SystemExit(f"make_icons: could not render {SOURCE} at {size} px (is Qt's SVG plugin missing?)")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
