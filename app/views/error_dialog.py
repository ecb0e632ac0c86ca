"""An error dialog that says what went wrong and what to do, with the details a bug report needs.

A QDialog rather than a QMessageBox: every QMessageBox button closes the box, and
"Copy details" must leave it open.
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Qt, QUrl
from PySide6.QtGui import QDesktopServices, QFontDatabase, QGuiApplication
from PySide6.QtWidgets import (
    QDialog,
    QDialogButtonBox,
    QHBoxLayout,
    QLabel,
    QPlainTextEdit,
    QStyle,
    QVBoxLayout,
    QWidget,
)

# A parentless dialog opened with open() has no owner: without this reference Python would
# collect it at once. It is dropped when the dialog closes.
_OPEN: set[ErrorDialog] = set()


class ErrorDialog(QDialog):
    def __init__(
        self,
        parent: QWidget | None,
        title: str,
        message: str,
        details: str = "",
        *,
        log_dir: str | Path | None = None,
    ) -> None:
        super().__init__(parent)
        self.setWindowTitle(title)
        self.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        self.setMinimumWidth(440)
        self._message = message
        self._details = details

        icon = QLabel()
        size = self.style().pixelMetric(QStyle.PixelMetric.PM_MessageBoxIconSize, None, self)
        icon.setPixmap(self.style().standardIcon(QStyle.StandardPixmap.SP_MessageBoxCritical).pixmap(size, size))
        icon.setAccessibleName("Error")
        heading = QLabel(title)
        heading.setStyleSheet("font-weight: 600;")
        heading.setWordWrap(True)
        text = QLabel(message)
        text.setWordWrap(True)
        text.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        text.setAccessibleName("Error message")
        text.setAccessibleDescription(message)
        words = QVBoxLayout()
        words.addWidget(heading)
        words.addWidget(text)
        top = QHBoxLayout()
        top.addWidget(icon, 0, Qt.AlignmentFlag.AlignTop)
        top.addLayout(words, 1)

        self._details_view = QPlainTextEdit(details)
        self._details_view.setReadOnly(True)
        self._details_view.setFont(QFontDatabase.systemFont(QFontDatabase.SystemFont.FixedFont))
        self._details_view.setAccessibleName("Error details")
        self._details_view.setLineWrapMode(QPlainTextEdit.LineWrapMode.NoWrap)  # tracebacks read best unwrapped
        self._details_view.hide()

        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        close = buttons.button(QDialogButtonBox.StandardButton.Close)
        close.setAccessibleName("Close")
        close.setDefault(True)
        buttons.rejected.connect(self.reject)
        self.copy_button = buttons.addButton("&Copy details", QDialogButtonBox.ButtonRole.ActionRole)
        self.copy_button.setAccessibleName("Copy the message and details to the clipboard")
        self.copy_button.setAutoDefault(False)  # Enter closes; it never copies by surprise
        self.copy_button.clicked.connect(self.copy_details)
        if details:
            toggle = buttons.addButton("Show &details", QDialogButtonBox.ButtonRole.ActionRole)
            toggle.setAccessibleName("Show or hide the details")
            toggle.setAutoDefault(False)
            toggle.setCheckable(True)
            toggle.toggled.connect(self._show_details)
        if log_dir is not None:
            folder = Path(log_dir)
            logs = buttons.addButton("Show &log folder", QDialogButtonBox.ButtonRole.ActionRole)
            logs.setAccessibleName("Open the log folder")
            logs.setAutoDefault(False)
            logs.clicked.connect(lambda: QDesktopServices.openUrl(QUrl.fromLocalFile(str(folder))))

        layout = QVBoxLayout(self)
        layout.addLayout(top)
        layout.addWidget(self._details_view, 1)
        layout.addWidget(buttons)

    def clipboard_text(self) -> str:
        return f"{self._message}\n\n{self._details}".rstrip() + "\n"

    def copy_details(self) -> None:
        QGuiApplication.clipboard().setText(self.clipboard_text())
        self.copy_button.setText("Copied")

    def _show_details(self, shown: bool) -> None:
        self._details_view.setVisible(shown)
        self.adjustSize()


def show_error(
    parent: QWidget | None, title: str, message: str, details: str = "", *, log_dir: str | Path | None = None
) -> ErrorDialog:
    """Show an error without blocking (open(), not exec()): the GUI thread keeps running."""
    dialog = ErrorDialog(parent, title, message, details, log_dir=log_dir)
    if parent is None:
        _OPEN.add(dialog)
        dialog.finished.connect(lambda _result: _OPEN.discard(dialog))
    dialog.open()
    return dialog
