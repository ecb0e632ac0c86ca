"""The chat controller: everything the window asks for, in one place.

It owns the settings, the conversation store and the engine client; views only show and emit.
The GUI thread never waits on llama.cpp: every engine call is a queued request whose results
come back as signals tagged with a request id, and results for an older request are dropped.

ChatController is built in parts, one concern a file, each adding to the one before:
base (shared state, notices, the store guard) -> models -> conversations -> replies -> server
(the Server panel) -> chat (wiring, the first screen, settings, shutdown).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from PySide6.QtCore import QUrl
from PySide6.QtGui import QDesktopServices, QGuiApplication
from PySide6.QtWidgets import QMessageBox

from app.controller.base import log
from app.controller.server import ServerPart
from app.model_files import ModelChoice
from app.settings import LoadResult, Settings, validate
from app.store import ConversationStore, StoreError
from app.theme import apply_theme
from app.views.error_dialog import show_error
from app.views.main_window import MainWindow
from app.views.settings_dialog import SettingsDialog
from engine.qt_worker import log_dir


class ChatController(ServerPart):
    def __init__(
        self, window: MainWindow, store: ConversationStore, settings: LoadResult, settings_path: Path | None = None
    ) -> None:
        super().__init__(window, store, settings, settings_path)
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

        w.set_tint_drafts(self.settings.tint_drafts)
        w.transcript_model.set_picture_reader(self._picture_bytes)
        w.sig_send.connect(self.send)
        w.sig_stop.connect(self.stop)
        w.sig_image_dropped.connect(self._image_dropped)
        w.sig_picture_refused.connect(self._picture_refused)
        w.sig_new_chat.connect(self.new_conversation)
        w.sig_choose_model.connect(self.choose_model)
        w.sig_cancel_load.connect(self.engine.stop)
        w.sig_open_settings.connect(self.open_settings)
        w.sig_import.connect(self.import_conversation)
        w.sig_export.connect(
            lambda cid, fmt: self.export_conversation(self.conversation_id if cid is None else cid, fmt)
        )
        w.sig_rename.connect(lambda cid: self.rename_conversation(self.conversation_id if cid is None else cid))
        w.sig_delete.connect(self.delete_conversation)
        w.sig_conversation_selected.connect(self.open_conversation)
        w.sig_search.connect(self._search)
        w.sig_edit_system_prompt.connect(self.edit_system_prompt)
        w.sig_tint_toggled.connect(self._set_tint)
        w.sig_open_log_folder.connect(lambda: QDesktopServices.openUrl(QUrl.fromLocalFile(str(log_dir()))))
        w.sig_regenerate_last.connect(self.regenerate_last)
        w.sig_regenerate.connect(self.regenerate)
        w.sig_edit.connect(self.edit_message)
        w.sig_copy_message.connect(self.copy_message)
        w.sig_copy_text.connect(self.copy_text)
        w.sig_notice_primary.connect(lambda: self._on_notice_clicked(0))
        w.sig_notice_secondary.connect(lambda: self._on_notice_clicked(1))
        w.sig_close_requested.connect(self.shutdown)

    def _picture_bytes(self, digest: str) -> bytes | None:
        """A stored picture for the transcript; None when its file is gone (the row says so)."""
        try:
            return self.store.image_bytes(digest)
        except StoreError as exc:
            log.warning("picture: %s", exc)
            return None

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
        self.window.set_ready(False)
        if self.settings.server_enabled:  # it serves the model once loaded; until then requests get a 503
            self.set_server_on(True)
        if model:
            self.load_model(model, mtp)
        elif self.settings.model_path:
            self.load_model(self.settings.model_path, self.settings.mtp_model_path)
        else:
            self._offer_models("No model is loaded yet. Try the built-in demo model, or open a Step Flash GGUF.")

    def open_settings(self) -> None:
        dialog = SettingsDialog(self.settings, self.window)
        dialog.accepted.connect(lambda: self.apply_settings(dialog.result_settings()))
        dialog.sig_forget_auto.connect(self.engine.forget_auto)
        dialog.open()

    def _on_auto_forgotten(self, n_models: int) -> None:
        models = "1 model" if n_models == 1 else f"{n_models} models"
        self.window.show_status(f"Auto forgot what it learned ({models}); it measures afresh next reply")

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
        self.window.set_tint_drafts(new.tint_drafts)
        if old.needs_reload(new) and new.model_path:
            answer = QMessageBox.question(
                self.window, "Reload the model?", "These changes take effect after reloading the model. Reload now?"
            )
            if answer == QMessageBox.StandardButton.Yes:
                self.load_model(new.model_path, new.mtp_model_path)

    def _set_tint(self, on: bool) -> None:
        if on != self.settings.tint_drafts:
            self.settings = replace(self.settings, tint_drafts=on)
            self._save_settings()

    def shutdown(self) -> None:
        """Closing: cancel what runs, save the partial reply, stop the engine thread, then allow the close."""
        active, self.active = self.active, None  # results still queued for it are dropped from now on
        self._flush_timer.stop()
        if active is not None:
            self.engine.stop()
            self._save_reply(active, status="stopped", quiet=True)
        self.stop_server()
        self.engine.shutdown()
        self.store.close()
        self.window.allow_close()
