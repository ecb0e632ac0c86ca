"""Paths to bundled resources (icons, styles), in a source tree and in a frozen bundle alike.

The icons are one-colour SVGs. `icon()` paints them in the palette's button-text colour when they
are drawn, so they read as clearly as the button captions in the light and the dark theme alike
(and switch with the theme), while a disabled button's icon still greys out with its text.
"""

from __future__ import annotations

import sys
from pathlib import Path

from PySide6.QtCore import QPoint, QRect, QSize
from PySide6.QtGui import QColor, QGuiApplication, QIcon, QIconEngine, QPainter, QPalette, QPixmap

FULL_COLOUR = {"stride"}  # the app icon keeps its own colours


def resources_dir() -> Path:
    # PyInstaller unpacks data next to the executable (sys._MEIPASS); from source it is the repo's resources/.
    frozen = getattr(sys, "_MEIPASS", None)
    return Path(frozen) / "resources" if frozen else Path(__file__).resolve().parents[1] / "resources"


def _svg(name: str) -> str:
    return str(resources_dir() / "icons" / f"{name}.svg")


def tinted_pixmap(name: str, size: QSize, color: QColor, device_pixel_ratio: float = 1.0) -> QPixmap:
    """The icon `name` drawn in one colour at `size` (device-independent pixels)."""
    pixels = QSize(max(1, round(size.width() * device_pixel_ratio)), max(1, round(size.height() * device_pixel_ratio)))
    pixmap = QIcon(_svg(name)).pixmap(pixels)  # the SVG icon engine renders at any size
    painter = QPainter(pixmap)
    painter.setCompositionMode(QPainter.CompositionMode.CompositionMode_SourceIn)  # keep the shape, take the colour
    painter.fillRect(pixmap.rect(), color)
    painter.end()
    pixmap.setDevicePixelRatio(device_pixel_ratio)
    return pixmap


def icon_color(mode: QIcon.Mode, palette: QPalette | None = None) -> QColor:
    """The colour a themed icon takes in this mode: the button text's, greyed when disabled."""
    palette = palette or QGuiApplication.palette()
    if mode == QIcon.Mode.Disabled:
        return palette.color(QPalette.ColorGroup.Disabled, QPalette.ColorRole.ButtonText)
    if mode == QIcon.Mode.Selected:
        return palette.color(QPalette.ColorRole.HighlightedText)
    return palette.color(QPalette.ColorGroup.Active, QPalette.ColorRole.ButtonText)


class _ThemedIconEngine(QIconEngine):
    """Paints a one-colour SVG in the application palette's colour for the mode, at paint time."""

    def __init__(self, name: str) -> None:
        super().__init__()
        self._name = name
        self._cache: dict[tuple[int, int, int, float], QPixmap] = {}

    def _render(self, size: QSize, mode: QIcon.Mode, ratio: float) -> QPixmap:
        color = icon_color(mode)
        key = (size.width(), size.height(), color.rgba(), ratio)
        pixmap = self._cache.get(key)
        if pixmap is None:
            if len(self._cache) > 32:  # a theme switch or two, a few sizes: never many
                self._cache.clear()
            pixmap = self._cache[key] = tinted_pixmap(self._name, size, color, ratio)
        return pixmap

    def pixmap(self, size: QSize, mode: QIcon.Mode, state: QIcon.State) -> QPixmap:
        return self._render(size, mode, 1.0)

    def scaledPixmap(self, size: QSize, mode: QIcon.Mode, state: QIcon.State, scale: float) -> QPixmap:
        return self._render(size, mode, scale)

    def paint(self, painter: QPainter, rect: QRect, mode: QIcon.Mode, state: QIcon.State) -> None:
        ratio = painter.device().devicePixelRatioF() if painter.device() is not None else 1.0
        side = min(rect.width(), rect.height())
        pixmap = self._render(QSize(side, side), mode, ratio)
        corner = rect.topLeft() + QPoint((rect.width() - side) // 2, (rect.height() - side) // 2)
        painter.drawPixmap(corner, pixmap)

    def actualSize(self, size: QSize, mode: QIcon.Mode, state: QIcon.State) -> QSize:
        side = min(size.width(), size.height())
        return QSize(side, side)

    def clone(self) -> QIconEngine:
        return _ThemedIconEngine(self._name)

    def key(self) -> str:
        return "stride-themed"


def icon(name: str) -> QIcon:
    if name in FULL_COLOUR:
        return QIcon(_svg(name))
    return QIcon(_ThemedIconEngine(name))


def stylesheet() -> str:
    return (resources_dir() / "styles" / "common.qss").read_text(encoding="utf-8")
