"""The README's picture of pictures: a reply to an attached picture, taken from the real window with
the fixture model and projector, and checked for what it shows (the picture in the user's bubble,
a thumbnail waiting in the composer, the speed panel's picture-encoding row)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
from PySide6.QtGui import QColor
from PySide6.QtWidgets import QApplication
from pytestqt.qtbot import QtBot

from app.theme import apply_theme
from tests.app.conftest import AppHarness
from tests.app.pixels import count_colour, region, rgb_pixels
from tests.app.test_pictures import first_word, send, vision_app
from tests.fixtures import vision as vf
from tests.fixtures.vision import VisionPair, vision_pair  # noqa: F401 (a fixture)

SKY, SUN, HILL = (40, 90, 200), (250, 200, 40), (40, 150, 70)


def landscape(width: int = 480, height: int = 320) -> np.ndarray:
    """A blue sky with a sun over a green hill: mostly blue, so the fixture model answers 'blue'."""
    y, x = np.mgrid[0:height, 0:width]
    pixels = np.empty((height, width, 3), dtype=np.uint8)
    pixels[:] = SKY
    pixels[(x - width * 0.7) ** 2 + (y - height * 0.3) ** 2 < (height * 0.12) ** 2] = SUN
    pixels[y > height * 0.78 + 0.08 * height * np.sin(x / width * np.pi * 2)] = HILL
    return pixels


def test_pictures_screenshot(
    qtbot: QtBot,
    make_app: Callable[..., AppHarness],
    vision_pair: VisionPair,  # noqa: F811
    tmp_path: Path,
    screenshot_dir: Path,
) -> None:
    qt_app = QApplication.instance()
    assert isinstance(qt_app, QApplication)
    apply_theme(qt_app, "light")  # as the README's other pictures, whichever test ran before
    app = vision_app(make_app, vision_pair)
    app.controller.settings.max_tokens = 24  # a few words of the reply to show
    window = app.window
    window.resize(1280, 820)
    app.window.composer.attach_files([vf.write_png(tmp_path / "hills.png", landscape())])
    result = send(qtbot, app, "What colour is the sky in this picture?")
    assert result.reasoning.startswith(first_word(2))
    # A second picture waits in the composer, so its thumbnail strip is in the shot too.
    window.composer.attach_files([vf.write_png(tmp_path / "sun.png", vf.solid(SUN, 200, 200))])
    window.composer.edit.setPlainText("And this one?")
    qtbot.waitUntil(lambda: window.composer.strip.isVisible())
    window.transcript.toggle_reasoning(1)  # the fixture model's reply is all thinking: show it

    screenshot_dir.mkdir(parents=True, exist_ok=True)
    shot = window.grab()
    assert shot.save(str(screenshot_dir / "pictures.png"))

    pixels, ratio = rgb_pixels(shot), shot.devicePixelRatio()
    view = window.transcript
    layout = view.delegate.layout(0)
    [(_digest, place)] = layout.pictures
    assert (place.width(), place.height()) == (160, 106)  # 480 x 320 fitted into 160 px (the thumbnail, 320 x 213)
    in_transcript = region(pixels, window, view.viewport(), ratio)
    assert count_colour(in_transcript, QColor(*SKY), tolerance=24) > 0.5 * place.width() * place.height()
    assert count_colour(in_transcript, QColor(*HILL), tolerance=24) > 200
    in_composer = region(pixels, window, window.composer.strip, ratio)
    assert count_colour(in_composer, QColor(*SUN), tolerance=24) > 0.8 * 56 * 56
    assert window.stats_panel.picture_value.isVisible()
