"""The message box: Enter sends, Shift+Enter starts a new line; Send turns into Stop while replying."""

from __future__ import annotations

from PySide6.QtCore import QMimeData, Qt, Signal
from PySide6.QtGui import QKeyEvent
from PySide6.QtWidgets import QHBoxLayout, QPlainTextEdit, QPushButton, QVBoxLayout, QWidget

from app.resources import icon

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".gif", ".webp", ".bmp")


class MessageEdit(QPlainTextEdit):
    sig_submit = Signal()
    """no arguments: Enter without Shift was pressed"""
    sig_image_dropped = Signal()
    """no arguments: a picture file was dropped on the message box"""

    def keyPressEvent(self, event: QKeyEvent) -> None:
        enter = event.key() in (Qt.Key.Key_Return, Qt.Key.Key_Enter)
        if enter and not event.modifiers() & Qt.KeyboardModifier.ShiftModifier:
            self.sig_submit.emit()
            return
        super().keyPressEvent(event)

    def canInsertFromMimeData(self, source: QMimeData) -> bool:
        return source.hasImage() or _has_image_file(source) or super().canInsertFromMimeData(source)

    def insertFromMimeData(self, source: QMimeData) -> None:
        # Stride's models read text only: say so instead of pasting a file path or nothing.
        if source.hasImage() or _has_image_file(source):
            self.sig_image_dropped.emit()
            return
        super().insertFromMimeData(source)


def _has_image_file(source: QMimeData) -> bool:
    return source.hasUrls() and any(u.toLocalFile().lower().endswith(IMAGE_SUFFIXES) for u in source.urls())


class Composer(QWidget):
    sig_send = Signal(str)
    """the message text, stripped, never empty"""
    sig_stop = Signal()
    """no arguments: the user asked to stop the reply"""
    sig_image_dropped = Signal()
    """no arguments: a picture file was dropped on the message box"""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.edit = MessageEdit()
        self.edit.setObjectName("composer")
        self.edit.setPlaceholderText("Message Stride…  (Enter to send, Shift+Enter for a new line)")
        self.edit.setAccessibleName("Message")
        self.edit.setFixedHeight(84)
        self.send_button = QPushButton(icon("send"), "Send")
        self.send_button.setObjectName("sendButton")
        self.send_button.setAccessibleName("Send message")
        self.send_button.setToolTip("Send (Enter)")
        self.stop_button = QPushButton(icon("stop"), "Stop")
        self.stop_button.setObjectName("stopButton")
        self.stop_button.setAccessibleName("Stop the reply")
        self.stop_button.setToolTip("Stop (Esc)")
        self.stop_button.hide()

        buttons = QVBoxLayout()
        buttons.addWidget(self.send_button)
        buttons.addWidget(self.stop_button)
        buttons.addStretch(1)
        row = QHBoxLayout(self)
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(self.edit, 1)
        row.addLayout(buttons)

        self.edit.sig_submit.connect(self.submit)
        self.edit.sig_image_dropped.connect(self.sig_image_dropped)
        self.send_button.clicked.connect(self.submit)
        self.stop_button.clicked.connect(self.sig_stop)

    def submit(self) -> None:
        """Send the text, when there is some and Send is offered (not while a reply runs)."""
        text = self.edit.toPlainText().strip()
        if text and self.send_button.isVisible() and self.send_button.isEnabled():
            self.sig_send.emit(text)

    def clear(self) -> None:
        self.edit.clear()

    def set_text(self, text: str) -> None:
        self.edit.setPlainText(text)
        self.edit.setFocus()

    def set_busy(self, busy: bool) -> None:
        """While a reply runs, Send becomes Stop (the text box stays editable for the next message)."""
        self.send_button.setVisible(not busy)
        self.stop_button.setVisible(busy)

    def set_ready(self, ready: bool) -> None:
        self.send_button.setEnabled(ready)
