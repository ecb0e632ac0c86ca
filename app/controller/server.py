"""The controller's server part: the Server panel, and the OpenAI-compatible server around the
loaded model. The engine worker is the server's model host, so the GUI's replies and other apps'
requests queue behind one another on the engine thread; the GUI thread only starts and stops
the server and shows what it reports.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from PySide6.QtCore import QTimer, Signal
from PySide6.QtGui import QGuiApplication

from app.controller.base import log
from app.controller.replies import RepliesPart
from app.settings import LoadResult
from app.store import ConversationStore
from app.views.main_window import MainWindow
from engine.qt_worker import (
    RequestRecord,
    ServerConfig,
    ServerStartError,
    StrideServer,
    is_loopback,
    stop_served_requests,
)

IN_FLIGHT_POLL_MS = 250  # the queue's count has no signal of its own; four looks a second while serving
MODEL_SWITCHED = "the model is being switched in Stride's window; retry once it has loaded"


class ServerPart(RepliesPart):
    sig_server_request = Signal(object)
    """RequestRecord, as a server request ends (emitted from the server's threads; queued to the GUI)"""
    sig_server_state = Signal(object)
    """the server's URL once it listens, or None once it is off"""

    def __init__(
        self, window: MainWindow, store: ConversationStore, settings: LoadResult, settings_path: Path | None
    ) -> None:
        super().__init__(window, store, settings, settings_path)
        self.server: StrideServer | None = None
        self.serving = False  # a server request runs on the engine thread now
        self._in_flight_timer = QTimer(self, interval=IN_FLIGHT_POLL_MS)
        self._in_flight_timer.timeout.connect(self._show_in_flight)
        panel = window.server_panel
        panel.set_fields(self.settings.server_host, self.settings.server_port, self.settings.server_api_key)
        panel.sig_switch.connect(self.set_server_on)
        panel.sig_fields_edited.connect(self._check_server_fields)
        panel.sig_copy_address.connect(self._copy_address)
        self.sig_server_request.connect(self._on_server_request)
        self.engine.worker.sig_serving.connect(self._on_serving)
        self._check_server_fields()
        self._push_serve_defaults()

    def set_server_on(self, on: bool) -> None:
        """Start serving with the panel's fields (remembered, and on again next start), or stop."""
        if not on:
            self.stop_server()
            self._remember_server(enabled=False)
            return
        if self.server is not None:  # on already (the settings file turned it on at startup)
            return
        host, port, key = self.window.server_panel.fields()
        problem = _fields_problem(host, key)
        if problem:
            self._server_failed(problem)
            return
        self._remember_server(enabled=True, host=host, port=port, api_key=key)
        config = ServerConfig(host=host, port=port, api_key=key or None)
        self._push_serve_defaults()
        server = StrideServer(self.engine.worker, config, on_request=self.sig_server_request.emit)
        try:
            url = server.start()
        except ServerStartError as exc:
            # The engine names the CLI's options (--host, --port); here they are the panel's fields.
            self._server_failed(f"The server did not start: {str(exc).replace('--', '')}.")
            return
        self.server = server
        log.info("serving at %s", url)
        self.window.server_panel.set_problem("")
        self.window.server_panel.set_running(url)
        self._in_flight_timer.start()
        self._show_in_flight()
        self.sig_server_state.emit(url)

    def stop_server(self) -> None:
        """Requests in flight stop at their next decode step; the port closes before this returns."""
        server, self.server = self.server, None
        if server is None:
            return
        self.engine.worker.cancel_waiting_jobs()
        server.stop()
        log.info("the server stopped")
        self._in_flight_timer.stop()
        self.window.server_panel.set_running(None)
        self._show_in_flight()
        self.sig_server_state.emit(None)

    def load_model(self, *args: Any, **kwargs: Any) -> None:
        """A model switch ends the server's requests with a 503 saying so; the new model serves the next ones."""
        if self.server is not None:
            stop_served_requests(self.server, MODEL_SWITCHED)
        super().load_model(*args, **kwargs)

    def _save_settings(self) -> None:
        super()._save_settings()
        self._push_serve_defaults()  # the MTP settings may have changed: server requests follow them

    def _push_serve_defaults(self) -> None:
        self.engine.worker.set_serve_defaults(self.settings.generation_params())

    def _remember_server(self, **changes: Any) -> None:
        new = replace(self.settings, **{f"server_{name}": value for name, value in changes.items()})
        if new != self.settings:
            self.settings = new
            self._save_settings()

    def _server_failed(self, problem: str) -> None:
        self.window.server_panel.set_running(None)
        self.window.server_panel.set_problem(problem)
        self.sig_server_state.emit(None)

    def _check_server_fields(self) -> None:
        host, _port, key = self.window.server_panel.fields()
        problem = _fields_problem(host, key)
        self.window.server_panel.set_problem(problem, blocks_start=bool(problem))

    def _copy_address(self, address: str) -> None:
        QGuiApplication.clipboard().setText(address)
        self.window.show_status("Server address copied to the clipboard")

    def _on_server_request(self, record: RequestRecord) -> None:
        self.window.server_panel.add_request(
            record.started, record.endpoint, record.status, record.n_tokens, record.tokens_per_s
        )
        self._show_in_flight()

    def _on_serving(self, serving: bool) -> None:
        self.serving = serving
        self._show_in_flight()
        self.window.set_serving(serving)

    def _show_in_flight(self) -> None:
        n = self.server.queue.in_flight if self.server is not None else 0
        self.window.server_panel.set_in_flight(n, self.serving)


def _fields_problem(host: str, key: str) -> str:
    """Why the panel's fields cannot serve, or ""."""
    if not host:
        return "Type a host: 127.0.0.1 serves only this computer."
    if not is_loopback(host) and not key:
        return f"Other computers can reach {host}: set an API key first, or use 127.0.0.1."
    return ""
