"""What the window does when things go wrong: bad model files, too little memory, a full context."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from PySide6.QtWidgets import QLabel, QMessageBox
from pytestqt.qtbot import QtBot

from app import model_inspector
from app.views.error_dialog import ErrorDialog
from app.views.model_dialog import ModelPickerDialog
from engine import runtime
from engine.demo import ensure_demo_model
from engine.qt_worker import ReplyResult
from tests.app.conftest import AppHarness
from tests.fixtures import builders
from tests.fixtures.builders import HUGE_SHAPE
from tests.fixtures.malformed import malformed_models

LOAD_MS = 60_000


def open_errors(app: AppHarness) -> list[ErrorDialog]:
    return [d for d in app.window.findChildren(ErrorDialog) if d.isVisible()]


class Questions:
    """QMessageBox.question replaced: records each question's text and gives a set answer."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, answer: QMessageBox.StandardButton) -> None:
        self.asked: list[str] = []
        self.answer = answer
        monkeypatch.setattr(QMessageBox, "question", self._question)

    def _question(self, _parent: object, title: str, text: str, *_args: object) -> QMessageBox.StandardButton:
        self.asked.append(f"{title}: {text}")
        return self.answer


# --- malformed models ---


def test_every_malformed_model_gets_one_error_dialog_and_the_app_carries_on(
    qtbot: QtBot, make_app: Callable[..., AppHarness], tmp_path: Path
) -> None:
    app = make_app("", wait_loaded=False)
    for name, (model, mtp) in malformed_models(tmp_path / "models").items():
        with qtbot.waitSignal(app.controller.sig_model_failed, timeout=LOAD_MS) as failed:
            app.controller.load_model(str(model), str(mtp or ""))
        message = failed.args[0]
        assert "\n" not in message and (model.name in message or (mtp and mtp.name in message)), (name, message)
        (dialog,) = open_errors(app)
        assert dialog.windowTitle() == "The model could not be loaded", name
        dialog.close()
        assert app.window.notice.isVisible() and app.window.model_label.text() == "No model loaded", name
    with qtbot.waitSignal(app.controller.sig_model_ready, timeout=LOAD_MS):
        app.window.notice.primary.click()  # "Use the demo model": nothing above broke the engine


# --- memory ---


