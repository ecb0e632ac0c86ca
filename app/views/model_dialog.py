"""The model picker: choose a GGUF (and an optional MTP heads file) and see, before loading,
what it is and whether it fits in this machine's free memory (the ModelInspector it is given
reads that off the GUI thread).

A model may be one file or a multi-part set (`NAME-00001-of-0000N.gguf` ...): any part, or
several parts picked or dropped together, shows the whole set, and a vision projector
(mmproj) beside it is named.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path

from PySide6.QtCore import QSignalBlocker, Qt, Signal, Slot
from PySide6.QtGui import QDragEnterEvent, QDropEvent, QPalette
from PySide6.QtWidgets import (
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QFormLayout,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLayout,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QMessageBox,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from app.engine_calls import (
    memory_verdict,
)
from app.model_files import (
    ModelChoice,
    choice_of,
    part_count,
    set_key,
    without_projectors,
)
from app.model_inspector import Inspection, ModelInspector, context_size
from app.views.elide import show_paths
from app.views.model_facts import mtp_text, parts_note, size_text, verdict_text, vision_text
from engine.api import DEMO_NAME, format_bytes, format_params

GGUF_FILTER = "GGUF models (*.gguf)"
_DASH = "—"
_MEMORY = "Memory"
_MEMORY_DETAIL = "Memory estimate"
_VISION = "Vision file"
_QUOTED = re.compile(r'"([^"]+)"')
# (light theme, dark theme): the verdict colours must stay readable on both palettes.
_TONES: dict[str, tuple[str, str]] = {
    "fits": ("#1b7a34", "#5cc97a"),
    "tight": ("#9a5b00", "#f0b54a"),
    "wont_fit": ("#c0261f", "#ff7b72"),
    "error": ("#c0261f", "#ff7b72"),
}


# --- the dialog ---


class ModelPickerDialog(QDialog):
    """Choose a model; shows what it is and whether it fits. Emits; the controller loads."""

    sig_inspected = Signal(object)
    """ModelInfo, or the error message (str); only for the latest request"""

    _FIELDS = (
        "Architecture",
        "Name",
        "Parameters",
        "File size",
        "Quantization",
        "Trained context",
        "MTP heads",
        "Chat template",
    )

    def __init__(
        self,
        recent: Sequence[str],
        n_ctx: int,
        parent: QWidget | None = None,
        *,
        initial_path: str = "",
        initial_mtp: str = "",
        inspector: ModelInspector | None = None,
    ) -> None:
        """inspector: the controller's; alone (tests, a tool), the dialog makes its own."""
        super().__init__(parent)
        self.setWindowTitle("Open a model")
        self.setAcceptDrops(True)
        self.resize(600, 580)
        self._n_ctx = n_ctx
        self._paths: tuple[str, ...] = ()  # the file(s) the user chose: one, or parts picked together
        self._mtp_paths: tuple[str, ...] = ()
        self._inspector = inspector or ModelInspector(self)
        self._inspector.sig_inspected.connect(self._on_inspected)
        self._request = 0  # the inspection on show is this one's; 0: none asked
        self._outcome: Inspection | None = None  # of the current request, once it arrived

        intro = QLabel("Choose a GGUF model file, or drop one here. For a split model, any part will do.")
        intro.setWordWrap(True)

        self._path_edit = QLineEdit()
        self._path_edit.setPlaceholderText("Path to a .gguf file (any part of a split model)")
        self._path_edit.setAccessibleName("Model file path")
        self._path_edit.setAcceptDrops(False)  # a drop anywhere goes to the dialog, not into the text
        self._path_edit.editingFinished.connect(self._on_path_edited)
        browse = QPushButton("&Browse…")
        browse.setAccessibleName("Browse for a model file")
        browse.clicked.connect(self._browse_model)

        self._mtp_edit = QLineEdit()
        self._mtp_edit.setPlaceholderText("For a model shipped as two files")
        self._mtp_edit.setAccessibleName("MTP heads file path")
        self._mtp_edit.setAcceptDrops(False)
        self._mtp_edit.editingFinished.connect(self._on_mtp_edited)
        mtp_browse = QPushButton("B&rowse…")
        mtp_browse.setAccessibleName("Browse for an MTP heads file")
        mtp_browse.clicked.connect(self._browse_mtp)
        mtp_clear = QPushButton("Cl&ear")
        mtp_clear.setAccessibleName("Clear the MTP heads file")
        mtp_clear.clicked.connect(lambda: self.set_mtp_path(""))
        # Created after the file rows so that Tab visits the controls in the order they appear.
        demo = QPushButton("Use the built-in &demo model")
        demo.setAccessibleName("Use the built-in demo model")
        demo.setToolTip("A tiny model generated on this machine: no download, works offline")
        demo.clicked.connect(lambda: self.set_path(DEMO_NAME))

        files = QGridLayout()
        model_label = QLabel("&Model file")
        model_label.setBuddy(self._path_edit)
        mtp_label = QLabel("M&TP heads file (optional)")
        mtp_label.setBuddy(self._mtp_edit)
        files.addWidget(model_label, 0, 0)
        files.addWidget(self._path_edit, 0, 1)
        files.addWidget(browse, 0, 2, 1, 2)
        files.addWidget(mtp_label, 1, 0)
        files.addWidget(self._mtp_edit, 1, 1)
        files.addWidget(mtp_browse, 1, 2)
        files.addWidget(mtp_clear, 1, 3)
        files.setColumnStretch(1, 1)

        recent_label = QLabel("Re&cent models")
        self._recent = QListWidget()
        self._recent.setAccessibleName("Recent models")
        show_paths(self._recent)  # the file's name stays in view however deep its folder
        self._recent.setMaximumHeight(self.fontMetrics().height() * 5)
        recent_label.setBuddy(self._recent)
        self._fill_recent(recent)
        self._recent.currentItemChanged.connect(self._on_recent_chosen)
        recent_label.setVisible(bool(recent))
        self._recent.setVisible(bool(recent))

        self._values: dict[str, QLabel] = {}
        form = QFormLayout()
        form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
        for field in self._FIELDS:
            form.addRow(f"{field}:", self._value_label(field))
        # Shown only when a projector sits beside the model: most models have none, and say nothing of it.
        form.addRow(f"{_VISION}:", self._value_label(_VISION))
        self._form = form
        # The verdict gets the full width below the facts: it is the line that decides, and it wraps.
        verdict = self._value_label(_MEMORY)
        detail = self._value_label(_MEMORY_DETAIL)
        detail.setStyleSheet("color: palette(placeholder-text);")
        info = QVBoxLayout()
        info.addLayout(form)
        info.addSpacing(6)
        info.addWidget(verdict)
        info.addWidget(detail)
        info_box = QGroupBox("About this model")
        info_box.setLayout(info)

        self._status = QLabel()
        self._status.setWordWrap(True)
        self._status.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self._status.setAccessibleName("Status")
        self._use_as_mtp = QPushButton("&Use it as the MTP heads file")
        self._use_as_mtp.setAccessibleName("Use this file as the MTP heads file")
        self._use_as_mtp.clicked.connect(self._move_to_mtp)
        self._use_as_mtp.hide()
        status_row = QHBoxLayout()
        status_row.addWidget(self._status, 1)
        status_row.addWidget(self._use_as_mtp, 0, Qt.AlignmentFlag.AlignTop)

        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Cancel)
        self._load = buttons.addButton("&Load", QDialogButtonBox.ButtonRole.AcceptRole)
        self._load.setAccessibleName("Load the model")
        buttons.button(QDialogButtonBox.StandardButton.Cancel).setAccessibleName("Cancel")
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)

        layout = QVBoxLayout(self)
        # Grow rather than squeeze the facts when a long name wraps (a set's note, a projector's row).
        layout.setSizeConstraint(QLayout.SizeConstraint.SetMinimumSize)
        layout.addWidget(intro)
        layout.addLayout(files)
        recent_row = QHBoxLayout()
        recent_row.addWidget(recent_label, 0, Qt.AlignmentFlag.AlignBottom)
        recent_row.addStretch(1)
        recent_row.addWidget(demo)
        layout.addLayout(recent_row)
        layout.addWidget(self._recent)
        layout.addWidget(info_box)
        layout.addLayout(status_row)
        layout.addStretch(1)
        layout.addWidget(buttons)
        # Only now that the button is inside the dialog does setDefault reach the dialog; before,
        # showing it would make the first auto-default button (Cancel) the one Enter presses.
        self._load.setDefault(True)

        # In a dialog every button is an "auto default" that Enter may press; here Enter means Load
        # (or, in a path field, "read this path"), never a file browser opening by surprise.
        for button in (browse, mtp_browse, mtp_clear, demo, self._use_as_mtp):
            button.setAutoDefault(False)

        self.set_mtp_path(initial_mtp)
        self.set_path(initial_path)

    def _value_label(self, field: str) -> QLabel:
        label = QLabel()
        label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        label.setWordWrap(True)
        self._values[field] = label
        self._set_value(field, _DASH if field in self._FIELDS else "")
        return label

    # --- API ---

    def selected(self) -> tuple[ModelChoice, ModelChoice]:
        """(model, MTP heads file): what to load and remember. Each is a path ("" none, "demo" the
        built-in model); once read, a set opened from one part is its part 1, and parts picked
        together are a tuple of all parts in order."""
        outcome = self._outcome
        info = outcome.info if outcome else None
        model, mtp = choice_of(self._paths), choice_of(self._mtp_paths)
        if info is None or model == DEMO_NAME:
            return model, mtp
        if info.n_parts > 1:
            model = str(info.path) if len(self._paths) == 1 else tuple(str(p) for p in info.parts)
        if info.mtp_path is not None and len(info.mtp_parts) > 1:
            mtp = str(info.mtp_path) if len(self._mtp_paths) == 1 else tuple(str(p) for p in info.mtp_parts)
        return model, mtp

    def selected_projector(self) -> str | None:
        """The vision file to load with the model: the paired mmproj found beside it, else None (keep
        what Settings name for this model)."""
        outcome = self._outcome
        if outcome is None or outcome.projector is None or not outcome.projector_bytes:
            return None
        return str(outcome.projector.path)

    def set_path(self, path: str) -> None:
        self.set_paths([path] if path else [])

    def set_paths(self, paths: Sequence[str]) -> None:
        """One file, or several picked together (parts of one set): they are read as one model."""
        self._paths = tuple(without_projectors(paths))
        self._path_edit.setText(_shown(self._paths))
        self._mark_recent(self._paths)
        self._inspect()

    def set_mtp_path(self, path: str) -> None:
        self.set_mtp_paths([path] if path else [])

    def set_mtp_paths(self, paths: Sequence[str]) -> None:
        self._mtp_paths = tuple(paths)
        self._mtp_edit.setText(_shown(self._mtp_paths))
        if self._paths:
            self._inspect()

    # --- choosing ---

    def _fill_recent(self, recent: Sequence[str]) -> None:
        seen: set[str] = set()
        for path in recent:
            if set_key(path) in seen:
                continue  # a set opened from different parts, kept by older versions: one entry
            seen.add(set_key(path))
            n_parts = part_count(path)
            label = "Built-in demo model" if path == DEMO_NAME else path
            if n_parts > 1:
                label += f" ({n_parts} parts)"
            item = QListWidgetItem(label)
            item.setData(Qt.ItemDataRole.UserRole, path)
            item.setToolTip(path)
            if path != DEMO_NAME and not os.path.exists(path):
                item.setText(f"{label} (missing)")
                item.setFlags(Qt.ItemFlag.NoItemFlags)  # greyed and not selectable
            self._recent.addItem(item)

    def _mark_recent(self, paths: Sequence[str]) -> None:
        """Highlight the recent entry for the chosen file (or its set, from any part) however it was chosen."""
        key = set_key(paths[0]) if paths else None
        entries = [str(self._recent.item(i).data(Qt.ItemDataRole.UserRole)) for i in range(self._recent.count())]
        rows = [i for i, entry in enumerate(entries) if set_key(entry) == key]
        with QSignalBlocker(self._recent):  # this reflects a choice; it must not make one
            self._recent.setCurrentRow(rows[0] if rows else -1)

    @Slot(QListWidgetItem)
    def _on_recent_chosen(self, item: QListWidgetItem | None) -> None:
        if item is None:
            return
        path = str(item.data(Qt.ItemDataRole.UserRole))
        if (path,) != self._paths:
            self.set_path(path)

    def _start_dir(self, current: Sequence[str]) -> str:
        return str(Path(current[0]).parent) if current and current[0] != DEMO_NAME else str(Path.home())

    def _browse_model(self) -> None:
        # Several files may be chosen: all parts of a split model (choosing any one part does as well).
        paths, _ = QFileDialog.getOpenFileNames(self, "Choose a model", self._start_dir(self._paths), GGUF_FILTER)
        if paths:
            self.set_paths(paths)

    def _browse_mtp(self) -> None:
        start = self._start_dir(self._mtp_paths or self._paths)
        paths, _ = QFileDialog.getOpenFileNames(self, "Choose the MTP heads file", start, GGUF_FILTER)
        if paths:
            self.set_mtp_paths(paths)

    @staticmethod
    def _typed_paths(edit: QLineEdit) -> list[str]:
        text = edit.text().strip()
        quoted = _QUOTED.findall(text)
        if len(quoted) > 1 and not _QUOTED.sub("", text).strip():
            paths = quoted  # several parts, quoted as a file dialog writes them
        else:  # pasted paths often come quoted ("Copy as path" on Windows)
            paths = [text.strip('"').strip("'")] if text else []
        return [os.path.expanduser(p) for p in paths if p]

    def _on_path_edited(self) -> None:
        paths = self._typed_paths(self._path_edit)
        if tuple(paths) != self._paths:
            self.set_paths(paths)

    def _on_mtp_edited(self) -> None:
        paths = self._typed_paths(self._mtp_edit)
        if tuple(paths) != self._mtp_paths:
            self.set_mtp_paths(paths)

    def _move_to_mtp(self) -> None:
        # An MTP-only file opened as the model: keep it as the heads file, then ask for the trunk.
        paths = self._paths
        self._paths = ()
        self._path_edit.clear()
        self.set_mtp_paths(paths)
        self._inspect()
        self._path_edit.setFocus()

    @staticmethod
    def _dropped_files(event: QDragEnterEvent | QDropEvent) -> list[str] | None:
        """The local files dropped (several: the parts of one model), or None if anything else came."""
        urls = event.mimeData().urls() if event.mimeData().hasUrls() else []
        if not urls or not all(url.isLocalFile() for url in urls):
            return None
        return [url.toLocalFile() for url in urls]

    def _reject_drop(self, event: QDragEnterEvent | QDropEvent) -> None:
        event.ignore()
        self._show_status(
            "Drop a model file from this computer (a .gguf file, or all the parts of a split model).", "error"
        )

    def dragEnterEvent(self, event: QDragEnterEvent) -> None:
        if self._dropped_files(event) is None:
            self._reject_drop(event)
        else:
            event.acceptProposedAction()

    def dropEvent(self, event: QDropEvent) -> None:
        paths = self._dropped_files(event)
        if paths is None:
            self._reject_drop(event)
            return
        event.acceptProposedAction()
        self.set_paths(paths)

    # --- inspecting ---

    def _inspect(self) -> None:
        self._request = 0  # an answer still coming for the previous choice must not show
        self._outcome = None
        self._clear_values()
        self._use_as_mtp.hide()
        self._load.setEnabled(False)  # until the current file is known to be loadable
        if not self._paths:
            self._show_status("Choose a model file to see what it is and whether it fits.", None)
            return
        if self._paths == (DEMO_NAME,):
            what = "Preparing the demo model…"
        else:
            more = len(self._paths) - 1
            what = f"Reading {Path(self._paths[0]).name}" + (f" and {more} more" if more else "") + "…"
        self._show_status(what, None)
        model, mtp = choice_of(self._paths), choice_of(self._mtp_paths)
        self._request = self._inspector.inspect(model, mtp, self._n_ctx)

    @Slot(object)
    def _on_inspected(self, outcome: Inspection) -> None:
        if outcome.request != self._request:
            return  # the user picked another file meanwhile
        self._outcome = outcome
        if outcome.info is None or outcome.estimate is None:
            self._show_status(outcome.error, "error")
            self._use_as_mtp.setVisible(outcome.kind == "mtp_only")
            self.sig_inspected.emit(outcome.error)
            return
        self._show_info(outcome)
        self._show_status(parts_note(outcome.info, len(self._paths)), None)
        self._load.setEnabled(True)
        self.sig_inspected.emit(outcome.info)

    def _show_info(self, outcome: Inspection) -> None:
        info, estimate, free, projector = outcome.info, outcome.estimate, outcome.free, outcome.projector
        assert info is not None and estimate is not None
        needed = estimate.total + outcome.projector_bytes
        size = size_text(info.file_bytes, info.n_parts)
        if info.mtp_file_bytes is not None:
            size += f" + {size_text(info.mtp_file_bytes, len(info.mtp_parts))} (MTP file)"
        n_ctx = context_size(self._n_ctx, info)
        verdict = memory_verdict(needed, free)
        self._set_value("Architecture", info.architecture)
        self._set_value("Name", info.name or _DASH)
        self._set_value("Parameters", format_params(info.n_params))
        self._set_value("File size", size)
        self._set_value("Quantization", info.quantization)
        self._set_value("Trained context", f"{info.context_length:,} tokens")
        self._set_value("MTP heads", mtp_text(info, _shown(self._mtp_paths)))
        self._set_value("Chat template", "yes" if info.has_chat_template else "no: ChatML is used instead")
        self._set_value(_VISION, vision_text(projector, info) if projector else "")
        self._form.setRowVisible(self._values[_VISION], projector is not None)
        self._set_value(_MEMORY, verdict_text(verdict, needed, free))
        self._values[_MEMORY].setStyleSheet(f"color: {self._tone(verdict)}; font-weight: 600;")
        parts = [
            f"weights {format_bytes(estimate.weights)}",
            f"KV cache {format_bytes(estimate.kv_cache)}",
            f"compute {format_bytes(estimate.compute)}",
        ]
        if estimate.mtp_context:
            parts.append(f"MTP drafting {format_bytes(estimate.mtp_context)}")
        if outcome.projector_bytes:
            parts.append(f"vision {format_bytes(outcome.projector_bytes)}")
        self._set_value(_MEMORY_DETAIL, f"For {n_ctx:,} tokens of context: " + ", ".join(parts))

    def _clear_values(self) -> None:
        for field in self._FIELDS:
            self._set_value(field, _DASH)
        self._set_value(_MEMORY, "")
        self._set_value(_MEMORY_DETAIL, "")
        self._set_value(_VISION, "")
        self._form.setRowVisible(self._values[_VISION], False)

    def _set_value(self, field: str, text: str) -> None:
        label = self._values[field]
        label.setText(text)
        label.setAccessibleName(f"{field}: {text}")  # a screen reader reads the name, not the text

    def _tone(self, verdict: str) -> str:
        dark = self.palette().color(QPalette.ColorRole.Window).lightness() < 128
        return _TONES[verdict][dark]

    def _show_status(self, text: str, tone: str | None) -> None:
        self._status.setText(text)
        self._status.setAccessibleName(f"Status: {text}")
        colour = self._tone(tone) if tone else self.palette().color(QPalette.ColorRole.PlaceholderText).name()
        self._status.setStyleSheet(f"color: {colour};")

    # --- accepting ---

    def accept(self) -> None:
        outcome = self._outcome
        if outcome is None or outcome.info is None or outcome.estimate is None:
            return  # called before the file was read, or after an error: Load is disabled then
        needed, free = outcome.estimate.total + outcome.projector_bytes, outcome.free
        if memory_verdict(needed, free) == "wont_fit" and not confirm_too_big(self, needed, free):
            return
        super().accept()


def _shown(paths: Sequence[str]) -> str:
    """The chosen file(s) as the path field shows them: several quoted, as a file dialog writes them."""
    return paths[0] if len(paths) == 1 else " ".join(f'"{p}"' for p in paths)


def confirm_too_big(parent: QWidget | None, needed: int, free: int) -> bool:
    """Ask before loading a model whose estimate exceeds free memory; No is the default."""
    answer = QMessageBox.question(
        parent,
        "Load anyway?",
        f"This model needs about {format_bytes(needed)} but only "
        f"{format_bytes(free)} of memory is free. Loading it may make the computer swap heavily, "
        "or the system may stop Stride.\n\nLoad anyway?",
        QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No,
        QMessageBox.StandardButton.No,
    )
    return answer == QMessageBox.StandardButton.Yes
