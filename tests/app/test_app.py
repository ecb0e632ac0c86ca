"""The whole app as a user drives it: offscreen window, real engine thread, demo and fixture models."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest
from PySide6.QtWidgets import QInputDialog
from pytestqt.qtbot import QtBot

from app.main import StallMeter
from app.settings import load_settings
from app.store import ConversationStore
from app.views.settings_dialog import SettingsDialog
from engine import automemory
from engine.demo import ANSWER, REASONING
from tests.app.conftest import AppHarness

ROOT = Path(__file__).resolve().parents[2]


def send(qtbot: QtBot, app: AppHarness, text: str, timeout: int = 60_000) -> object:
    app.window.composer.edit.setPlainText(text)
    with qtbot.waitSignal(app.controller.sig_reply_finished, timeout=timeout) as blocker:
        app.window.composer.send_button.click()
    return blocker.args[0]


def test_send_a_message_and_see_the_streamed_reply(qtbot: QtBot, make_app: Callable[..., AppHarness]) -> None:
    app = make_app()
    deltas: list[object] = []
    app.controller.engine.worker.sig_delta.connect(lambda _rid, delta: deltas.append(delta))
    result = send(qtbot, app, "Hello there")
    assert len(deltas) > 5  # streamed in pieces, not delivered at the end
    model = app.window.transcript_model
    user, reply = model.message(model.rowCount() - 2), model.message(model.rowCount() - 1)
    assert (user.role, user.content) == ("user", "Hello there")
    assert reply.content.strip() == ANSWER and reply.reasoning.strip() == REASONING
    assert reply.status == "complete"
    saved = app.store.messages(app.controller.conversation_id)[-1]  # type: ignore[arg-type]
    assert saved.content == reply.content and saved.stats == result.stats  # type: ignore[attr-defined]
    assert app.window.composer.send_button.isVisible()


def test_stop_mid_reply_keeps_the_partial_reply(
    qtbot: QtBot, make_app: Callable[..., AppHarness], live_gguf: Path
) -> None:
    app = make_app(str(live_gguf), max_tokens=100_000)
    count = {"n": 0}

    def on_delta(_rid: int, _delta: object) -> None:
        count["n"] += 1
        if count["n"] == 20:
            app.window.composer.stop_button.click()

    app.controller.engine.worker.sig_delta.connect(on_delta)
    result = send(qtbot, app, "alpha bravo")
    assert result.stats.stop_reason == "cancelled"  # type: ignore[attr-defined]
    saved = app.store.messages(app.controller.conversation_id)[-1]  # type: ignore[arg-type]
    assert saved.status == "stopped" and len(saved.reasoning + saved.content) > 0


def test_stats_panel_final_figures_equal_the_engine(qtbot: QtBot, make_app: Callable[..., AppHarness]) -> None:
    app = make_app()
    result = send(qtbot, app, "Hi")
    stats = result.stats  # type: ignore[attr-defined]
    assert app.window.stats_panel.last_snapshot == stats
    text = app.window.stats_panel.displayed_text()
    assert f"{stats.n_accepted:,}" in text and f"{stats.n_drafted:,}" in text
    assert f"{round(stats.acceptance * 100)}%" in text


def test_settings_survive_a_restart(qtbot: QtBot, make_app: Callable[..., AppHarness]) -> None:
    app = make_app()
    changed = replace(app.controller.settings, temperature=1.3, mtp_depth=2, system_prompt="Be brief.")
    app.controller.apply_settings(changed)
    reloaded = load_settings(app.folder / "settings.toml")
    assert reloaded.message is None
    assert (reloaded.settings.temperature, reloaded.settings.mtp_depth, reloaded.settings.system_prompt) == (
        1.3,
        2,
        "Be brief.",
    )


def test_depth_change_applies_to_the_next_reply_without_reloading(
    qtbot: QtBot, make_app: Callable[..., AppHarness]
) -> None:
    app = make_app()
    first = send(qtbot, app, "one")
    load_request = app.controller.load_request
    app.controller.apply_settings(replace(app.controller.settings, mtp_depth=1))
    second = send(qtbot, app, "two")
    assert first.stats.mtp_depth == 3 and second.stats.mtp_depth == 1  # type: ignore[attr-defined]
    assert app.controller.load_request == load_request


def test_bad_model_shows_an_error_and_the_app_still_works(
    qtbot: QtBot, make_app: Callable[..., AppHarness], tmp_path: Path
) -> None:
    bad = tmp_path / "notes.gguf"
    bad.write_text("not a model")
    app = make_app("", wait_loaded=False)
    with qtbot.waitSignal(app.controller.sig_model_failed, timeout=30_000) as failed:
        app.controller.load_model(str(bad), "")
    assert "notes.gguf" in failed.args[0]
    assert app.window.notice.isVisible()
    with qtbot.waitSignal(app.controller.sig_model_ready, timeout=60_000):
        app.window.notice.primary.click()  # "Use the demo model"
    assert send(qtbot, app, "Hello") is not None


def test_generation_never_blocks_the_gui_thread(
    qtbot: QtBot, make_app: Callable[..., AppHarness], live_gguf: Path
) -> None:
    app = make_app(str(live_gguf), max_tokens=1500)
    meter = StallMeter()
    meter.start()
    send(qtbot, app, "alpha bravo charlie")
    meter.stop()
    assert meter.max_gap_ms < 500, meter.max_gap_ms


def test_switching_conversations_keeps_the_reply_in_its_own(
    qtbot: QtBot, make_app: Callable[..., AppHarness], live_gguf: Path
) -> None:
    app = make_app(str(live_gguf), max_tokens=1200)
    first_id = app.controller.conversation_id
    app.window.composer.edit.setPlainText("alpha bravo")
    with qtbot.waitSignal(app.controller.sig_reply_finished, timeout=60_000):
        app.window.composer.send_button.click()
        qtbot.waitUntil(lambda: app.controller.active is not None and len(app.controller.active.reasoning) > 20)
        app.controller.new_conversation()
    assert app.controller.conversation_id != first_id
    assert app.window.transcript_model.rowCount() == 0  # the new chat stays empty
    saved = app.store.messages(first_id)  # type: ignore[arg-type]
    assert saved[-1].role == "assistant" and len(saved[-1].reasoning) > 20


def test_pictures_without_a_vision_file_say_how_to_get_one(qtbot: QtBot, make_app: Callable[..., AppHarness]) -> None:
    app = make_app()
    app.window.composer.sig_image_dropped.emit()
    assert app.window.notice.isVisible()
    assert "loaded without a vision file" in app.window.notice.label.text()
    assert "mmproj" in app.window.notice.label.text()


KILL_SCRIPT = """
import sys, time
from pathlib import Path
from dataclasses import replace
from PySide6.QtWidgets import QApplication
from app.controller import ChatController
from app.settings import LoadResult, Settings
from app.store import ConversationStore
from app.views.main_window import MainWindow
app = QApplication([])
folder = Path(sys.argv[1])
settings = replace(Settings(), model_path=sys.argv[2], threads=1, temperature=0.0, max_tokens=100000, n_ctx=32768)
window = MainWindow()
controller = ChatController(window, ConversationStore(folder / "conversations.db"), LoadResult(settings, None),
                            settings_path=folder / "settings.toml")
