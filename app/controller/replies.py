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
from app.views.pictures import image_from_png, picture_from_image
from app.views.stats_panel import reply_summary
from engine.api import Delta, Failure, StatsSnapshot
from engine.qt_worker import GenerateRequest, ImageInput, ReplyResult, image_item

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
        pictures = self.window.composer_pictures()
        if not self.loaded.reads_pictures and (pictures or self._holds_pictures(conversation_id)):
            self._no_projector(  # nothing is saved or sent: the draft and the conversation stay as they are
                "This conversation has pictures" if not pictures else "This message has pictures"
            )
            return
        images = [p.png for p in pictures]
        user = self._guard(lambda: self.store.add_message(conversation_id, "user", text, images=images))
        if user is None:
            return
        self.window.clear_composer()
        self.window.transcript_model.append_message(user)
        conv = self.store.get_conversation(conversation_id)
        if conv.title == "New chat":
            title = _title_from(text) or ("Picture" if len(images) == 1 else "Pictures")
            self._guard(lambda: self.store.rename_conversation(conversation_id, title))
        self._start_reply(conversation_id)

    def _holds_pictures(self, conversation_id: int) -> bool:
        messages = self._guard(lambda: self.store.messages(conversation_id), quiet=True) or []
        return any(m.images for m in messages if m.role == "user")

    def _no_projector(self, what: str) -> None:
        """Pictures met a model loaded without a vision file: say how to get one."""
        self._notice(
            f"{what}, and this model was loaded without a vision file, so it cannot read them. Put the model's "
            "mmproj*.gguf beside it (Stride proposes it) or choose it as Vision file in Settings, then reload; "
            "or start a new chat for text.",
            ("Settings…", self.window.sig_open_settings.emit),
        )

    def _start_reply(self, conversation_id: int) -> None:
        messages = self._guard(lambda: self._engine_messages(conversation_id))
        if messages is None:
            return
        reply = self._guard(lambda: self.store.add_message(conversation_id, "assistant", "", status="streaming"))
        if reply is None:
            return
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

    def _engine_messages(self, conversation_id: int) -> list[dict[str, Any]]:
        """The conversation as the engine reads it: the system prompt, then the turns that did not fail."""
        history = self.store.messages(conversation_id)
        conv = self.store.get_conversation(conversation_id)
        messages: list[dict[str, Any]] = (
            [{"role": "system", "content": conv.system_prompt}] if conv.system_prompt else []
        )
        for msg in history:
            if msg.role in ("user", "assistant") and msg.status != "error":
                entry: dict[str, Any] = {"role": msg.role, "content": self._content(msg)}
                if msg.reasoning:
                    entry["reasoning_content"] = msg.reasoning
                messages.append(entry)
        return messages

    def _content(self, msg: Message) -> str | list[dict[str, Any]]:
        """A message's content for the engine: its text, after its pictures when it has some (read from the
        image folder; a missing file raises StoreError)."""
        if not msg.images:
            return msg.content
        pictures = [
            image_item(ImageInput(self.store.image_bytes(d), f"picture {i}")) for i, d in enumerate(msg.images, 1)
        ]
        return [*pictures, {"type": "text", "text": msg.content}]

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
        pictures = self._guard(lambda: [self.store.image_bytes(d) for d in msg.images])  # before they are pruned
        if pictures is None:
            return
        self._guard(lambda: self.store.delete_messages_from(msg.conversation_id, msg.id))
        self.open_conversation(msg.conversation_id)
        self.window.set_composer_text(msg.content)
        self.window.set_composer_pictures(
            [picture_from_image(image_from_png(png), f"picture {i}") for i, png in enumerate(pictures, 1)]
        )

    def copy_message(self, row: int) -> None:
        # live_text includes what is still streaming into the row.
        QGuiApplication.clipboard().setText(self.window.transcript_model.live_text(row).content)
        self.window.show_status("Copied to the clipboard")

    def copy_text(self, text: str) -> None:
        """A code block's Copy button."""
        QGuiApplication.clipboard().setText(text)
        self.window.show_status("Code copied to the clipboard")

    def _image_dropped(self) -> None:
        if self.loaded is None:
            self._offer_models("Load a model first; a model with its vision file reads pictures.")
        else:
            self._no_projector("Pictures need a vision file")

    def _picture_refused(self, message: str) -> None:
        self._notice(message + ".")  # as it is: it may start with a file's name


def _title_from(text: str) -> str:
    line = " ".join(text.split())
    return line if len(line) <= TITLE_LENGTH else line[: TITLE_LENGTH - 1].rstrip() + "…"
