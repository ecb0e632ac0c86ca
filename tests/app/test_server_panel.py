"""The Server panel: the window serves its loaded model to the official `openai` client, and the
GUI's replies and the server's requests share the engine thread's one queue."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import openai
import pytest
from pytestqt.qtbot import QtBot

from app.settings import load_settings
from tests.app.conftest import AppHarness

PROMPT = "alpha bravo charlie"
MODEL_SWITCHED_WORDS = "the model is being switched in Stride's window; retry once it has loaded"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def turn_on(qtbot: QtBot, app: AppHarness, host: str = "127.0.0.1", key: str = "") -> str:
    """Start the server from the panel as a user does; its URL."""
    panel = app.window.server_panel
    panel.show()
    panel.set_fields(host, free_port(), key)
    with qtbot.waitSignal(app.controller.sig_server_state, timeout=10_000) as started:
        panel.switch.click()
    url = started.args[0]
    assert isinstance(url, str)
    return url


def client(url: str, key: str = "unused") -> openai.OpenAI:
    return openai.OpenAI(base_url=url + "/v1", api_key=key, max_retries=0, timeout=60)


class InThread:
    """One client call on a thread of its own (the GUI thread must stay free to run the window)."""

    def __init__(self, call: Callable[[], Any]) -> None:
        self.result: Any = None
        self.error: BaseException | None = None

        def run() -> None:
            try:
                self.result = call()
            except BaseException as exc:
                self.error = exc

        self.thread = threading.Thread(target=run)
        self.thread.start()

    def join(self) -> None:
        self.thread.join(60)
        assert not self.thread.is_alive()


def test_the_panel_serves_the_loaded_model_and_logs_the_request(
    qtbot: QtBot, make_app: Callable[..., AppHarness], live_gguf: Path
) -> None:
    app = make_app(str(live_gguf))
    panel = app.window.server_panel
    url = turn_on(qtbot, app)
    assert panel.address_edit.text() == url + "/v1" and panel.copy_button.isEnabled()
    assert panel.state_label.text() == "● Running" and not panel.host_edit.isEnabled()

    messages: Any = [{"role": "user", "content": PROMPT}]
    with qtbot.waitSignal(app.controller.sig_server_request, timeout=60_000) as logged:
        call = InThread(
            lambda: client(url).chat.completions.create(model="any", messages=messages, max_tokens=12, temperature=0)
        )
    call.join()
    assert call.error is None
    reply = call.result
    assert reply.usage.completion_tokens == 12 and reply.model == "any"
    record = logged.args[0]
    assert (record.endpoint, record.status, record.n_tokens) == ("/v1/chat/completions", 200, 12)
    row = panel.log.topLevelItem(0)
    assert row is not None
    assert [row.text(i) for i in (1, 2, 4)] == ["/v1/chat/completions", "12", "200"]
    assert float(row.text(3)) > 0
    qtbot.waitUntil(lambda: panel.in_flight_label.text() == "Requests in flight: 0")

    panel.copy_button.click()
    assert app.window.status_label.text() == "Server address copied to the clipboard"
    saved = load_settings(app.folder / "settings.toml").settings  # on again at the next start
    assert saved.server_enabled and saved.server_port == int(url.rsplit(":", 1)[1])


def test_a_gui_reply_and_a_server_request_queued_together_both_finish(
    qtbot: QtBot, make_app: Callable[..., AppHarness], long_live_gguf: Path
) -> None:
    app = make_app(str(long_live_gguf), max_tokens=64, n_ctx=4096)
    url = turn_on(qtbot, app)
    with qtbot.waitSignal(app.controller.engine.worker.sig_serving, timeout=30_000):
        call = InThread(lambda: client(url).completions.create(model="m", prompt=PROMPT, max_tokens=400, temperature=0))
    assert app.window.serving_label.isVisible()  # the window says the model is busy serving
    app.window.composer.edit.setPlainText("alpha bravo")
    with qtbot.waitSignal(app.controller.sig_reply_finished, timeout=60_000) as finished:
        app.window.composer.send_button.click()  # waits its turn behind the request, then runs
    call.join()
    assert call.error is None and call.result.usage.completion_tokens == 400
    result = finished.args[0]
    assert result is not None and result.n_tokens == 64
    assert not app.window.serving_label.isVisible()
    saved = app.store.messages(app.controller.conversation_id)[-1]  # type: ignore[arg-type]
    assert saved.status == "complete"


def test_a_model_switch_ends_the_running_request_with_a_503_and_loads_the_new_model(
    qtbot: QtBot, make_app: Callable[..., AppHarness], long_live_gguf: Path, live_gguf: Path
) -> None:
    app = make_app(str(long_live_gguf), n_ctx=65536)
    url = turn_on(qtbot, app)

    def stream() -> str:
        chunks = client(url).completions.create(model="m", prompt=PROMPT, max_tokens=30000, temperature=0, stream=True)
        return "".join(chunk.choices[0].text for chunk in chunks if chunk.choices)

    with qtbot.waitSignal(app.controller.engine.worker.sig_serving, timeout=30_000):
        call = InThread(stream)
    with qtbot.waitSignal(app.controller.sig_model_ready, timeout=60_000) as ready:
        app.controller.load_model(str(live_gguf), "")
    call.join()
    assert isinstance(call.error, openai.APIError)
    assert "switched" in call.error.message and call.error.body == {
        "message": MODEL_SWITCHED_WORDS,
        "type": "unavailable_error",
        "param": None,
        "code": 503,
    }
    assert ready.args[0].info.path.name == live_gguf.name
    after = client(url).models.list()  # the new model serves the next requests
    assert [m.id for m in after.data] == [live_gguf.name]


def test_turning_the_server_off_closes_the_port(qtbot: QtBot, make_app: Callable[..., AppHarness]) -> None:
    app = make_app()
    url = turn_on(qtbot, app)
    port = int(url.rsplit(":", 1)[1])
    socket.create_connection(("127.0.0.1", port), timeout=5).close()
    with qtbot.waitSignal(app.controller.sig_server_state, timeout=10_000) as stopped:
        app.window.server_panel.switch.click()
    assert stopped.args[0] is None
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=5)
    assert app.window.server_panel.state_label.text() == "○ Off"
    assert not load_settings(app.folder / "settings.toml").settings.server_enabled


def test_another_address_needs_an_api_key_said_inline(qtbot: QtBot, make_app: Callable[..., AppHarness]) -> None:
    app = make_app()
    panel = app.window.server_panel
    panel.show()
    panel.set_fields("0.0.0.0", free_port(), "")
    assert "set an API key" in panel.problem_label.text() and panel.problem_label.isVisible()
    assert not panel.switch.isEnabled()
    key = "s3cret"
    panel.key_edit.setText(key)
    assert not panel.problem_label.isVisible() and panel.switch.isEnabled()
    with qtbot.waitSignal(app.controller.sig_server_state, timeout=10_000) as started:
        panel.switch.click()
    url = started.args[0].replace("0.0.0.0", "127.0.0.1")
    with pytest.raises(openai.AuthenticationError):
        client(url, "wrong").models.list()
    assert client(url, key).models.list().data


def test_a_busy_port_is_said_in_the_panel(qtbot: QtBot, make_app: Callable[..., AppHarness]) -> None:
    app = make_app()
    panel = app.window.server_panel
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        panel.set_fields("127.0.0.1", taken.getsockname()[1], "")
        with qtbot.waitSignal(app.controller.sig_server_state, timeout=10_000) as state:
            panel.switch.click()
    assert state.args[0] is None and not panel.switch.isChecked()
    assert panel.problem_label.text().endswith("Address already in use; choose another port.")


def test_a_server_left_on_starts_again_with_the_window(qtbot: QtBot, make_app: Callable[..., AppHarness]) -> None:
    port = free_port()
    app = make_app(server_enabled=True, server_port=port)  # as read from the settings file
    server = app.controller.server
    assert server is not None and server.url == f"http://127.0.0.1:{port}"
    assert app.window.server_panel.state_label.text() == "● Running"
    assert [m.id for m in client(server.url).models.list().data] == [app.controller.loaded.info.path.name]  # type: ignore[union-attr]
    app.controller.set_server_on(True)  # on already: the same server goes on serving
    assert app.controller.server is server
    assert (
        app.window.server_panel.state_label.text() == "● Running" and app.window.server_panel.problem_label.text() == ""
    )


def test_stopping_a_message_that_waits_behind_a_request_stops_it_before_it_starts(
    qtbot: QtBot, make_app: Callable[..., AppHarness], long_live_gguf: Path
) -> None:
    app = make_app(str(long_live_gguf), max_tokens=64, n_ctx=4096)
    url = turn_on(qtbot, app)
    with qtbot.waitSignal(app.controller.engine.worker.sig_serving, timeout=30_000):
        call = InThread(lambda: client(url).completions.create(model="m", prompt=PROMPT, max_tokens=400, temperature=0))
    app.window.composer.edit.setPlainText("alpha bravo")
    with qtbot.waitSignal(app.controller.sig_reply_finished, timeout=60_000) as finished:
        app.window.composer.send_button.click()
        app.window.composer.stop_button.click()  # while the server's request still runs
    call.join()
    assert call.error is None and call.result.usage.completion_tokens == 400  # the request was not stopped
    result = finished.args[0]
    assert result is not None and result.stats.stop_reason == "cancelled" and result.n_tokens == 0
