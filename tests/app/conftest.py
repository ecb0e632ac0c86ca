"""GUI test fixtures: a real window and controller on temporary folders, and no thread left behind."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
from pytestqt.qtbot import QtBot

from app.controller import ChatController
from app.settings import LoadResult, Settings
from app.store import ConversationStore
from app.views.main_window import MainWindow
from engine import qt_worker
from engine.api import DEMO_NAME


@pytest.fixture(autouse=True)
def no_thread_left_running(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Fail any test that leaves an engine thread running (napari/superqt habit)."""
    clients: list[qt_worker.EngineClient] = []
    original = qt_worker.EngineClient.__init__

    def tracking_init(self: qt_worker.EngineClient, *args: object, **kw: object) -> None:
        original(self, *args, **kw)  # type: ignore[arg-type]
        clients.append(self)

    monkeypatch.setattr(qt_worker.EngineClient, "__init__", tracking_init)
    yield
    leaked = [c for c in clients if c.engine_thread.isRunning()]
    for client in leaked:
        client.shutdown()
    assert not leaked, "a test left the engine thread running"


@dataclass
class AppHarness:
    window: MainWindow
    controller: ChatController
    store: ConversationStore
    folder: Path

    def close(self) -> None:
        if self.controller.engine.engine_thread.isRunning():
            self.controller.shutdown()


@pytest.fixture
def make_app(qtbot: QtBot, tmp_path: Path) -> Iterator[Callable[..., AppHarness]]:
    harnesses: list[AppHarness] = []

    def _make(
        model: str = DEMO_NAME, wait_loaded: bool = True, folder: Path | None = None, **settings: object
    ) -> AppHarness:
        folder = folder or tmp_path
        base = replace(Settings(), model_path=model, threads=1, temperature=0.0, n_ctx=2048)
        config = replace(base, **settings)  # type: ignore[arg-type]
        window = MainWindow()
        qtbot.addWidget(window)
        store = ConversationStore(folder / "conversations.db")
        controller = ChatController(window, store, LoadResult(config, None), settings_path=folder / "settings.toml")
        harness = AppHarness(window, controller, store, folder)
        harnesses.append(harness)
        window.show()
        if wait_loaded and model:
            with qtbot.waitSignal(controller.sig_model_ready, timeout=60_000):
                controller.start()
        else:
            controller.start()
        return harness

    yield _make
    for harness in harnesses:
        harness.close()
