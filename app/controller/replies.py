"""The controller's replies part: sending, the reply streaming into its buffer (saved twice a
second, so a crash loses at most that), finishing against the engine's result, and the
message actions (regenerate, edit and resend, copy).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any, cast

from PySide6.QtCore import QTimer, Signal
from PySide6.QtGui import QGuiApplication

from app.controller.base import ActiveReply
from app.controller.conversations import ConversationsPart
from app.settings import LoadResult
from app.store import ConversationStore, Message
from app.views.error_dialog import show_error
from app.views.main_window import MainWindow
from app.views.stats_panel import reply_summary
from engine.api import Delta, Failure, StatsSnapshot
from engine.qt_worker import GenerateRequest, ReplyResult

FLUSH_INTERVAL_MS = 500  # a streaming reply reaches the database at least twice a second
TITLE_LENGTH = 48


class RepliesPart(ConversationsPart):
    sig_reply_finished = Signal(object)
    """ReplyResult, or None when the reply failed (the self-test and tests wait on it)"""

    def __init__(
        self, window: MainWindow, store: ConversationStore, settings: LoadResult, settings_path: Path | None
    ) -> None:
        super().__init__(window, store, settings, settings_path)
        self._flush_timer = QTimer(self, interval=FLUSH_INTERVAL_MS)
        self._flush_timer.timeout.connect(self._flush_active)

    def send(self, text: str) -> None:
        if self.loaded is None:
            self._offer_models("Load a model first.")
            return
        if self.active is not None or self.conversation_id is None:
            return
        conversation_id = self.conversation_id
        user = self._guard(lambda: self.store.add_message(conversation_id, "user", text))
        if user is None:
            return
        self.window.clear_composer()
        self.window.transcript_model.append_message(user)
        conv = self.store.get_conversation(conversation_id)
        if conv.title == "New chat":
            self._guard(lambda: self.store.rename_conversation(conversation_id, _title_from(text)))
        self._start_reply(conversation_id)

    def _start_reply(self, conversation_id: int) -> None:
        history = self.store.messages(conversation_id)
        conv = self.store.get_conversation(conversation_id)
        reply = self._guard(lambda: self.store.add_message(conversation_id, "assistant", "", status="streaming"))
        if reply is None:
            return
        messages: list[dict[str, Any]] = (
            [{"role": "system", "content": conv.system_prompt}] if conv.system_prompt else []
        )
        for msg in history:
            if msg.role in ("user", "assistant") and msg.status != "error":
                entry: dict[str, Any] = {"role": msg.role, "content": msg.content}
                if msg.reasoning:
                    entry["reasoning_content"] = msg.reasoning
                messages.append(entry)
        request = GenerateRequest(
            messages=messages,
            params=self.settings.generation_params(),
            template_vars={"reasoning_effort": self.settings.reasoning_effort},
            drop_oldest=self.settings.context_overflow == "drop_oldest",
        )
        request_id = self.engine.generate(request)
        self.active = ActiveReply(request_id, conversation_id, reply.id)
        if conversation_id == self.conversation_id:
            self.window.transcript_model.append_message(reply, self.active.buffer)
            self.window.scroll_to_latest()
        n_heads = self.loaded.n_heads if self.loaded else 0
        self.window.start_stats(n_heads)
        self.window.set_replying(True)
        self._flush_timer.start()
        self.refresh_sidebar()

    def _visible_row(self) -> int | None:
        active = self.active
        if active is None or active.conversation_id != self.conversation_id:
            return None
        return self.window.transcript_model.row_of(active.message_id)

    def _on_prompt_progress(self, request_id: int, done: int, total: int) -> None:
        if self.active and request_id == self.active.request_id:
            self.window.set_prompt_progress(done, total)

    def _on_delta(self, request_id: int, delta: Delta) -> None:
        active = self.active
        if active is None or request_id != active.request_id:
            return  # a late delta from a stopped or superseded request
        self.window.hide_prompt_progress()
        row = self._visible_row()
        for seg in delta.segments:
            active.add(seg.kind, seg.text, seg.from_draft)
        if row is not None:  # the row paints from the reply's buffer
            self.window.transcript_model.streamed(row)
            self.window.follow_stream()

    def _on_stats(self, request_id: int, snapshot: StatsSnapshot) -> None:
        if self.active and request_id == self.active.request_id:
            self.window.show_stats(snapshot)
            self._show_context_used(snapshot)

    def _show_context_used(self, snapshot: StatsSnapshot) -> None:
        if self.loaded:
            used = snapshot.n_prompt + snapshot.n_predicted
            self.window.set_context(used, self.loaded.n_ctx)

    def _flush_active(self) -> None:
        """Save the streaming reply so a crash loses at most one flush interval of text."""
        active = self.active
        if active is None or not active.dirty:
            return
        active.dirty = False
        self._save_reply(active, quiet=True)

    def _save_reply(
        self,
        active: ActiveReply,
        *,
        status: str | None = None,
        stats: StatsSnapshot | None = None,
        quiet: bool = False,
    ) -> None:
        """Write the reply's text so far (and, when it ends, its status and figures) to the database."""
        self._guard(lambda: self.store.update_message(active.message_id, **active.fields(status, stats)), quiet=quiet)

    def _on_finished(self, request_id: int, result: ReplyResult) -> None:
        active = self.active
        if active is None or request_id != active.request_id:
            return
        stop_reason = result.stats.stop_reason
        active.buffer.finish(result.text, result.reasoning)  # the engine's final text wins over what streamed
        self._finish(active, "stopped" if stop_reason == "cancelled" else "complete", result.stats)
        notes = []
        if result.template_warning:
            notes.append(result.template_warning[:1].upper() + result.template_warning[1:] + ".")
        if result.n_dropped:
            notes.append(
                f"The conversation outgrew the context: the oldest {result.n_dropped} messages were left "
                "out of this reply's prompt."
            )
        if stop_reason == "context_full":
            n_ctx = self.loaded.n_ctx if self.loaded else 0
            drop = " or choose 'Drop the oldest turns'" if self.settings.context_overflow == "stop" else ""
            notes.append(
                f"The reply stopped because the context is full ({n_ctx:,} tokens). Start a new chat, or raise "
                f"the context size{drop} in Settings."
            )
        if notes:
            self._notice(" ".join(notes))
        self.sig_reply_finished.emit(result)

    def _on_failed(self, request_id: int, failure: Failure) -> None:
        active = self.active
        if active is None or request_id != active.request_id:
            return
        self._finish(active, "error" if not active.content else "stopped", None)
        show_error(self.window, "The reply failed", failure.message, failure.details)
        self.sig_reply_finished.emit(None)

    def _finish(self, active: ActiveReply, status: str, stats: StatsSnapshot | None) -> None:
        self.active = None
        self._flush_timer.stop()
        self._save_reply(active, status=status, stats=stats)
        w = self.window
        w.set_replying(False)
        w.hide_prompt_progress()
        if active.conversation_id == self.conversation_id:
            row = w.transcript_model.row_of(active.message_id)
            if row is not None:
                final = replace(cast(Message, w.transcript_model.message(row)), **active.fields(status, stats))
                w.transcript_model.update_message(row, final)
                if stats:
                    w.transcript_model.set_summary(row, reply_summary(stats))
        # The final figures, applied here once; the big "now" figure becomes the reply's average.
        w.finish_stats(stats or None)
        if stats:
            self._show_context_used(stats)
        self.refresh_sidebar()

    def regenerate_last(self) -> None:
        rows = self.window.transcript_model.rowCount()
        for row in range(rows - 1, -1, -1):
            if self.window.transcript_model.message(row).role == "assistant":
                self.regenerate(row)
                return

    def regenerate(self, row: int) -> None:
        if self.active is not None or self.loaded is None or self.conversation_id is None:
            return
        msg = self.window.transcript_model.message(row)
        if msg.role != "assistant":
            return
        self._guard(lambda: self.store.delete_messages_from(msg.conversation_id, msg.id))
        self.open_conversation(msg.conversation_id)
        self._start_reply(msg.conversation_id)

    def edit_message(self, row: int) -> None:
        """Edit and resend: the message and everything after it go; its text returns to the composer."""
        if self.active is not None:
            return
        msg = self.window.transcript_model.message(row)
        if msg.role != "user":
            return
        self._guard(lambda: self.store.delete_messages_from(msg.conversation_id, msg.id))
        self.open_conversation(msg.conversation_id)
        self.window.set_composer_text(msg.content)

    def copy_message(self, row: int) -> None:
        # live_text includes what is still streaming into the row.
        QGuiApplication.clipboard().setText(self.window.transcript_model.live_text(row).content)
        self.window.show_status("Copied to the clipboard")

    def copy_text(self, text: str) -> None:
        """A code block's Copy button."""
        QGuiApplication.clipboard().setText(text)
        self.window.show_status("Code copied to the clipboard")

    def _image_dropped(self) -> None:
        self._notice("This model reads text only: images cannot be sent to it.")


def _title_from(text: str) -> str:
    line = " ".join(text.split())
    return line if len(line) <= TITLE_LENGTH else line[: TITLE_LENGTH - 1].rstrip() + "…"
