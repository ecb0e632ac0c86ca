"""`stride --self-test`: the real window, end to end, once, and one JSON line.

It opens the window, loads the model (default: the built-in demo), types a prompt and clicks
Send exactly as a user would, waits for the reply and prints one JSON line: ok, n_predicted,
tokens_per_second, acceptance, max_ui_stall_ms, screenshot and cpu_variant (which build of
llama.cpp's CPU backend runs: "haswell", "sse42", ... in a portable build, "native" in pip's
default one). When the model cannot be loaded, the window is grabbed with the error dialog up,
and the line says ok false, the error, and where that screenshot is.
It uses a temporary data folder, so it never touches the user's conversations.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from PySide6.QtCore import QTimer
from PySide6.QtGui import QPainter, QPixmap
from PySide6.QtWidgets import QApplication, QDialog, QWidget

from app.controller import ChatController
from app.settings import LoadResult, Settings
from app.store import ConversationStore
from app.theme import apply_theme
from app.views.main_window import MainWindow
from engine.api import DEMO_NAME
from engine.qt_worker import LoadedModel, ReplyResult, cpu_variant

SELF_TEST_PROMPT = "Hello! What can you do?"
SELF_TEST_TIMEOUT_MS = 15 * 60 * 1000
STALL_TIMER_MS = 10
DIALOG_SETTLE_MS = 300  # after a failed load, for the error dialog to be shown and laid out before the grab
SCREENSHOT_NAME = "stride-self-test.png"


class StallMeter:
    """The longest gap between ticks of a 10 ms timer on the GUI thread: how long the UI froze."""

    def __init__(self) -> None:
        self.timer = QTimer(interval=STALL_TIMER_MS)
        self.timer.timeout.connect(self._tick)
        self.last = 0.0
        self.max_gap_ms = 0.0

    def start(self) -> None:
        self.last = time.perf_counter()
        self.timer.start()

    def stop(self) -> None:
        self.timer.stop()

    def _tick(self) -> None:
        now = time.perf_counter()
        self.max_gap_ms = max(self.max_gap_ms, (now - self.last) * 1000)
        self.last = now


def grab_with_dialogs(window: QWidget) -> QPixmap:
    """The window as the user sees it: its dialogs (an error, a question) drawn where they stand over it."""
    shot = window.grab()
    painter = QPainter(shot)
    try:
        origin = window.geometry().topLeft()
        for dialog in window.findChildren(QDialog):
            if dialog.isVisible():
                painter.drawPixmap(dialog.geometry().topLeft() - origin, dialog.grab())
    finally:
        painter.end()
    return shot


def screenshot_path(args: argparse.Namespace, folder: Path) -> Path:
    """--screenshot, else beside --out, else in the self-test's temporary folder."""
    if args.screenshot is not None:
        return Path(args.screenshot)
    return (args.out.parent if args.out else folder) / SCREENSHOT_NAME


def run_self_test(
    app: QApplication, args: argparse.Namespace, started: float, prepare: Callable[[MainWindow], None]
) -> int:
    """Run it; `started` is when the program started (perf_counter), `prepare` what main does to any new
    window (its excepthook)."""
    folder = Path(tempfile.mkdtemp(prefix="stride-self-test-"))
    settings = replace(
        Settings(),
        max_tokens=args.max_tokens,
        threads=args.threads or 0,
        temperature=0.0,
    )
    if args.mtp_depth is not None:
        settings = replace(settings, mtp_depth=args.mtp_depth)
    apply_theme(app, settings.theme)
    window = MainWindow()
    store = ConversationStore(folder / "conversations.db")
    controller = ChatController(window, store, LoadResult(settings, None), settings_path=folder / "settings.toml")
    prepare(window)
    stall = StallMeter()
    outcome: dict[str, Any] = {
        "ok": False,
        "n_predicted": 0,
        "tokens_per_second": None,
        "acceptance": None,
        "max_ui_stall_ms": None,
        "screenshot": None,
        "cpu_variant": None,
    }

    def save_screenshot() -> None:
        app.processEvents()
        shot = screenshot_path(args, folder)
        try:
            shot.parent.mkdir(parents=True, exist_ok=True)
            saved = grab_with_dialogs(window).save(str(shot))
        except OSError:
            saved = False
        if saved:
            outcome["screenshot"] = str(shot)
        else:
            outcome["screenshot_error"] = f"could not write {shot}"

    def send(_loaded: LoadedModel) -> None:
        outcome["cpu_variant"] = cpu_variant()  # the backend is up once a model has loaded
        window.composer.edit.setPlainText(args.prompt)
        stall.start()
        window.composer.send_button.click()  # the same path a user's click takes

    def finished(result: ReplyResult | None) -> None:
        stall.stop()
        save_screenshot()
        outcome["max_ui_stall_ms"] = round(stall.max_gap_ms, 1)
        if result is not None:
            stats = result.stats
            outcome.update(
                n_predicted=stats.n_predicted,
                tokens_per_second=stats.tokens_per_second,
                acceptance=stats.acceptance,
                mtp_depth=stats.mtp_depth,
                stop_reason=stats.stop_reason,
                text=result.text[:200],
            )
            outcome["ok"] = stats.n_predicted > 0 and stats.stop_reason in ("eog", "max_tokens")
        finish()

    def failed(message: str) -> None:
        outcome["error"] = message

        def grab_and_finish() -> None:
            save_screenshot()  # with the error dialog the user would see
            finish()

        QTimer.singleShot(DIALOG_SETTLE_MS, grab_and_finish)

    def timed_out() -> None:
        outcome["error"] = "the self-test did not finish in time"
        save_screenshot()
        finish()

    def finish() -> None:
        window.close()  # the controller shuts the engine down cleanly first
        app.quit()  # an error dialog left open must not keep the self-test alive

    controller.sig_model_ready.connect(send)
    controller.sig_reply_finished.connect(finished)
    controller.sig_model_failed.connect(failed)
    QTimer.singleShot(SELF_TEST_TIMEOUT_MS, timed_out)
    window.show()
    # The first turn of the event loop after show(): the window is on screen.
    QTimer.singleShot(0, lambda: outcome.update(window_shown_s=round(time.perf_counter() - started, 3)))
    controller.start(args.model or DEMO_NAME, args.mtp_model)
    app.exec()
    line = json.dumps(outcome)
    print(line, flush=True)
    if args.out:
        args.out.write_text(line + "\n", encoding="utf-8")
    return 0 if outcome["ok"] else 1
