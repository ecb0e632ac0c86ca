"""The Server panel's screenshot for the README: the window serving the demo model, one request
from the official `openai` client in its log. The test checks what the picture holds."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from PySide6.QtWidgets import QApplication
from pytestqt.qtbot import QtBot

from app.settings import Settings
from tests.app.conftest import AppHarness
from tests.app.pixels import drawn_fraction, region, rgb_pixels
from tests.app.test_app import send
from tests.app.test_server_panel import InThread, client, turn_on

DEFAULTS = Settings()


def test_server_panel_screenshot(qtbot: QtBot, make_app: Callable[..., AppHarness], screenshot_dir: Path) -> None:
    harness = make_app(n_ctx=DEFAULTS.n_ctx, threads=DEFAULTS.threads, temperature=DEFAULTS.temperature)
    window, panel = harness.window, harness.window.server_panel
    window.resize(1500, 820)
    send(qtbot, harness, "Hello! What can you do?")
    url = turn_on(qtbot, harness)
    messages: Any = [{"role": "user", "content": "Write a haiku about fast local models."}]
    with qtbot.waitSignal(harness.controller.sig_server_request, timeout=60_000):
        call = InThread(lambda: client(url).chat.completions.create(model="step", messages=messages, max_tokens=48))
    call.join()
    assert call.error is None
    qtbot.waitUntil(lambda: panel.in_flight_label.text() == "Requests in flight: 0")
    QApplication.processEvents()

    # What the picture must show: running, the address to copy, the request with its figures.
    assert panel.isVisible() and panel.state_label.text() == "● Running"
    assert panel.address_edit.text() == url + "/v1" and panel.copy_button.isEnabled()
    assert not panel.problem_label.isVisible()
    row = panel.log.topLevelItem(0)
    assert row is not None and panel.log.topLevelItemCount() == 1
    assert [row.text(i) for i in (1, 2, 4)] == ["/v1/chat/completions", str(call.result.usage.completion_tokens), "200"]
    assert float(row.text(3)) > 0
    assert panel.log.columnWidth(1) >= panel.log.fontMetrics().horizontalAdvance("/v1/chat/completions")  # not elided
    assert panel.log.header().length() <= panel.log.viewport().width()  # no column scrolled out of sight

    screenshot_dir.mkdir(parents=True, exist_ok=True)
    shot = window.grab()
    assert shot.save(str(screenshot_dir / "server.png"))
    pixels, ratio = rgb_pixels(shot), shot.devicePixelRatio()
    log = region(pixels, window, panel.log.viewport(), ratio)
    assert drawn_fraction(log, panel.log.palette().color(panel.log.viewport().backgroundRole())) > 0.005
