"""The model picker and the error dialog, offscreen: what a user sees before loading, and after a failure."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from PySide6.QtCore import QEvent, QMimeData, QPoint, QPointF, Qt, QThreadPool, QUrl
from PySide6.QtGui import QDragEnterEvent, QDropEvent, QGuiApplication
from PySide6.QtTest import QTest
from PySide6.QtWidgets import (
    QApplication,
    QDialog,
    QFileDialog,
    QLabel,
    QLineEdit,
    QListWidget,
    QMessageBox,
    QPushButton,
)
from pytestqt.qtbot import QtBot

from app import model_inspector
from app.theme import apply_theme
from app.views.error_dialog import ErrorDialog, show_error
from app.views.model_dialog import ModelPickerDialog
from app.views.model_facts import verdict_text
from engine.api import format_bytes, format_params
from engine.gguf import ModelInfo, estimate_memory, inspect_model
from tests.fixtures import builders as b

GIB = 1 << 30
WAIT_MS = 20_000


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One file per MTP state, the split pair, and a file that is not a GGUF at all."""
    folder = tmp_path_factory.mktemp("dialog-models")
    o = b.oracle()
    text = folder / "notes.gguf"
    text.write_text("these are not the weights you are looking for\n")
    return {
        "embedded": b.build(folder / "embedded.gguf", o),
        "absent": b.build(folder / "absent.gguf", o, mtp=False),
        "none": b.build(folder / "noheads.gguf", o, declare_mtp=False),
        "mtp_only": b.build(folder / "heads-only.gguf", o, trunk=False),
        "text": text,
    }


