"""What every part of the chat controller shares: the window, store, settings and engine, the
reply in flight, notices, and the guard that turns a database problem into a message.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PySide6.QtCore import QObject

from app.reply_buffer import ReplyBuffer
from app.settings import LoadResult, Settings, SettingsError, save_settings
from app.store import ConversationStore, StoreError
from app.views.error_dialog import show_error
from app.views.main_window import MainWindow
from engine.api import StatsSnapshot
from engine.qt_worker import EngineClient, LoadedModel

log = logging.getLogger("stride.controller")

NoticeAction = tuple[str, Callable[[], object]]  # a notice button: its caption, what it does


@dataclass
class ActiveReply:
    """The reply being generated: its own conversation, whichever one is on screen.

    Its text has one owner, `buffer`: the transcript row paints from it, the periodic save writes
    from it, and the engine's final result reconciles it once.
    """

    request_id: int
    conversation_id: int
    message_id: int
    started: float = field(default_factory=time.monotonic)
    buffer: ReplyBuffer = field(default_factory=ReplyBuffer)
    thought_seconds: float | None = None
    dirty: bool = False  # text came in since the last save

    @property
    def content(self) -> str:
        return self.buffer.content

    @property
    def reasoning(self) -> str:
        return self.buffer.reasoning

    def add(self, kind: str, text: str, from_draft: bool) -> None:
        if kind == "answer" and self.thought_seconds is None and self.buffer.reasoning:
            self.thought_seconds = time.monotonic() - self.started
        self.buffer.append(kind, text, from_draft)
        self.dirty = True

    def fields(self, status: str | None, stats: StatsSnapshot | None) -> dict[str, Any]:
        """The message fields this reply writes, to the database and to its row: the text so far and,
        when it ends, its status and figures (None: left as they are)."""
        return {
            "content": self.buffer.content,
            "reasoning": self.buffer.reasoning,
            "status": status,
            "stats": stats,
            "draft_spans": self.buffer.draft_spans(),
            "thought_seconds": self.thought_seconds,
        }


class ControllerBase(QObject):
    """The state the controller's parts share; each part (models, conversations, replies) adds its own."""

    def __init__(
        self, window: MainWindow, store: ConversationStore, settings: LoadResult, settings_path: Path | None
    ) -> None:
        super().__init__(window)
        self.window = window
        self.store = store
        self.settings: Settings = settings.settings
        self.settings_path = settings_path
        self.engine = EngineClient(self)
        self.loaded: LoadedModel | None = None
        self.active: ActiveReply | None = None
        self.conversation_id: int | None = None
        self._notice_actions: tuple[Callable[[], object] | None, Callable[[], object] | None] = (None, None)

    def stop(self) -> None:
        """Stop the reply (or a load in progress). The flag takes effect after the current decode step."""
        self.engine.stop()

    def _notice(self, text: str, primary: NoticeAction | None = None, secondary: NoticeAction | None = None) -> None:
        self._notice_actions = (primary[1] if primary else None, secondary[1] if secondary else None)
        self.window.show_notice(text, primary[0] if primary else "", secondary[0] if secondary else "")

    def _on_notice_clicked(self, button: int) -> None:
        """button: 0 the notice's first, 1 its second (the window has hidden the notice)."""
        action = self._notice_actions[button]
        if action:
            action()

    def _guard(self, action: Any, *, quiet: bool = False) -> Any:
        """Run a store operation; a database problem becomes a message, never a crash."""
        try:
            return action()
        except StoreError as exc:
            log.error("store: %s", exc)
            if not quiet:
                show_error(self.window, "Conversation not saved", str(exc))
            return None

    def _save_settings(self) -> None:
        try:
            save_settings(self.settings, self.settings_path)
        except SettingsError as exc:
            show_error(self.window, "Settings not saved", str(exc))
