"""Paths to bundled resources (icons, styles), in a source tree and in a frozen bundle alike."""

from __future__ import annotations

import sys
from pathlib import Path

from PySide6.QtGui import QIcon


def resources_dir() -> Path:
    # PyInstaller unpacks data next to the executable (sys._MEIPASS); from source it is the repo's resources/.
    frozen = getattr(sys, "_MEIPASS", None)
    return Path(frozen) / "resources" if frozen else Path(__file__).resolve().parents[1] / "resources"


def icon(name: str) -> QIcon:
    return QIcon(str(resources_dir() / "icons" / f"{name}.svg"))


def stylesheet() -> str:
    return (resources_dir() / "styles" / "common.qss").read_text(encoding="utf-8")