@pytest.fixture
def free_memory(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """Free memory as the dialog sees it; a big amount unless a test says otherwise."""
    amount = [64 * GIB]
    monkeypatch.setattr(model_inspector, "free_memory_bytes", lambda: amount[0])
    yield amount


@pytest.fixture
def dialog(qtbot: QtBot, free_memory: list[int]) -> Iterator[ModelPickerDialog]:
    d = ModelPickerDialog([], n_ctx=4096)
    qtbot.addWidget(d)
    yield d
    QThreadPool.globalInstance().waitForDone()  # no inspection outlives its test


def inspect(qtbot: QtBot, d: ModelPickerDialog, path: Path | str, mtp: Path | str = "") -> ModelInfo | str:
    if mtp:
        d.set_mtp_path(str(mtp))  # without a model path this only records the file
    with qtbot.waitSignal(d.sig_inspected, timeout=WAIT_MS) as blocker:
        d.set_path(str(path))
    result: ModelInfo | str = blocker.args[0]
    return result


def field(d: QDialog, name: str) -> str:
    """A value as a screen reader hears it: labels are named "<field>: <value>"."""
    prefix = f"{name}: "
    found = [w.text() for w in d.findChildren(QLabel) if w.accessibleName().startswith(prefix)]
    assert len(found) == 1, f"no single {name!r} field"
    return found[0]


def load_button(d: QDialog) -> QPushButton:
    return next(w for w in d.findChildren(QPushButton) if w.accessibleName() == "Load the model")


# --- what the file is ---


@pytest.mark.parametrize(
    ("state", "expected"),
    [
        ("embedded", "3 heads, in this file"),
        ("absent", "3 heads declared, weights missing: runs without MTP"),
        ("none", "none: plain decoding"),
    ],
)
def test_mtp_heads_state(
    qtbot: QtBot, dialog: ModelPickerDialog, models: dict[str, Path], state: str, expected: str
) -> None:
    info = inspect(qtbot, dialog, models[state])
    assert isinstance(info, ModelInfo)
    assert field(dialog, "MTP heads") == expected
    assert field(dialog, "Architecture") == "step35"
    assert field(dialog, "Parameters") == format_params(info.n_params)
    assert field(dialog, "File size") == format_bytes(info.file_bytes)
    assert field(dialog, "Trained context") == f"{info.context_length:,} tokens"
    assert field(dialog, "Chat template") == "yes"
    assert load_button(dialog).isEnabled()


def test_split_pair_names_the_mtp_file(qtbot: QtBot, free_memory: list[int], tmp_path: Path) -> None:
    o = b.oracle()
    trunk = b.build(tmp_path / "step-trunk.gguf", o, mtp=False)
    heads = b.build(tmp_path / "step-mtp.gguf", o, trunk=False)
    d = ModelPickerDialog([], n_ctx=4096, initial_path=str(trunk), initial_mtp=str(heads))
    qtbot.addWidget(d)
    with qtbot.waitSignal(d.sig_inspected, timeout=WAIT_MS) as blocker:
        pass  # the constructor started the inspection; its result arrives through the event loop
    assert isinstance(blocker.args[0], ModelInfo)
    assert field(d, "MTP heads") == "3 heads, in step-mtp.gguf"
    assert "(MTP file)" in field(d, "File size")
    assert d.selected() == (str(trunk), str(heads))
    # Clearing the MTP file re-inspects: the trunk alone declares heads it does not ship.
    with qtbot.waitSignal(d.sig_inspected, timeout=WAIT_MS):
        d.set_mtp_path("")
    assert field(d, "MTP heads") == "3 heads declared, weights missing: runs without MTP"


def test_embedded_heads_make_a_separate_file_unneeded(
    qtbot: QtBot, dialog: ModelPickerDialog, models: dict[str, Path]
) -> None:
    inspect(qtbot, dialog, models["embedded"], mtp=models["mtp_only"])
    assert field(dialog, "MTP heads") == "3 heads, in this file (the separate MTP file is not needed)"


def test_mtp_only_file_as_model_is_refused_and_can_be_moved(
    qtbot: QtBot, dialog: ModelPickerDialog, models: dict[str, Path]
) -> None:
    error = inspect(qtbot, dialog, models["mtp_only"])
    assert isinstance(error, str)
    assert "MTP-only" in error
    status = field(dialog, "Status")
    assert status == error
    assert not load_button(dialog).isEnabled()
    assert field(dialog, "MTP heads") == "—"

    dialog.show()  # the offer to move the file is only visible on a shown dialog
    move = next(
        w for w in dialog.findChildren(QPushButton) if w.accessibleName() == "Use this file as the MTP heads file"
    )
    assert move.isVisible()
    QTest.mouseClick(move, Qt.MouseButton.LeftButton)
    assert dialog.selected() == ("", str(models["mtp_only"]))
    assert not move.isVisible()
    assert not load_button(dialog).isEnabled()  # still no model to load


def test_not_a_gguf_shows_the_problem(qtbot: QtBot, dialog: ModelPickerDialog, models: dict[str, Path]) -> None:
    error = inspect(qtbot, dialog, models["text"])
    assert isinstance(error, str)
    assert "notes.gguf" in error
    assert field(dialog, "Status") == error
    assert not load_button(dialog).isEnabled()


def test_missing_file_shows_the_problem(qtbot: QtBot, dialog: ModelPickerDialog, tmp_path: Path) -> None:
    error = inspect(qtbot, dialog, tmp_path / "gone.gguf")
    assert error == "gone.gguf does not exist; check the path"
    assert not load_button(dialog).isEnabled()


def test_demo_button(qtbot: QtBot, dialog: ModelPickerDialog) -> None:
    demo = next(w for w in dialog.findChildren(QPushButton) if w.accessibleName() == "Use the built-in demo model")
    with qtbot.waitSignal(dialog.sig_inspected, timeout=60_000) as blocker:
        QTest.mouseClick(demo, Qt.MouseButton.LeftButton)
    assert isinstance(blocker.args[0], ModelInfo)
    assert field(dialog, "Name").startswith("Stride demo")
    assert field(dialog, "MTP heads") == "3 heads, in this file"
    assert dialog.selected() == ("demo", "")


def test_demo_that_cannot_be_created_says_why(
    qtbot: QtBot, dialog: ModelPickerDialog, monkeypatch: pytest.MonkeyPatch
) -> None:
    def read_only() -> Path:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(model_inspector, "ensure_demo_model", read_only)
    error = inspect(qtbot, dialog, "demo")
    assert error == (
        "The demo model could not be created (Permission denied); "
        "check that the user data folder is writable and has 50 MB free"
    )
    assert not load_button(dialog).isEnabled()


def test_typed_path_is_inspected_on_enter_not_loaded(
    qtbot: QtBot, dialog: ModelPickerDialog, models: dict[str, Path]
) -> None:
    dialog.show()
    edit = next(w for w in dialog.findChildren(QLineEdit) if w.accessibleName() == "Model file path")
    edit.setFocus()
    QTest.keyClicks(edit, f'"{models["none"]}"')  # pasted with quotes, as "Copy as path" gives it
    with qtbot.waitSignal(dialog.sig_inspected, timeout=WAIT_MS):
        QTest.keyClick(edit, Qt.Key.Key_Return)
    assert dialog.isVisible()  # Enter chose the file; Load stays a separate decision
    assert dialog.selected() == (str(models["none"]), "")
    assert field(dialog, "MTP heads") == "none: plain decoding"


def test_browse_offers_gguf_files(
    qtbot: QtBot, dialog: ModelPickerDialog, models: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    asked: list[str] = []

    def choose(_parent: object, _caption: str, _folder: str, name_filter: str) -> tuple[list[str], str]:
        asked.append(name_filter)
        return [str(models["absent"])], name_filter

    monkeypatch.setattr(QFileDialog, "getOpenFileNames", choose)  # several: the parts of a split model
    browse = next(w for w in dialog.findChildren(QPushButton) if w.accessibleName() == "Browse for a model file")
    with qtbot.waitSignal(dialog.sig_inspected, timeout=WAIT_MS):
        QTest.mouseClick(browse, Qt.MouseButton.LeftButton)
    assert asked == ["GGUF models (*.gguf)"]
    assert dialog.selected() == (str(models["absent"]), "")


def test_recent_models_mark_missing_files(qtbot: QtBot, free_memory: list[int], models: dict[str, Path]) -> None:
    gone = str(models["embedded"].with_name("deleted.gguf"))
    d = ModelPickerDialog([str(models["none"]), gone, "demo"], n_ctx=4096)
    qtbot.addWidget(d)
    recent = d.findChild(QListWidget)
    assert recent is not None and recent.accessibleName() == "Recent models"
    assert recent.item(1).text() == f"{gone} (missing)"
    assert not recent.item(1).flags() & Qt.ItemFlag.ItemIsEnabled
    assert recent.item(2).text() == "Built-in demo model"
    with qtbot.waitSignal(d.sig_inspected, timeout=WAIT_MS):
        recent.setCurrentRow(0)
    assert d.selected() == (str(models["none"]), "")
    assert field(d, "MTP heads") == "none: plain decoding"


# --- whether it fits ---


def test_fits_loads_without_asking(
    qtbot: QtBot, dialog: ModelPickerDialog, models: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    inspect(qtbot, dialog, models["embedded"])
    memory = field(dialog, "Memory")
    assert memory.startswith("Fits: needs ")
    assert memory.endswith(" of 64.0 GiB free")
    assert field(dialog, "Memory estimate").startswith("For 4,096 tokens of context: weights ")

    def never(*_args: object) -> QMessageBox.StandardButton:
        raise AssertionError("a model that fits must load without a question")

    monkeypatch.setattr(QMessageBox, "question", never)
    dialog.show()
    QTest.mouseClick(load_button(dialog), Qt.MouseButton.LeftButton)
    assert dialog.result() == QDialog.DialogCode.Accepted
    assert dialog.selected() == (str(models["embedded"]), "")


def test_wont_fit_asks_before_loading(
    qtbot: QtBot,
    dialog: ModelPickerDialog,
    models: dict[str, Path],
    free_memory: list[int],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    free_memory[0] = 1 << 20
    inspect(qtbot, dialog, models["embedded"])
    assert field(dialog, "Memory").startswith("Won't fit: needs ")
    assert "of 1.0 MiB free; choose a smaller quantization or context" in field(dialog, "Memory")
    assert load_button(dialog).isEnabled()  # the user may know better; they are asked first

    asked: list[str] = []
    answer = [QMessageBox.StandardButton.No]

    def question(_parent: object, title: str, *_args: object) -> QMessageBox.StandardButton:
        asked.append(title)
        return answer[0]

    monkeypatch.setattr(QMessageBox, "question", question)
    dialog.show()
    QTest.mouseClick(load_button(dialog), Qt.MouseButton.LeftButton)
    assert asked == ["Load anyway?"]
    assert dialog.isVisible() and dialog.result() != QDialog.DialogCode.Accepted

    answer[0] = QMessageBox.StandardButton.Yes
    QTest.mouseClick(load_button(dialog), Qt.MouseButton.LeftButton)
    assert asked == ["Load anyway?", "Load anyway?"]
    assert dialog.result() == QDialog.DialogCode.Accepted


def test_tight_says_to_close_programs(
    qtbot: QtBot, dialog: ModelPickerDialog, models: dict[str, Path], free_memory: list[int]
) -> None:
    info = inspect(qtbot, dialog, models["embedded"])
    assert isinstance(info, ModelInfo)
    needed = estimate_memory(info, 4096).total
    free_memory[0] = int(needed / 0.9)
    inspect(qtbot, dialog, models["embedded"])
    assert field(dialog, "Memory").startswith("Tight: needs ")
    assert "close other programs first" in field(dialog, "Memory")


def test_memory_is_estimated_for_the_context_the_runtime_creates(
    qtbot: QtBot, free_memory: list[int], models: dict[str, Path]
) -> None:
    """The runtime caps the context at the trained size (0 means that size): so does the estimate."""
    for asked in (1_000_000, 0):
        d = ModelPickerDialog([], n_ctx=asked)
        qtbot.addWidget(d)
        info = inspect(qtbot, d, models["embedded"])
        assert isinstance(info, ModelInfo)
        trained = info.context_length
        assert field(d, "Memory estimate").startswith(f"For {trained:,} tokens of context: ")
        needed = estimate_memory(info, trained).total
        assert field(d, "Memory") == verdict_text("fits", needed, free_memory[0])


def test_verdict_texts() -> None:
    assert verdict_text("fits", int(4.1 * GIB), int(22.3 * GIB)) == "Fits: needs 4.1 GiB of 22.3 GiB free"
    assert verdict_text("wont_fit", 200 * GIB, 64 * GIB) == (
        "Won't fit: needs 200.0 GiB of 64.0 GiB free; choose a smaller quantization or context"
    )
    assert verdict_text("tight", GIB, 0) == "Tight: needs 1.0 GiB; free memory could not be measured"
    assert format_params(196_800_000_000) == "196.8 B"
    assert format_bytes(48 << 20) == "48.0 MiB"


# --- choosing by drag and drop ---


def _drag_enter(d: QDialog, mime: QMimeData) -> QDragEnterEvent:
    event = QDragEnterEvent(  # QPoint: PySide6 6.11 has no QPointF overload (6.12 deprecates this one)
        QPoint(20, 20), Qt.DropAction.CopyAction, mime, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier
    )
    QApplication.sendEvent(d, event)
    return event


def _drop(d: QDialog, mime: QMimeData) -> QDropEvent:
    event = QDropEvent(
        QPointF(20, 20), Qt.DropAction.CopyAction, mime, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier
    )
    QApplication.sendEvent(d, event)
    return event


def test_drop_a_local_file(qtbot: QtBot, dialog: ModelPickerDialog, models: dict[str, Path]) -> None:
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(models["absent"]))])
    assert _drag_enter(dialog, mime).isAccepted()
    with qtbot.waitSignal(dialog.sig_inspected, timeout=WAIT_MS):
        assert _drop(dialog, mime).isAccepted()
    assert dialog.selected() == (str(models["absent"]), "")
    assert field(dialog, "MTP heads") == "3 heads declared, weights missing: runs without MTP"


@pytest.mark.parametrize(
    "urls", [["https://example.com/model.gguf"], ["file:///a.gguf", "https://b.example/b.gguf"], []]
)
def test_drop_of_anything_else_is_refused_with_a_hint(dialog: ModelPickerDialog, urls: list[str]) -> None:
    mime = QMimeData()
    if urls:
        mime.setUrls([QUrl(u) for u in urls])
    else:
        mime.setText("just some text")
    assert not _drag_enter(dialog, mime).isAccepted()
    assert not _drop(dialog, mime).isAccepted()
    assert field(dialog, "Status") == (
        "Drop a model file from this computer (a .gguf file, or all the parts of a split model)."
    )
    assert dialog.selected() == ("", "")


# --- stale results ---


def test_stale_results_are_ignored(
    qtbot: QtBot, dialog: ModelPickerDialog, models: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A slow read of file A finishes after the user moved on: its answer must not show, and a
    read still waiting for a thread (B) when a newer one (C) was asked for is never started."""
    slow, superseded, latest = models["embedded"], models["absent"], models["none"]
    started, release = threading.Event(), threading.Event()
    calls: list[Path] = []

    def gated(path: Path, mtp_path: Path | None = None) -> ModelInfo:
        calls.append(path)
        if path == slow:
            started.set()
            release.wait(WAIT_MS / 1000)
        return inspect_model(path, mtp_path)

    monkeypatch.setattr(model_inspector, "inspect_model", gated)
    pool = QThreadPool.globalInstance()
    threads = pool.maxThreadCount()
    pool.setMaxThreadCount(1)  # B and C queue behind A
    try:
        emitted: list[object] = []
        dialog.sig_inspected.connect(emitted.append)
        dialog.set_path(str(slow))
        qtbot.waitUntil(started.is_set, timeout=WAIT_MS)
        dialog.set_path(str(superseded))
        dialog.set_path(str(latest))
        with qtbot.waitSignal(dialog.sig_inspected, timeout=WAIT_MS):
            release.set()
        pool.waitForDone()
        QApplication.processEvents()  # deliver anything A's task still had queued
    finally:
        release.set()
        pool.waitForDone()
        pool.setMaxThreadCount(threads)
    assert calls == [slow, latest]
    assert len(emitted) == 1 and isinstance(emitted[0], ModelInfo) and emitted[0].path == latest
    assert field(dialog, "MTP heads") == "none: plain decoding"


def test_closing_the_dialog_mid_read_is_safe(
    qtbot: QtBot, free_memory: list[int], models: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    started, release = threading.Event(), threading.Event()

    def gated(path: Path, mtp_path: Path | None = None) -> ModelInfo:
        started.set()
        release.wait(WAIT_MS / 1000)
        return inspect_model(path, mtp_path)

    monkeypatch.setattr(model_inspector, "inspect_model", gated)
    d = ModelPickerDialog([], n_ctx=4096, initial_path=str(models["embedded"]))
    qtbot.waitUntil(started.is_set, timeout=WAIT_MS)
    destroyed: list[bool] = []
    d.destroyed.connect(lambda: destroyed.append(True))
    d.deleteLater()
    QApplication.sendPostedEvents(None, QEvent.Type.DeferredDelete)
    assert destroyed
    release.set()
    QThreadPool.globalInstance().waitForDone()
    QApplication.processEvents()  # the late result finds no dialog, and nothing breaks


# --- the error dialog ---


def test_error_dialog_copies_message_and_details(qtbot: QtBot) -> None:
    message = "big.gguf is truncated: tensor data ends at byte 9,000 but the file has 4,000 bytes; download it again"
    details = 'Traceback (most recent call last):\n  File "engine/runtime.py", line 1\nModelFileError: truncated'
    returned = show_error(None, "Could not load the model", message, details)  # returns at once: open(), not exec()
    shown = [w for w in QApplication.topLevelWidgets() if isinstance(w, ErrorDialog) and w.isVisible()]
    assert shown == [returned]
    dialog = shown[0]
    qtbot.addWidget(dialog)
    assert dialog.windowTitle() == "Could not load the model"
    copy = next(w for w in dialog.findChildren(QPushButton) if w.text() == "&Copy details")
    QTest.mouseClick(copy, Qt.MouseButton.LeftButton)
    assert QGuiApplication.clipboard().text() == f"{message}\n\n{details}\n"
    assert dialog.isVisible()  # copying leaves the dialog open
    assert copy.text() == "Copied"
    dialog.close()


def test_error_dialog_offers_the_log_folder(qtbot: QtBot, tmp_path: Path) -> None:
    dialog = ErrorDialog(
        None, "Load failed", "x.gguf cannot be read (permission denied); check the file's permissions", log_dir=tmp_path
    )
    qtbot.addWidget(dialog)
    names = {w.accessibleName() for w in dialog.findChildren(QPushButton)}
    assert "Open the log folder" in names
    assert "Show or hide the details" not in names  # no details, nothing to show


# --- screenshot for the docs ---


def test_screenshot_model_info(qtbot: QtBot, free_memory: list[int], screenshot_dir: Path) -> None:
    app = QApplication.instance()
    assert isinstance(app, QApplication)
    apply_theme(app, "light")
    try:
        free_memory[0] = 24 * GIB
        dialog = ModelPickerDialog(["/models/Step-3.7-Flash-Q4_K_M.gguf", "demo"], n_ctx=8192)
        qtbot.addWidget(dialog)
        dialog.show()
        with qtbot.waitSignal(dialog.sig_inspected, timeout=60_000):
            dialog.set_path("demo")
        assert field(dialog, "Memory").startswith("Fits: ")
        QApplication.processEvents()  # the relayout for the new texts is a posted event
        screenshot_dir.mkdir(parents=True, exist_ok=True)
        assert dialog.grab().save(str(screenshot_dir / "model-info.png"))
    finally:
        apply_theme(app, "light")
