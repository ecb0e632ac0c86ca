"""What a screenshot shows, read from its pixels: so a screenshot test checks what was drawn, not the file size."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt
from PySide6.QtCore import QPoint, QRect
from PySide6.QtGui import QColor, QImage, QPixmap
from PySide6.QtWidgets import QWidget

from app.theme import ACCENT

Pixels = npt.NDArray[np.uint8]


def rgb_pixels(image: QImage | QPixmap) -> Pixels:
    """Height x width x 3 (red, green, blue), in device pixels."""
    rgb = (image.toImage() if isinstance(image, QPixmap) else image).convertToFormat(QImage.Format.Format_RGB888)
    rows = np.frombuffer(rgb.constBits(), np.uint8).reshape(rgb.height(), rgb.bytesPerLine())
    return rows[:, : rgb.width() * 3].reshape(rgb.height(), rgb.width(), 3).copy()


def box(pixels: Pixels, rect: QRect, ratio: float = 1.0) -> Pixels:
    """The pixels of `rect` (in the shot widget's coordinates) in a shot taken at `ratio`."""
    top, left = round(rect.top() * ratio), round(rect.left() * ratio)
    return pixels[top : top + round(rect.height() * ratio), left : left + round(rect.width() * ratio)]


def region(pixels: Pixels, shot_of: QWidget, part: QWidget, ratio: float = 1.0) -> Pixels:
    """The pixels of `part` (a descendant of `shot_of`) in a shot of `shot_of` taken at `ratio`."""
    return box(pixels, QRect(part.mapTo(shot_of, QPoint(0, 0)), part.size()), ratio)


def count_colour(pixels: Pixels, colour: QColor, tolerance: int = 2) -> int:
    """How many pixels are `colour`, each channel within `tolerance`."""
    wanted = np.array([colour.red(), colour.green(), colour.blue()], np.int16)
    return int((np.abs(pixels.astype(np.int16) - wanted).max(axis=2) <= tolerance).sum())


def drawn_fraction(pixels: Pixels, background: QColor, tolerance: int = 8) -> float:
    """The share of pixels that differ from the background: text, lines, bars."""
    total = int(pixels.shape[0]) * int(pixels.shape[1])
    return 1.0 - count_colour(pixels, background, tolerance) / max(1, total)


def load(path: Path | str) -> Pixels:
    image = QImage(str(path))
    assert not image.isNull(), f"{path} is not a picture"
    return rgb_pixels(image)


def speed_panel_accent(window_shot: Pixels) -> int:
    """Accent pixels in the right quarter of a main-window shot, where the speed panel sits: its
    sparkline and head bars after a reply with drafts accepted, none before a reply."""
    return count_colour(window_shot[:, window_shot.shape[1] * 3 // 4 :], ACCENT, tolerance=0)


def strongly_red(pixels: Pixels) -> int:
    """Pixels of a clear red, such as an error dialog's icon."""
    red, green, blue = (pixels[..., channel].astype(np.int16) for channel in range(3))
    return int(((red > 180) & (green < 100) & (blue < 100)).sum())
