"""Screenshots of the main window for the README, taken from the real app after a real reply.

They show what a new user sees: the default settings (the harness's test settings, such as a
2,048-token context and one thread, are put back to the defaults), the demo model, one reply.
The test checks what the picture holds: the reply and the speed panel's figures in the widgets'
state, and in the pixels the drafted-token tint (dark shot only) and a drawn panel."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from PySide6.QtCore import QPoint, Qt
from PySide6.QtGui import QPalette
from PySide6.QtWidgets import QApplication
from pytestqt.qtbot import QtBot

from app.settings import Settings
from app.theme import apply_theme
from app.views.figures import count, percent, rate
from engine.qt_worker import ReplyResult
from tests.app.conftest import AppHarness
from tests.app.pixels import count_colour, drawn_fraction, region, rgb_pixels
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
        result = send(qtbot, harness, "Hello! What can you do?")
        assert isinstance(result, ReplyResult)
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

        # The reply, as the engine ended it and the transcript paints it. Auto depth may stop drafting
        # before the answer on a busy machine, so the drafted spans may be none.
        message = model.message(reply)
        assert (message.role, message.status) == ("assistant", "complete")
        assert message.content.strip() and message.content.strip() == result.text.strip()
        assert model.data(model.index(reply), Qt.ItemDataRole.DisplayRole) == message.content
        drafted_spans = model.state(reply).spans("answer")
        # The speed panel: the reply's final figures, as the engine sent them.
        panel, stats = window.stats_panel, result.stats
        assert panel.last_snapshot == stats and stats.n_predicted > 0
        assert panel.now_value.text() == rate(stats.tokens_per_second)
        shown = panel.displayed_text().splitlines()
        assert f"Generated tokens: {count(stats.n_predicted)}" in shown
        assert f"Acceptance: {percent(stats.acceptance)}" in shown

        screenshot_dir.mkdir(parents=True, exist_ok=True)
        path = screenshot_dir / f"main-{theme}.png"
        shot = window.grab()
        assert shot.save(str(path))

        # The pixels: the tint behind drafted text exactly when it is on and there is some; a drawn panel
        # whose head bars are filled in the accent colour exactly when drafts were accepted.
        pixels, ratio = rgb_pixels(shot), shot.devicePixelRatio()
        tinted = count_colour(region(pixels, window, view.viewport(), ratio), view.delegate.theme.tint)
        tint_shown = theme == "dark" and bool(drafted_spans)
        assert tinted > 100 if tint_shown else tinted == 0, tinted
        palette = panel.palette()
        assert drawn_fraction(region(pixels, window, panel, ratio), palette.color(panel.backgroundRole())) > 0.05
        bar_fill = count_colour(
            region(pixels, window, panel.head_bars, ratio), palette.color(QPalette.ColorRole.Highlight)
        )
        assert (bar_fill > 0) == (stats.n_accepted > 0), bar_fill
    finally:
        apply_theme(app, "light")
