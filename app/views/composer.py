"""The message box: Enter sends, Shift+Enter starts a new line; Send turns into Stop while replying.

Pictures come in through Attach, drag and drop, and paste; each shows as a thumbnail with a
remove button until the message is sent.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from PySide6.QtCore import QMimeData, QSize, Qt, Signal
from PySide6.QtGui import QImage, QKeyEvent
from PySide6.QtWidgets import (
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QPlainTextEdit,
    QPushButton,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from app.resources import icon
from app.views.pictures import FILE_FILTER, Picture, PictureError, picture_from_image, read_picture, thumbnail

THUMBNAIL_EDGE = 56


class MessageEdit(QPlainTextEdit):
    sig_submit = Signal()
    """no arguments: Enter without Shift was pressed"""
    sig_files_dropped = Signal(list)
    """list[Path]: local files dropped or pasted on the message box"""
    sig_image_pasted = Signal(QImage)
    """a picture pasted from the clipboard (no file behind it)"""

    def keyPressEvent(self, event: QKeyEvent) -> None:
        enter = event.key() in (Qt.Key.Key_Return, Qt.Key.Key_Enter)
        if enter and not event.modifiers() & Qt.KeyboardModifier.ShiftModifier:
            self.sig_submit.emit()
            return
        super().keyPressEvent(event)

    def canInsertFromMimeData(self, source: QMimeData) -> bool:
        return source.hasImage() or bool(_local_files(source)) or super().canInsertFromMimeData(source)

    def insertFromMimeData(self, source: QMimeData) -> None:
        # Files become attachments (a picture, or a clear word on why not), never their path as text.
        files = _local_files(source)
        if files:
            self.sig_files_dropped.emit(files)
        elif source.hasImage():
            self.sig_image_pasted.emit(QImage(source.imageData()))
        else:
            super().insertFromMimeData(source)


def _local_files(source: QMimeData) -> list[Path]:
    if not source.hasUrls():
        return []
    return [Path(u.toLocalFile()) for u in source.urls() if u.isLocalFile()]


class Composer(QWidget):
    sig_send = Signal(str)
    """the message text, stripped; empty only when pictures go without words"""
    sig_stop = Signal()
    """no arguments: the user asked to stop the reply"""
    sig_image_dropped = Signal()
    """no arguments: a picture came while the model cannot read pictures (nothing was attached)"""
    sig_picture_refused = Signal(str)
    """why a file or pasted content could not be attached (one line naming it and the fix)"""

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
        self.attach_button = QPushButton(icon("attach"), "Attach")
        self.attach_button.setObjectName("attachButton")
        self.attach_button.setAccessibleName("Attach pictures")
        self.attach_button.setToolTip("Attach pictures (or drop or paste them into the message)")
        self.pictures: list[Picture] = []
        self.reads_pictures = False  # the loaded model has a vision projector
        self.strip = QWidget()
        self.strip.setObjectName("attachments")
        self.strip_row = QHBoxLayout(self.strip)
        self.strip_row.setContentsMargins(0, 0, 0, 0)
        self.strip_row.addStretch(1)
        self.strip.hide()

        buttons = QVBoxLayout()
        buttons.addWidget(self.send_button)
        buttons.addWidget(self.stop_button)
        buttons.addWidget(self.attach_button)
        buttons.addStretch(1)
        text_column = QVBoxLayout()
        text_column.setContentsMargins(0, 0, 0, 0)
        text_column.addWidget(self.strip)
        text_column.addWidget(self.edit, 1)
        row = QHBoxLayout(self)
        row.setContentsMargins(0, 0, 0, 0)
        row.addLayout(text_column, 1)
        row.addLayout(buttons)

        self.edit.sig_submit.connect(self.submit)
        self.edit.sig_files_dropped.connect(self.attach_files)
        self.edit.sig_image_pasted.connect(self.attach_image)
        self.send_button.clicked.connect(self.submit)
        self.stop_button.clicked.connect(self.sig_stop)
        self.attach_button.clicked.connect(self.choose_files)

    def submit(self) -> None:
        """Send the text (and pictures), when there is something and Send is offered (not while a reply runs)."""
        text = self.edit.toPlainText().strip()
        if (text or self.pictures) and self.send_button.isVisible() and self.send_button.isEnabled():
            self.sig_send.emit(text)

    def clear(self) -> None:
        self.edit.clear()
        self.set_pictures([])

    # -- pictures ----------------------------------------------------------------------------------------------

    def choose_files(self) -> None:
        if not self.reads_pictures:
            self.sig_image_dropped.emit()
            return
        names, _ = QFileDialog.getOpenFileNames(self, "Attach pictures", "", FILE_FILTER)
        self.attach_files([Path(n) for n in names])

    def attach_files(self, paths: Sequence[Path]) -> None:
        """Decode each file (already scaled) and add it; the first refusal is said, the rest still attach."""
        if not paths:
            return
        if not self.reads_pictures:
            self.sig_image_dropped.emit()
            return
        refused = []
        for path in paths:
            try:
                self._add(read_picture(path))
            except PictureError as exc:
                refused.append(str(exc))
        if refused:
            more = f" ({len(refused) - 1} more not attached)" if len(refused) > 1 else ""
            self.sig_picture_refused.emit(refused[0] + more)

    def attach_image(self, image: QImage) -> None:
        if not self.reads_pictures:
            self.sig_image_dropped.emit()
            return
        try:
            self._add(picture_from_image(image))
        except PictureError as exc:
            self.sig_picture_refused.emit(str(exc))

    def set_pictures(self, pictures: Sequence[Picture]) -> None:
        self.pictures = []
        while self.strip_row.count() > 1:  # the stretch at the end stays
            item = self.strip_row.takeAt(0)
            widget = item.widget() if item is not None else None
            if widget is not None:
                widget.deleteLater()
        for picture in pictures:
            self._add(picture)
        self.strip.setVisible(bool(self.pictures))

    def _add(self, picture: Picture) -> None:
        self.pictures.append(picture)
        self.strip_row.insertWidget(self.strip_row.count() - 1, self._thumbnail(picture))
        self.strip.show()

    def _thumbnail(self, picture: Picture) -> QWidget:
        tile = QWidget()
        tile.setObjectName("attachment")
        label = QLabel(tile)
        label.setPixmap(thumbnail(picture.image, THUMBNAIL_EDGE))
        label.setFixedSize(THUMBNAIL_EDGE, THUMBNAIL_EDGE)
        label.setAlignment(Qt.AlignmentFlag.AlignCenter)
        label.setToolTip(f"{picture.name} ({picture.image.width()} x {picture.image.height()} px)")
        remove = QToolButton(tile)
        remove.setObjectName("removeAttachment")
        remove.setText("✕")
        remove.setAccessibleName(f"Remove {picture.name}")
        remove.setToolTip(f"Remove {picture.name}")
        remove.setFixedSize(QSize(20, 20))
        remove.move(THUMBNAIL_EDGE - 20, 0)
        remove.clicked.connect(lambda: self._remove(picture, tile))
        tile.setFixedSize(THUMBNAIL_EDGE, THUMBNAIL_EDGE)
        return tile

    def _remove(self, picture: Picture, tile: QWidget) -> None:
        self.pictures = [p for p in self.pictures if p is not picture]
        self.strip_row.removeWidget(tile)
        tile.deleteLater()
        self.strip.setVisible(bool(self.pictures))

    def set_reads_pictures(self, reads: bool) -> None:
        self.reads_pictures = reads

    def set_text(self, text: str) -> None:
        self.edit.setPlainText(text)
        self.edit.setFocus()

    def set_busy(self, busy: bool) -> None:
        """While a reply runs, Send becomes Stop (the text box stays editable for the next message)."""
        self.send_button.setVisible(not busy)
        self.stop_button.setVisible(busy)

    def set_ready(self, ready: bool) -> None:
        self.send_button.setEnabled(ready)
