"""A reply has one owner: the transcript row shows the reply's own buffer while it streams, and
the engine's final result reconciles it once, for the row and the database alike."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from pytestqt.qtbot import QtBot

from engine.api import Delta, Segment, StatsSnapshot
from engine.qt_worker import GenerateRequest, ReplyResult
from tests.app.conftest import AppHarness

REQUEST = 4242  # the id the stand-in engine hands out


def stream(app: AppHarness, *segments: Segment) -> None:
    app.controller._on_delta(REQUEST, Delta(segments, (), ()))


@pytest.fixture
def replying(make_app: Callable[..., AppHarness], monkeypatch: pytest.MonkeyPatch) -> AppHarness:
    """An app whose engine takes the request and leaves the reply to the test."""
    app = make_app()

    def generate(request: GenerateRequest) -> int:
        return REQUEST

    monkeypatch.setattr(app.controller.engine, "generate", generate)
    app.controller.send("Hello")
    assert app.controller.active is not None
    return app


def test_the_row_paints_from_the_reply_while_it_streams(qtbot: QtBot, replying: AppHarness) -> None:
    stream(replying, Segment("Thinking.", "reasoning", False), Segment("Hi there", "answer", True))
    model = replying.window.transcript_model
    row = model.rowCount() - 1
    active = replying.controller.active
    assert active is not None
    assert model.state(row).buffer is active.buffer  # one owner, not a copy
    live = model.live_text(row)
    assert (live.reasoning, live.content) == ("Thinking.", "Hi there")
    assert live.draft_spans["answer"] == [[0, 8]]


def test_the_final_text_wins_and_spans_are_clipped_to_it(qtbot: QtBot, replying: AppHarness) -> None:
    app = replying
    stream(app, Segment("Hello wor", "answer", True), Segment("ld STOP", "answer", True))
    result = ReplyResult("Hello world", "", 3, StatsSnapshot(n_predicted=3), None, 0)
    with qtbot.waitSignal(app.controller.sig_reply_finished):
        app.controller._on_finished(REQUEST, result)

    model = app.window.transcript_model
    row = model.rowCount() - 1
    shown = model.live_text(row)
    assert shown.content == "Hello world"
    assert shown.draft_spans["answer"] == [[0, 11]]
    assert app.controller.conversation_id is not None
    saved = app.store.messages(app.controller.conversation_id)[-1]
    assert (saved.content, saved.status) == ("Hello world", "complete")
    assert saved.draft_spans == {"answer": [[0, 11]], "reasoning": []}
    assert saved.stats == result.stats