@pytest.mark.skipif(sys.platform == "win32", reason="needs sparse files: the header declares 546 GB")
def test_a_model_too_big_at_startup_asks_first_and_loads_nothing_when_declined(
    qtbot: QtBot, make_app: Callable[..., AppHarness], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The picker asks before loading; a model opened at startup (`stride --model`, or the last
    one used) must be asked about too, before llama.cpp maps a byte of it."""
    huge = builders.declared_only(tmp_path / "huge.gguf", HUGE_SHAPE)
    questions = Questions(monkeypatch, QMessageBox.StandardButton.No)
    loads: list[Path] = []
    monkeypatch.setattr(runtime, "_load_model", lambda parts, *_a: loads.extend(parts))
    with qtbot.waitSignal(make_app(str(huge), wait_loaded=False).controller.sig_model_failed, timeout=LOAD_MS) as f:
        pass
    (asked,) = questions.asked
    assert asked.startswith("Load anyway?: This model needs about ") and " GiB of memory is free." in asked
    assert loads == []
    assert f.args[0].startswith("huge.gguf needs about ") and f.args[0].endswith("; it was not loaded.")


def test_yes_loads_a_model_too_big_for_free_memory(
    qtbot: QtBot, make_app: Callable[..., AppHarness], monkeypatch: pytest.MonkeyPatch
) -> None:
    questions = Questions(monkeypatch, QMessageBox.StandardButton.Yes)
    monkeypatch.setattr(runtime, "free_memory_bytes", lambda: 1 << 20)
    app = make_app("", wait_loaded=False)
    with qtbot.waitSignal(app.controller.sig_model_ready, timeout=LOAD_MS):
        app.controller.load_model("demo", "")
    assert len(questions.asked) == 1 and "of memory is free" in questions.asked[0]
    assert open_errors(app) == []


def test_a_model_chosen_in_the_picker_is_asked_about_once(
    qtbot: QtBot, make_app: Callable[..., AppHarness], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The picker shows the verdict and asks; the load it starts must not ask a second time."""
    questions = Questions(monkeypatch, QMessageBox.StandardButton.Yes)
    monkeypatch.setattr(runtime, "free_memory_bytes", lambda: 1 << 20)
    monkeypatch.setattr(model_inspector, "free_memory_bytes", lambda: 1 << 20)
    app = make_app("", wait_loaded=False)
    app.controller.choose_model()
    (picker,) = app.window.findChildren(ModelPickerDialog)
    with qtbot.waitSignal(picker.sig_inspected, timeout=LOAD_MS):
        picker.set_path(str(ensure_demo_model()))
    with qtbot.waitSignal(app.controller.sig_model_ready, timeout=LOAD_MS):
        picker.accept()
    assert len(questions.asked) == 1


# --- context limits ---


def send(qtbot: QtBot, app: AppHarness, text: str) -> ReplyResult | None:
    app.window.composer.edit.setPlainText(text)
    with qtbot.waitSignal(app.controller.sig_reply_finished, timeout=LOAD_MS) as finished:
        app.window.composer.send_button.click()
    result: ReplyResult | None = finished.args[0]
    return result


def history(app: AppHarness, turns: int, words: int) -> None:
    """Earlier turns of the open conversation, straight into the store."""
    conversation = app.controller.conversation_id
    assert conversation is not None
    for i in range(turns):
        app.store.add_message(conversation, "user", f"question {i}: " + "alpha bravo " * words)
        app.store.add_message(conversation, "assistant", "charlie delta " * words)
    app.controller.open_conversation(conversation)


def test_stop_mode_says_the_conversation_outgrew_the_context(
    qtbot: QtBot, make_app: Callable[..., AppHarness], oracle_gguf: Path
) -> None:
    app = make_app(str(oracle_gguf), n_ctx=256, max_tokens=20, context_overflow="stop")
    history(app, turns=4, words=20)
    assert send(qtbot, app, "echo foxtrot") is None
    (dialog,) = open_errors(app)
    assert dialog.windowTitle() == "The reply failed"
    assert any("This conversation has outgrown the context" in label.text() for label in dialog.findChildren(QLabel))
    conversation = app.controller.conversation_id
    assert conversation is not None
    assert app.store.messages(conversation)[-1].status == "error"
    dialog.close()
    assert send(qtbot, app, "a short one after the failure") is None  # still refused, still no crash
    for dialog in open_errors(app):
        dialog.close()


def test_drop_oldest_mode_leaves_out_old_turns_and_says_so(
    qtbot: QtBot, make_app: Callable[..., AppHarness], oracle_gguf: Path
) -> None:
    app = make_app(str(oracle_gguf), n_ctx=256, max_tokens=20, context_overflow="drop_oldest")
    history(app, turns=4, words=20)
    result = send(qtbot, app, "echo foxtrot")
    assert result is not None and result.n_dropped > 0
    assert result.stats.stop_reason == "max_tokens" and result.stats.n_prompt + 20 <= 256
    assert open_errors(app) == []
    notice = app.window.notice.label.text()
    assert app.window.notice.isVisible()
    assert f"the oldest {result.n_dropped} messages were left out of this reply's prompt" in notice


def test_a_reply_that_fills_the_context_stops_and_says_so(
    qtbot: QtBot, make_app: Callable[..., AppHarness], oracle_gguf: Path
) -> None:
    app = make_app(str(oracle_gguf), n_ctx=256, max_tokens=5000)  # the oracle never ends a reply itself
    result = send(qtbot, app, "alpha")
    assert result is not None and result.stats.stop_reason == "context_full"
    assert open_errors(app) == []
    assert app.window.notice.isVisible()
    assert "The reply stopped because the context is full (256 tokens)" in app.window.notice.label.text()
    conversation = app.controller.conversation_id
    assert conversation is not None
    saved = app.store.messages(conversation)[-1]
    assert saved.status == "complete" and len(saved.content + saved.reasoning) > 100


# --- untrusted chat templates ---

HOSTILE = {
    "python-internals": "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "endless-nested-loops": "{% for i in range(10**9) %}{% for j in range(10**9) %}{% endfor %}{% endfor %}",
    "gigantic-string": "{{ 'a' * 10**10 }}",
    "raises": "{{ raise_exception('this template refuses') }}",
}


@pytest.mark.parametrize("template", HOSTILE.values(), ids=HOSTILE.keys())
def test_a_hostile_template_in_the_model_falls_back_within_two_seconds_and_says_so(
    qtbot: QtBot, make_app: Callable[..., AppHarness], tmp_path: Path, template: str
) -> None:
    """The template comes from the GGUF file, as a stranger's model would bring it."""
    model = builders.build(tmp_path / "hostile.gguf", builders.oracle(), chat_template=template)
    app = make_app(str(model), max_tokens=5)
    started = time.monotonic()
    first_delta: list[float] = []
    app.controller.engine.worker.sig_delta.connect(lambda *_: first_delta.append(time.monotonic()))
    result = send(qtbot, app, "alpha")
    assert result is not None and result.stats.n_predicted == 5
    assert first_delta[0] - started < 2.5  # the 2 s render budget plus the prompt and first token
    assert result.template_warning is not None
    notice = app.window.notice.label.text()
    assert app.window.notice.isVisible() and notice.startswith("The model's chat template failed: ")
    assert "using the built-in ChatML template instead." in notice
    assert open_errors(app) == []