def go(_loaded):
    window.composer.edit.setPlainText("alpha bravo")
    window.composer.send_button.click()
def progress(*_):
    active = controller.active
    if active is not None:
        print(time.monotonic(), len(active.reasoning) + len(active.content), flush=True)
controller.engine.worker.sig_delta.connect(progress)
controller.sig_model_ready.connect(go)
window.show()
controller.start()
app.exec()
"""


def test_a_conversation_survives_killing_the_app_mid_reply(tmp_path: Path, long_live_gguf: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "QT_QPA_PLATFORM": "offscreen"}
    proc = subprocess.Popen(
        [sys.executable, "-c", KILL_SCRIPT, str(tmp_path), str(long_live_gguf)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert proc.stdout is not None
    progress: list[tuple[float, int]] = []
    for line in proc.stdout:  # the child prints (time, characters so far) for every streamed delta
        when, n_chars = line.split()
        progress.append((float(when), int(n_chars)))
        if progress[-1][0] - progress[0][0] > 3.0:
            break
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    (t0, n0), (t1, n1) = progress[0], progress[-1]
    chars_per_second = (n1 - n0) / (t1 - t0)

    db = tmp_path / "conversations.db"
    with sqlite3.connect(db) as con:
        assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    store = ConversationStore(db)
    assert store.mark_interrupted() == 1
    reply = store.messages(store.list_conversations()[0].id)[-1]
    saved = len(reply.reasoning) + len(reply.content)
    assert reply.role == "assistant" and reply.status == "stopped"
    # At most a second of text is lost (plus the deltas printed after the last one we read).
    assert n1 - saved <= chars_per_second * 1.0 + 200, (n1, saved, chars_per_second)
    store.close()


def test_each_conversation_keeps_its_own_system_prompt(
    qtbot: QtBot, make_app: Callable[..., AppHarness], monkeypatch: pytest.MonkeyPatch
) -> None:
    app = make_app()
    first = app.controller.conversation_id
    monkeypatch.setattr(QInputDialog, "getMultiLineText", lambda *a, **k: ("Answer in French.", True))
    app.window.act_system_prompt.trigger()
    app.controller.new_conversation()
    assert app.store.get_conversation(first).system_prompt == "Answer in French."  # type: ignore[arg-type]
    assert app.store.get_conversation(app.controller.conversation_id).system_prompt == ""  # type: ignore[arg-type]
    sent: list[object] = []
    app.controller.open_conversation(first)  # type: ignore[arg-type]
    app.controller.engine.sig_request_generate.connect(lambda _rid, request: sent.append(request))
    send(qtbot, app, "Bonjour")
    assert sent[0].messages[0] == {"role": "system", "content": "Answer in French."}  # type: ignore[attr-defined]


def test_closing_the_window_mid_reply_shuts_down_cleanly(
    qtbot: QtBot, make_app: Callable[..., AppHarness], live_gguf: Path
) -> None:
    app = make_app(str(live_gguf), max_tokens=100_000)
    conversation = app.controller.conversation_id
    app.window.composer.edit.setPlainText("alpha bravo")
    app.window.composer.send_button.click()
    qtbot.waitUntil(lambda: app.controller.active is not None and len(app.controller.active.reasoning) > 50)
    app.window.close()  # cancel, quit, wait: never terminate()
    assert not app.controller.engine.engine_thread.isRunning()
    assert not app.window.isVisible()
    reply = ConversationStore(app.folder / "conversations.db").messages(conversation)[-1]  # type: ignore[arg-type]
    assert reply.status == "stopped" and len(reply.reasoning) > 50


def test_closing_the_window_while_loading_shuts_down_cleanly(
    qtbot: QtBot, make_app: Callable[..., AppHarness], live_gguf: Path
) -> None:
    app = make_app("", wait_loaded=False)
    app.controller.load_model(str(live_gguf), "")
    app.window.close()
    assert not app.controller.engine.engine_thread.isRunning()


def test_forget_what_auto_learned_from_the_settings_dialog(
    qtbot: QtBot, make_app: Callable[..., AppHarness], live_gguf: Path
) -> None:
    """Auto's figures are saved per model after a reply at Auto; the settings dialog's button drops
    them on disk and in the loaded model, on the engine thread, and the status line says so."""
    app = make_app(str(live_gguf), mtp_depth="auto", max_tokens=40)
    send(qtbot, app, "alpha bravo charlie")
    assert list(automemory.folder().glob("*.json"))
    app.controller.open_settings()
    dialog = app.window.findChild(SettingsDialog)
    assert dialog is not None
    with qtbot.waitSignal(app.controller.engine.worker.sig_auto_forgotten, timeout=10_000) as forgotten:
        dialog.forget_auto.click()
    assert forgotten.args[0] >= 1 and not list(automemory.folder().glob("*.json"))
    qtbot.waitUntil(lambda: app.window.status_label.text().startswith("Auto forgot what it learned"))
    dialog.reject()
