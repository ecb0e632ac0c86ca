"""The controller's conversations part: the sidebar's list and search, opening, creating,
renaming, deleting, the system prompt, and export and import.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from PySide6.QtWidgets import QFileDialog, QInputDialog, QMessageBox

from app.controller.models import ModelsPart
from app.settings import LoadResult
from app.store import ConversationStore, StoreError
from app.views.error_dialog import show_error
from app.views.main_window import MainWindow
from app.views.stats_panel import reply_summary


class ConversationsPart(ModelsPart):
    def __init__(
        self, window: MainWindow, store: ConversationStore, settings: LoadResult, settings_path: Path | None
    ) -> None:
        super().__init__(window, store, settings, settings_path)
        self.search_text = ""

    def refresh_sidebar(self) -> None:
        try:
            items = self.store.list_conversations(self.search_text)
        except StoreError as exc:
            show_error(self.window, "Conversations unavailable", str(exc))
            return
        self.window.show_conversations(items, self.conversation_id)

    def _search(self, text: str) -> None:
        self.search_text = text
        self.refresh_sidebar()

    def new_conversation(self) -> None:
        conv = self._guard(lambda: self.store.create_conversation(system_prompt=self.settings.system_prompt))
        if conv is not None:
            self.open_conversation(conv.id)
            self.window.focus_composer()

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
        self.window.scroll_to_latest()
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
                self._export_markdown(conversation_id, Path(path))
            else:
                text = json.dumps(self.store.export_json(conversation_id), indent=2, ensure_ascii=False)
                Path(path).write_text(text, encoding="utf-8")
        except (OSError, StoreError) as exc:
            show_error(self.window, "Export failed", f"Could not write {path}: {exc}")
            return
        self.window.show_status(f"Exported to {path}")

    def _export_markdown(self, conversation_id: int, path: Path) -> None:
        """The Markdown file, its pictures beside it in NAME_files/ (linked relatively: the two move together)."""
        folder = path.with_name(f"{path.stem}_files")
        text = self.store.export_markdown(conversation_id, folder.name)
        digests = {d for m in self.store.messages(conversation_id) for d in m.images}
        if digests:
            folder.mkdir(exist_ok=True)
            for digest in digests:
                shutil.copyfile(self.store.image_path(digest), folder / f"{digest}.png")
        path.write_text(text, encoding="utf-8")

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
