"""Conversation list: search, new, rename, delete. Emits; the controller acts."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Protocol

from PySide6.QtCore import QPoint, Qt, QTimer, Signal, SignalInstance
from PySide6.QtWidgets import (
    QHBoxLayout,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QMenu,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from app.resources import icon

SEARCH_DELAY_MS = 200  # search as you type, without a query per keystroke


class ConversationLike(Protocol):
    id: int
    title: str
    updated_at: float
    snippet: str


class Sidebar(QWidget):
    sig_new = Signal()
    sig_selected = Signal(int)
    sig_rename = Signal(int)
    sig_delete = Signal(int)
    sig_export = Signal(int)
    sig_search = Signal(str)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.new_button = QPushButton(icon("new-chat"), "New chat")
        self.new_button.setAccessibleName("New chat")
        self.new_button.setToolTip("New chat (Ctrl+N)")
        self.search = QLineEdit()
        self.search.setObjectName("searchBox")
        self.search.setPlaceholderText("Search conversations")
        self.search.setAccessibleName("Search conversations")
        self.search.setClearButtonEnabled(True)
        self.list = QListWidget()
        self.list.setObjectName("conversationList")
        self.list.setAccessibleName("Conversations")
        self.list.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
        self.rename_button = QPushButton(icon("edit"), "")
        self.rename_button.setAccessibleName("Rename conversation")
        self.rename_button.setToolTip("Rename (F2)")
        self.delete_button = QPushButton(icon("delete"), "")
        self.delete_button.setAccessibleName("Delete conversation")
        self.delete_button.setToolTip("Delete")

        top = QHBoxLayout()
        top.addWidget(self.new_button, 1)
        top.addWidget(self.rename_button)
        top.addWidget(self.delete_button)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(8, 8, 4, 8)
        layout.addLayout(top)
        layout.addWidget(self.search)
        layout.addWidget(self.list, 1)

        self._search_timer = QTimer(self, singleShot=True, interval=SEARCH_DELAY_MS)
        self._search_timer.timeout.connect(lambda: self.sig_search.emit(self.search.text().strip()))
        self.search.textChanged.connect(lambda _text: self._search_timer.start())
        self.new_button.clicked.connect(self.sig_new)
        self.rename_button.clicked.connect(lambda: self._emit_current(self.sig_rename))
        self.delete_button.clicked.connect(lambda: self._emit_current(self.sig_delete))
        self.list.currentItemChanged.connect(self._on_current)
        self.list.customContextMenuRequested.connect(self._context_menu)

    def set_conversations(self, items: Sequence[ConversationLike], current: int | None) -> None:
        self.list.blockSignals(True)
        self.list.clear()
        for conv in items:
            when = datetime.fromtimestamp(conv.updated_at).strftime("%d %b %H:%M")
            item = QListWidgetItem(conv.title + (f"\n{conv.snippet}" if conv.snippet else f"\n{when}"))
            item.setData(Qt.ItemDataRole.UserRole, conv.id)
            item.setData(Qt.ItemDataRole.AccessibleTextRole, f"{conv.title}, {when}")
            item.setToolTip(conv.title)
            self.list.addItem(item)
            if conv.id == current:
                self.list.setCurrentItem(item)
        self.list.blockSignals(False)

    def current_id(self) -> int | None:
        item = self.list.currentItem()
        return int(item.data(Qt.ItemDataRole.UserRole)) if item else None

    def _on_current(self, item: QListWidgetItem | None, _previous: QListWidgetItem | None) -> None:
        if item is not None:
            self.sig_selected.emit(int(item.data(Qt.ItemDataRole.UserRole)))

    def _emit_current(self, signal: SignalInstance) -> None:
        conv_id = self.current_id()
        if conv_id is not None:
            signal.emit(conv_id)

    def _context_menu(self, pos: QPoint) -> None:
        item = self.list.itemAt(pos)
        if item is None:
            return
        conv_id = int(item.data(Qt.ItemDataRole.UserRole))
        menu = QMenu(self)
        menu.addAction(icon("edit"), "Rename", lambda: self.sig_rename.emit(conv_id))
        menu.addAction(icon("export"), "Export…", lambda: self.sig_export.emit(conv_id))
        menu.addAction(icon("delete"), "Delete", lambda: self.sig_delete.emit(conv_id))
        menu.exec(self.list.viewport().mapToGlobal(pos))
