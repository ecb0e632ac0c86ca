"""Screenshots of the main window for the README, taken from the real app after a real reply."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from PySide6.QtWidgets import QApplication
from pytestqt.qtbot import QtBot

from app.theme import apply_theme
from tests.app.conftest import AppHarness
from tests.app.test_app import send


@pytest.mark.parametrize("theme", ["light", "dark"])
def test_main_window_screenshot(
    qtbot: QtBot, make_app: Callable[..., AppHarness], theme: str, screenshot_dir: Path
) -> None:
    app = QApplication.instance()
    assert isinstance(app, QApplication)
    apply_theme(app, theme)
    try:
        harness = make_app()
        harness.window.resize(1280, 820)
        send(qtbot, harness, "Hello! What can you do?")
        harness.window.act_tint.setChecked(theme == "dark")  # show the drafted-token tint in one of them
        QApplication.processEvents()  # deliver the tint change; grab() then paints synchronously
        screenshot_dir.mkdir(parents=True, exist_ok=True)
        path = screenshot_dir / f"main-{theme}.png"
        assert harness.window.grab().save(str(path))
        assert path.stat().st_size > 20_000
    finally:
        apply_theme(app, "light")
