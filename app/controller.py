"""The chat controller: everything the window's buttons do, in one place.

It owns the settings, the conversation store and the engine client; views only
show and emit. The GUI thread never waits on llama.cpp: every engine call is a
queued request whose results come back as signals tagged with a request id, and
results for an older request are dropped.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, cast

from PySide6.QtCore import QObject, QTimer, QUrl, Signal
from PySide6.QtGui import QDesktopServices, QGuiApplication
from PySide6.QtWidgets import QFileDialog, QInputDialog, QMessageBox

from app.model_files import ModelChoice, display_name, engine_paths, recent_with, remembered
from app.model_inspector import ModelInspector
from app.reply_buffer import ReplyBuffer
from app.settings import LoadResult, Settings, SettingsError, save_settings, validate
from app.store import ConversationStore, Message, StoreError
from app.theme import apply_theme
from app.views.error_dialog import show_error
from app.views.main_window import MainWindow
from app.views.model_dialog import ModelPickerDialog, confirm_too_big
from app.views.settings_dialog import SettingsDialog
from app.views.stats_panel import reply_summary
from engine.api import DEMO_NAME, MTP_NOTE_TEXT, Delta, Failure, NotEnoughMemory, StatsSnapshot
from engine.qt_worker import (
    EngineClient,
    GenerateRequest,
    LoadedModel,
    LoadRequest,
    ReplyResult,
    ensure_demo_model,
    log_dir,
)

log = logging.getLogger("stride.controller")
FLUSH_INTERVAL_MS = 500  # a streaming reply reaches the database at least twice a second
TITLE_LENGTH = 48


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


class ChatController(QObject):
    sig_reply_finished = Signal(object)
    """ReplyResult, or None when the reply failed (the self-test and tests wait on it)"""
    sig_model_ready = Signal(object)
    """LoadedModel"""
    sig_model_failed = Signal(str)
    """the message shown for why the model did not load"""

    def __init__(
        self, window: MainWindow, store: ConversationStore, settings: LoadResult, settings_path: Path | None = None
    ) -> None:
        super().__init__(window)
        self.window = window
        self.store = store
        self.settings: Settings = settings.settings
        self.settings_path = settings_path
        self.engine = EngineClient(self)
        self.inspector = ModelInspector(self)  # reads models for the picker, off the GUI thread
        self.loaded: LoadedModel | None = None
        self.load_request = 0
        self._loading: tuple[ModelChoice, ModelChoice] = ("", "")  # asked again when it does not fit
        self.active: ActiveReply | None = None
        self.conversation_id: int | None = None
        self.search_text = ""
        self._flush_timer = QTimer(self, interval=FLUSH_INTERVAL_MS)
        self._flush_timer.timeout.connect(self._flush_active)
        self._connect()
        if settings.message:
            show_error(window, "Settings were reset", settings.message)
        if store.recovered_from is not None:
            show_error(
                window,
                "Conversation database recovered",
                f"The conversation database was damaged. Stride moved it to {store.recovered_from} "
                "and started a new one.",
            )

    # Wiring ---------------------------------------------------------------------------

    def _connect(self) -> None:
        w, worker = self.window, self.engine.worker
        worker.sig_load_progress.connect(self._on_load_progress)
        worker.sig_loaded.connect(self._on_loaded)
        worker.sig_load_failed.connect(self._on_load_failed)
        worker.sig_load_too_big.connect(self._on_load_too_big)
        worker.sig_prompt_progress.connect(self._on_prompt_progress)
        worker.sig_delta.connect(self._on_delta)
        worker.sig_stats.connect(self._on_stats)
        worker.sig_finished.connect(self._on_finished)
        worker.sig_failed.connect(self._on_failed)
        worker.sig_auto_forgotten.connect(self._on_auto_forgotten)

        w.composer.sig_send.connect(self.send)
        w.composer.sig_stop.connect(self.stop)
        w.composer.sig_image_dropped.connect(self._image_dropped)
        w.act_send.triggered.connect(w.composer._submit)
        w.act_stop.triggered.connect(self.stop)
        w.act_focus.triggered.connect(lambda: w.composer.edit.setFocus())
        w.act_new.triggered.connect(self.new_conversation)
        w.act_open_model.triggered.connect(self.choose_model)
        w.model_button.clicked.connect(self.choose_model)
        w.act_settings.triggered.connect(self.open_settings)
        w.act_import.triggered.connect(self.import_conversation)
        w.act_export_md.triggered.connect(lambda: self.export_conversation(self.conversation_id, "md"))
        w.act_export_json.triggered.connect(lambda: self.export_conversation(self.conversation_id, "json"))
        w.act_rename.triggered.connect(lambda: self.rename_conversation(self.conversation_id))
        w.act_system_prompt.triggered.connect(self.edit_system_prompt)
        w.act_quit.triggered.connect(w.close)
        w.act_tint.setChecked(self.settings.tint_drafts)
        w.act_tint.toggled.connect(self._set_tint)
        w.act_log_folder.triggered.connect(lambda: QDesktopServices.openUrl(QUrl.fromLocalFile(str(log_dir()))))
        w.act_about.triggered.connect(self._about)
        w.regenerate_button.clicked.connect(self.regenerate_last)
        w.load_cancel.clicked.connect(self.engine.stop)
        w.sig_close_requested.connect(self.shutdown)
        w.notice.primary.clicked.connect(self._notice_primary)
        w.notice.secondary.clicked.connect(self._notice_secondary)

        w.sidebar.sig_new.connect(self.new_conversation)
        w.sidebar.sig_selected.connect(self.open_conversation)
        w.sidebar.sig_rename.connect(self.rename_conversation)
        w.sidebar.sig_delete.connect(self.delete_conversation)
        w.sidebar.sig_export.connect(lambda cid: self.export_conversation(cid, "md"))
        w.sidebar.sig_search.connect(self._search)
        w.transcript.sig_copy_requested.connect(self.copy_message)
        w.transcript.sig_regenerate_requested.connect(self.regenerate)
        w.transcript.sig_edit_requested.connect(self.edit_message)
        w.transcript.sig_copy_text_requested.connect(self.copy_text)
        w.transcript.set_tint_drafts(self.settings.tint_drafts)
        self._notice_actions: tuple[Any, Any] = (None, None)

    def start(self, model: ModelChoice | None = None, mtp: ModelChoice = "") -> None:
        """First screen: the newest conversation, and `model` (the command line's file or files, any
        part of a set) or else the last model (or an offer of the demo)."""
        interrupted = self.store.mark_interrupted()
        if interrupted:
            log.info("%d replies were interrupted by a crash and kept as stopped", interrupted)
        conversations = self.store.list_conversations()
        if conversations:
            self.open_conversation(conversations[0].id)
        else:
            self.new_conversation()
        self.window.composer.set_ready(False)
        if model:
            self.load_model(model, mtp)
        elif self.settings.model_path:
            self.load_model(self.settings.model_path, self.settings.mtp_model_path)
        else:
            self._notice(
                "No model is loaded yet. Try the built-in demo model, or open a Step Flash GGUF.",
                ("Use the demo model", lambda: self.load_model(DEMO_NAME, "")),
                ("Open a model…", self.choose_model),
            )

    # Notices -----------------------------------------------------------------------------

    def _notice(
        self, text: str, primary: tuple[str, Any] | None = None, secondary: tuple[str, Any] | None = None
    ) -> None:
        self._notice_actions = (primary[1] if primary else None, secondary[1] if secondary else None)
        self.window.notice.show_message(text, primary[0] if primary else "", secondary[0] if secondary else "")

    def _notice_primary(self) -> None:
        action = self._notice_actions[0]
        self.window.notice.hide()
        if action:
            action()

    def _notice_secondary(self) -> None:
        action = self._notice_actions[1]
        self.window.notice.hide()
        if action:
            action()

    def _image_dropped(self) -> None:
        self._notice("This model reads text only: images cannot be sent to it.")

    # Models ------------------------------------------------------------------------------

    def choose_model(self) -> None:
        dialog = ModelPickerDialog(
            self.settings.recent_models,
            self.settings.n_ctx,
            self.window,
            initial_path=self.settings.model_path,
            initial_mtp=self.settings.mtp_model_path,
            inspector=self.inspector,
        )
        # The picker has shown the memory verdict and asked already when the model does not fit.
        dialog.accepted.connect(lambda: self.load_model(*dialog.selected(), check_memory=False))
        dialog.open()

    def load_model(self, model_path: ModelChoice, mtp_path: ModelChoice, *, check_memory: bool = True) -> None:
        """Load on the engine thread; with check_memory, a model too big for free memory is not
        loaded until the user says so (startup, settings reload and notices come this way).

        Each path may be any part of a multi-part set (the whole set loads), or a tuple of parts
        picked together; settings and the recent list keep the set's part 1, one entry per set."""
        if self.active is not None:
            self.stop()
        try:
            path = ensure_demo_model() if model_path == DEMO_NAME else engine_paths(model_path)
        except OSError as exc:
            show_error(self.window, "Cannot create the demo model", f"{exc}. Check that the data folder is writable.")
            return
        self._loading = (model_path, mtp_path)
        self._remember(remembered(model_path), remembered(mtp_path))
        self.loaded = None
        self.window.composer.set_ready(False)
        self.window.notice.hide()
        name = "demo" if model_path == DEMO_NAME else Path(self.settings.model_path).name
        self.window.show_model(f"Loading {name}…")
        self.window.set_loading(True, 0.0, "Reading the model")
        mtp = engine_paths(mtp_path) if mtp_path else None
        request = LoadRequest(path, mtp, self.settings.load_options(), check_memory=check_memory)
        self.load_request = self.engine.load(request)

    def _remember(self, model_path: str, mtp_path: str) -> None:
        self.settings = replace(
            self.settings,
            model_path=model_path,
            mtp_model_path=mtp_path,
            recent_models=recent_with(self.settings.recent_models, model_path),
        )
        self._save_settings()

    def _on_load_progress(self, request_id: int, fraction: float, stage: str) -> None:
        if request_id == self.load_request:
            self.window.set_loading(True, fraction, stage)

    def _on_loaded(self, request_id: int, loaded: LoadedModel) -> None:
        if request_id != self.load_request:
            return
        self.loaded = loaded
        w = self.window
        w.set_loading(False)
        info = loaded.info
        if self.settings.model_path != DEMO_NAME:
            # Only now is part 1 of parts picked together (or renamed) known for sure: remember that one.
            mtp = str(info.mtp_path) if info.mtp_path else self.settings.mtp_model_path
            if (str(info.path), mtp) != (self.settings.model_path, self.settings.mtp_model_path):
                self._remember(str(info.path), mtp)
        demo = self.settings.model_path == DEMO_NAME
        name = "Stride demo" if demo else display_name(info.name, info.path, info.quantization)
        heads = f"MTP {loaded.n_heads} heads" if loaded.n_heads else "no MTP"
        details = f"{info.quantization} · {heads}"
        w.show_model(f"{name} · {details}", f"{info.name or info.path.name} · {details}\n{info.path}")
        w.status_label.setText("Ready")
        reason = None
        if loaded.n_heads == 0:  # said once, in the speed panel, which explains MTP's state
            reason = MTP_NOTE_TEXT["weights_absent" if info.mtp_weights == "absent" else "no_heads"]
        w.stats_panel.set_model(loaded.n_heads, reason)
        w.set_context(0, loaded.n_ctx)
        w.composer.set_ready(True)
        w.composer.edit.setFocus()
        self.sig_model_ready.emit(loaded)

    def _on_load_too_big(self, request_id: int, shortfall: NotEnoughMemory) -> None:
        if request_id != self.load_request:
            return
        self.window.set_loading(False)
        if confirm_too_big(self.window, shortfall.needed, shortfall.free):
            self.load_model(*self._loading, check_memory=False)
        else:  # the user has just read why: a notice, not another dialog
            self._not_loaded(f"{shortfall}; it was not loaded.")

    def _on_load_failed(self, request_id: int, failure: Failure) -> None:
        if request_id != self.load_request:
            return
        if failure.kind != "cancelled":
            show_error(self.window, "The model could not be loaded", failure.message, failure.details)
        self._not_loaded(failure.message)

    def _not_loaded(self, message: str) -> None:
        w = self.window
        w.set_loading(False)
        w.show_model("No model loaded")
        w.status_label.setText("")
        self._notice(
            message,
            ("Use the demo model", lambda: self.load_model(DEMO_NAME, "")),
            ("Open a model…", self.choose_model),
        )
        self.sig_model_failed.emit(message)

    # Conversations -------------------------------------------------------------------------

    def refresh_sidebar(self) -> None:
        try:
            items = self.store.list_conversations(self.search_text)
        except StoreError as exc:
            show_error(self.window, "Conversations unavailable", str(exc))
            return
        self.window.sidebar.set_conversations(items, self.conversation_id)

    def _search(self, text: str) -> None:
        self.search_text = text
        self.refresh_sidebar()

    def new_conversation(self) -> None:
        conv = self._guard(lambda: self.store.create_conversation(system_prompt=self.settings.system_prompt))
        if conv is not None:
            self.open_conversation(conv.id)
            self.window.composer.edit.setFocus()

    def open_conversation(self, conversation_id: int) -> None:
        messages = self._guard(lambda: self.store.messages(conversation_id))
        if messages is None:
            return
        self.conversation_id = conversation_id
        active = self.active
        # The database lags the live reply by up to a flush interval: its row shows the live buffer.
        buffers = {active.message_id: active.buffer} if active and active.conversation_id == conversation_id else {}
        summaries = {row: reply_summary(m.stats) for row, m in enumerate(messages) if m.role == "assistant" and m.stats}
        self.window.transcript_model.set_messages(messages, summaries, buffers)
        self.window.transcript.scrollToBottom()
        self.refresh_sidebar()
        last = next((m for m in reversed(messages) if m.stats), None)
        if last and self.loaded and last.stats:
            self.window.set_context(last.stats.n_prompt + last.stats.n_predicted, self.loaded.n_ctx)

    def rename_conversation(self, conversation_id: int | None) -> None:
        if conversation_id is None:
            return
        conv = self._guard(lambda: self.store.get_conversation(conversation_id))
        if conv is None:
            return
        title, ok = QInputDialog.getText(self.window, "Rename conversation", "Title:", text=conv.title)
        if ok and title.strip():
            self._guard(lambda: self.store.rename_conversation(conversation_id, title.strip()))
            self.refresh_sidebar()

    def edit_system_prompt(self) -> None:
        """Each conversation keeps its own system prompt; it applies from the next reply on."""
        conversation_id = self.conversation_id
        if conversation_id is None:
            return
        conv = self._guard(lambda: self.store.get_conversation(conversation_id))
        if conv is None:
            return
        text, ok = QInputDialog.getMultiLineText(
            self.window, "System prompt", "Instructions for this conversation:", conv.system_prompt
        )
        if ok:
            self._guard(lambda: self.store.set_system_prompt(conversation_id, text.strip()))

    def delete_conversation(self, conversation_id: int) -> None:
        if self.active and self.active.conversation_id == conversation_id:
            self.stop()
        answer = QMessageBox.question(
            self.window, "Delete conversation", "Delete this conversation? This cannot be undone."
        )
        if answer != QMessageBox.StandardButton.Yes:
            return
        self._guard(lambda: self.store.delete_conversation(conversation_id))
        if conversation_id == self.conversation_id:
            remaining = self.store.list_conversations()
            if remaining:
                self.open_conversation(remaining[0].id)
            else:
                self.new_conversation()
        self.refresh_sidebar()

    def export_conversation(self, conversation_id: int | None, fmt: str) -> None:
        if conversation_id is None:
            return
        conv = self._guard(lambda: self.store.get_conversation(conversation_id))
        if conv is None:
            return
        suffix, filt = (".md", "Markdown (*.md)") if fmt == "md" else (".json", "JSON (*.json)")
        path, _ = QFileDialog.getSaveFileName(self.window, "Export conversation", conv.title + suffix, filt)
        if not path:
            return
        try:
            if fmt == "md":
                text = self.store.export_markdown(conversation_id)
            else:
                text = json.dumps(self.store.export_json(conversation_id), indent=2, ensure_ascii=False)
            Path(path).write_text(text, encoding="utf-8")
        except (OSError, StoreError) as exc:
            show_error(self.window, "Export failed", f"Could not write {path}: {exc}")
            return
        self.window.status_label.setText(f"Exported to {path}")

    def import_conversation(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self.window, "Import conversation", "", "Stride JSON (*.json)")
        if not path:
            return
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
            conv = self.store.import_json(data)
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            show_error(self.window, "Import failed", f"{Path(path).name} is not a readable JSON file: {exc}")
            return
        except StoreError as exc:
            show_error(self.window, "Import failed", str(exc))
            return
        self.open_conversation(conv.id)

    # Sending and streaming ---------------------------------------------------------------------

    def send(self, text: str) -> None:
        if self.loaded is None:
            self._notice(
                "Load a model first.",
                ("Use the demo model", lambda: self.load_model(DEMO_NAME, "")),
                ("Open a model…", self.choose_model),
            )
            return
        if self.active is not None or self.conversation_id is None:
            return
        conversation_id = self.conversation_id
        user = self._guard(lambda: self.store.add_message(conversation_id, "user", text))
        if user is None:
            return
        self.window.composer.clear()
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
            self.window.transcript.scrollToBottom()
        n_heads = self.loaded.n_heads if self.loaded else 0
        self.window.stats_panel.reset(n_heads)
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
            self.window.stats_panel.set_prompt_progress(done, total)

    def _on_delta(self, request_id: int, delta: Delta) -> None:
        active = self.active
        if active is None or request_id != active.request_id:
            return  # a late delta from a stopped or superseded request
        self.window.prompt_progress.hide()
        row = self._visible_row()
        for seg in delta.segments:
            active.add(seg.kind, seg.text, seg.from_draft)
        if row is not None:  # the row paints from the reply's buffer
            self.window.transcript_model.streamed(row)
            self.window.transcript.scroll_to_bottom_if_following()

    def _on_stats(self, request_id: int, snapshot: StatsSnapshot) -> None:
        if self.active and request_id == self.active.request_id:
            self.window.stats_panel.update_stats(snapshot)
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
        self._guard(
            lambda: self.store.update_message(
                active.message_id,
                content=active.buffer.content,
                reasoning=active.buffer.reasoning,
                status=status,
                stats=stats,
                draft_spans=active.buffer.draft_spans(),
                thought_seconds=active.thought_seconds,
            ),
            quiet=quiet,
        )

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
        w.prompt_progress.hide()
        if active.conversation_id == self.conversation_id:
            row = w.transcript_model.row_of(active.message_id)
            if row is not None:
                final = replace(
                    cast(Message, w.transcript_model.message(row)),
                    content=active.buffer.content,
                    reasoning=active.buffer.reasoning,
                    status=status,
                    stats=stats,
                    draft_spans=active.buffer.draft_spans(),
                    thought_seconds=active.thought_seconds,
                )
                w.transcript_model.update_message(row, final)
                if stats:
                    w.transcript_model.set_summary(row, reply_summary(stats))
        # The final figures, applied here once; the big "now" figure becomes the reply's average.
        w.stats_panel.finish(stats or None)
        if stats:
            self._show_context_used(stats)
        self.refresh_sidebar()

    def stop(self) -> None:
        """Stop the reply (or a load in progress). The flag takes effect after the current decode step."""
        self.engine.stop()

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
        self.window.composer.set_text(msg.content)

    def copy_message(self, row: int) -> None:
        # live_text includes what is still streaming into the row.
        QGuiApplication.clipboard().setText(self.window.transcript_model.live_text(row).content)
        self.window.status_label.setText("Copied to the clipboard")

    def copy_text(self, text: str) -> None:
        """A code block's Copy button."""
        QGuiApplication.clipboard().setText(text)
        self.window.status_label.setText("Code copied to the clipboard")

    # Settings --------------------------------------------------------------------------------

    def open_settings(self) -> None:
        dialog = SettingsDialog(self.settings, self.window)
        dialog.accepted.connect(lambda: self.apply_settings(dialog.result_settings()))
        dialog.sig_forget_auto.connect(self.engine.forget_auto)
        dialog.open()

    def _on_auto_forgotten(self, n_models: int) -> None:
        models = "1 model" if n_models == 1 else f"{n_models} models"
        self.window.status_label.setText(f"Auto forgot what it learned ({models}); it measures afresh next reply")

    def apply_settings(self, new: Settings) -> None:
        problems = validate(new)
        if problems:
            show_error(self.window, "Settings not saved", "\n".join(problems))
            return
        old, self.settings = self.settings, new
        self._save_settings()
        if new.theme != old.theme:
            app = QGuiApplication.instance()
            if app is not None:
                apply_theme(app, new.theme)  # type: ignore[arg-type]
        self.window.act_tint.setChecked(new.tint_drafts)
        if old.needs_reload(new) and new.model_path:
            answer = QMessageBox.question(
                self.window, "Reload the model?", "These changes take effect after reloading the model. Reload now?"
            )
            if answer == QMessageBox.StandardButton.Yes:
                self.load_model(new.model_path, new.mtp_model_path)

    def _set_tint(self, on: bool) -> None:
        self.window.transcript.set_tint_drafts(on)
        if on != self.settings.tint_drafts:
            self.settings = replace(self.settings, tint_drafts=on)
            self._save_settings()

    def _save_settings(self) -> None:
        try:
            save_settings(self.settings, self.settings_path)
        except SettingsError as exc:
            show_error(self.window, "Settings not saved", str(exc))

    # Shutdown ----------------------------------------------------------------------------------

    def shutdown(self) -> None:
        """Closing: cancel what runs, save the partial reply, stop the engine thread, then allow the close."""
        active, self.active = self.active, None  # results still queued for it are dropped from now on
        self._flush_timer.stop()
        if active is not None:
            self.engine.stop()
            self._save_reply(active, status="stopped", quiet=True)
        self.engine.shutdown()
        self.store.close()
        self.window.allow_close()

    # Helpers -----------------------------------------------------------------------------------

    def _guard(self, action: Any, *, quiet: bool = False) -> Any:
        """Run a store operation; a database problem becomes a message, never a crash."""
        try:
            return action()
        except StoreError as exc:
            log.error("store: %s", exc)
            if not quiet:
                show_error(self.window, "Conversation not saved", str(exc))
            return None

    def _about(self) -> None:
        QMessageBox.about(
            self.window,
            "About Stride",
            "Stride: offline chat with Step 3.5/3.7 Flash, faster with multi-token prediction.",
        )


def _title_from(text: str) -> str:
    line = " ".join(text.split())
    return line if len(line) <= TITLE_LENGTH else line[: TITLE_LENGTH - 1].rstrip() + "…"


__all__ = ["ActiveReply", "ChatController", "Message"]
