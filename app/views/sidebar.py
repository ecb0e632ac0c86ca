"""Conversation list: search, new, rename, delete. Emits; the controller acts."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Protocol, TypeAlias

from PySide6.QtCore import QModelIndex, QPersistentModelIndex, QPoint, QRect, QSize, Qt, QTimer, Signal, SignalInstance
from PySide6.QtGui import QFont, QFontMetrics, QPainter, QPalette
from PySide6.QtWidgets import (
    QAbstractItemView,
    QHBoxLayout,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QMenu,
    QPushButton,
    QStyle,
    QStyledItemDelegate,
    QStyleOptionViewItem,
    QVBoxLayout,
    QWidget,
)

from app.resources import icon

SEARCH_DELAY_MS = 200  # search as you type, without a query per keystroke
ITEM_PAD_X = 8
ITEM_PAD_Y = 6
LINE_GAP = 2
AnyIndex: TypeAlias = QModelIndex | QPersistentModelIndex
SubtitleRole = Qt.ItemDataRole.UserRole + 1  # the second line: a matching snippet, or when it was last used


class ConversationLike(Protocol):
    id: int
    title: str
    updated_at: float
    snippet: str


class ConversationDelegate(QStyledItemDelegate):
    """Two lines per conversation, each cut to the list's width with an ellipsis: the title, and a
    muted line under it (the search snippet, or the date). Rows are as wide as the list, never
    wider, so the list has no horizontal scroll bar."""

    def _fonts(self, option: QStyleOptionViewItem) -> tuple[QFont, QFont]:
        title = QFont(option.font)
        title.setWeight(QFont.Weight.DemiBold)
        subtitle = QFont(option.font)
        subtitle.setPointSizeF(option.font.pointSizeF() * 0.88)
        return title, subtitle

    def sizeHint(self, option: QStyleOptionViewItem, index: AnyIndex) -> QSize:
        title, subtitle = self._fonts(option)
        height = QFontMetrics(title).height() + LINE_GAP + QFontMetrics(subtitle).height() + 2 * ITEM_PAD_Y
        return QSize(1, height)  # width: the view's; a text's width never widens a row

    def lines(self, option: QStyleOptionViewItem, index: AnyIndex) -> tuple[str, str]:
        """The two lines as drawn in this row: elided to fit."""
        title_font, subtitle_font = self._fonts(option)
        width = max(1, option.rect.width() - 2 * ITEM_PAD_X)
        title = " ".join(str(index.data(Qt.ItemDataRole.DisplayRole) or "").split())
        subtitle = " ".join(str(index.data(SubtitleRole) or "").split())
        elide = Qt.TextElideMode.ElideRight
        return (
            QFontMetrics(title_font).elidedText(title, elide, width),
            QFontMetrics(subtitle_font).elidedText(subtitle, elide, width),
        )

    def paint(self, painter: QPainter, option: QStyleOptionViewItem, index: AnyIndex) -> None:
        opt = QStyleOptionViewItem(option)
        self.initStyleOption(opt, index)
        opt.text = ""  # the style draws the background, selection and focus; the text is drawn here
        widget = opt.widget
        style = widget.style() if widget is not None else None
        if style is not None:
            style.drawControl(QStyle.ControlElement.CE_ItemViewItem, opt, painter, widget)
        title, subtitle = self.lines(option, index)
        title_font, subtitle_font = self._fonts(option)
        selected = bool(option.state & QStyle.StateFlag.State_Selected)
        palette = option.palette
        text_color = palette.color(QPalette.ColorRole.HighlightedText if selected else QPalette.ColorRole.Text)
        muted = palette.color(QPalette.ColorRole.HighlightedText if selected else QPalette.ColorRole.PlaceholderText)
        rect = option.rect.adjusted(ITEM_PAD_X, ITEM_PAD_Y, -ITEM_PAD_X, -ITEM_PAD_Y)
        title_height = QFontMetrics(title_font).height()
        painter.save()
        align = Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter
        painter.setFont(title_font)
        painter.setPen(text_color)
        painter.drawText(QRect(rect.x(), rect.y(), rect.width(), title_height), align, title)
        painter.setFont(subtitle_font)
        painter.setPen(muted)
        top = rect.y() + title_height + LINE_GAP
        painter.drawText(QRect(rect.x(), top, rect.width(), rect.bottom() - top + 1), align, subtitle)
        painter.restore()


class Sidebar(QWidget):
    sig_new = Signal()
    """no arguments: start a new conversation"""
    sig_selected = Signal(int)
    """id of the conversation chosen"""
    sig_rename = Signal(int)
    """id of the conversation to rename"""
    sig_delete = Signal(int)
    """id of the conversation to delete"""
    sig_export = Signal(int)
    """id of the conversation to export"""
    sig_search = Signal(str)
    """the search text as typed"""

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
        self.list.setItemDelegate(ConversationDelegate(self.list))
        self.list.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.list.setHorizontalScrollMode(QAbstractItemView.ScrollMode.ScrollPerPixel)
        self.list.setTextElideMode(Qt.TextElideMode.ElideRight)
        self.list.setUniformItemSizes(True)  # every row is two lines: no per-row measuring
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
            item = QListWidgetItem(conv.title)
            item.setData(SubtitleRole, conv.snippet or when)
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
