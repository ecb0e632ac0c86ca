"""Screenshots of the main window for the README, taken from the real app after a real reply.

They show what a new user sees: the default settings (the harness's test settings, such as a
2,048-token context and one thread, are put back to the defaults), the demo model, one reply."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from PySide6.QtCore import QPoint
from PySide6.QtWidgets import QApplication
from pytestqt.qtbot import QtBot

from app.settings import Settings
from app.theme import apply_theme
from tests.app.conftest import AppHarness
from tests.app.test_app import send

DEFAULTS = Settings()


@pytest.mark.parametrize("theme", ["light", "dark"])
def test_main_window_screenshot(
    qtbot: QtBot, make_app: Callable[..., AppHarness], theme: str, screenshot_dir: Path
) -> None:
    app = QApplication.instance()
    assert isinstance(app, QApplication)
    apply_theme(app, theme)
    try:
        harness = make_app(
            n_ctx=DEFAULTS.n_ctx, threads=DEFAULTS.threads, temperature=DEFAULTS.temperature, theme=theme
        )
        window = harness.window
        window.resize(1280, 820)
        send(qtbot, harness, "Hello! What can you do?")
        window.act_tint.setChecked(theme == "dark")  # show the drafted-token tint in one of them
        # The pointer over the reply, so its buttons (Copy, Regenerate) show in the picture.
        view, model = window.transcript, window.transcript_model
        reply = model.rowCount() - 1
        frame = view.delegate.layout(reply).frame
        target = view.visualRect(model.index(reply)).topLeft() + QPoint(view.content_shift(), 0) + frame.center()
        qtbot.mouseMove(view.viewport(), target + QPoint(0, 1))  # a move: the pointer may be there already
        qtbot.mouseMove(view.viewport(), target)
        assert view.hovered_target(reply) == ""
        QApplication.processEvents()  # deliver the tint change; grab() then paints synchronously

        # What the picture must show: the defaults, the model's own name and an idle speed panel.
        loaded = harness.controller.loaded
        assert loaded is not None and window.context_meter.total == loaded.n_ctx  # the default, or the model's
        assert loaded.n_ctx == min(DEFAULTS.n_ctx, 4096)  # trained context (the demo's) when that is smaller
        assert window.model_label.text().startswith("Stride demo · ")
        assert not window.stats_panel.is_live()
        assert all(b.isEnabled() for b in (window.sidebar.new_button, window.sidebar.rename_button))

        screenshot_dir.mkdir(parents=True, exist_ok=True)
        path = screenshot_dir / f"main-{theme}.png"
        assert window.grab().save(str(path))
    finally:
        apply_theme(app, "light")
