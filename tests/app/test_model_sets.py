"""Real Step Flash files in the window: multi-part sets opened from any part, picked or dropped
together, remembered as one, refused clearly when broken; and the vision projector beside them."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest
from PySide6.QtCore import QMimeData, Qt, QThreadPool, QUrl
from PySide6.QtTest import QTest
from PySide6.QtWidgets import QApplication, QFileDialog, QLabel, QLineEdit, QListWidget, QPushButton
from pytestqt.qtbot import QtBot

from app import main as app_main
from app import model_inspector
from app import settings as app_settings
from app.controller import ChatController
from app.model_files import recent_with, remembered
from app.theme import apply_theme
from app.views import model_dialog
from app.views.model_dialog import ModelPickerDialog
from engine import runtime
from engine.api import format_bytes, format_params
from engine.gguf import ModelInfo, inspect_model
from engine.gguf.reader import read_gguf
from engine.qt_worker import LoadedModel
from tests.app.conftest import AppHarness
from tests.app.test_dialogs import _drag_enter, _drop, field, load_button
from tests.app.test_reliability import open_errors
from tests.fixtures import builders
from tests.fixtures.parts import split_file
from tests.fixtures.projector import header_only_projector

GIB = 1 << 30
WAIT_MS = 20_000
LOAD_MS = 60_000
NAME = "Step-3.7-Flash-Q4_K_M"


def make_set(source: Path, folder: Path, n: int = 3, prefix: str = NAME) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    return split_file(source, folder, n, prefix=prefix)


@pytest.fixture
def parts(live_gguf: Path, tmp_path: Path) -> list[Path]:
    """The live fixture (3 MTP heads, the last layers) as a 3-part set: the heads land in part 3."""
    made = make_set(live_gguf, tmp_path / "model")
    assert any("nextn" in t.name for t in read_gguf(made[-1]).tensors)
    assert not any("nextn" in t.name for t in read_gguf(made[0]).tensors)
    return made


@pytest.fixture
def free_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(model_inspector, "free_memory_bytes", lambda: 64 * GIB)


@pytest.fixture
def inspections(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """What each of the picker's reads was given: one file, or a list of parts."""
    calls: list[object] = []

    def counted(paths: object, mtp_paths: object = None) -> ModelInfo:
        calls.append(paths)
        return inspect_model(paths, mtp_paths)  # type: ignore[arg-type]

    monkeypatch.setattr(model_inspector, "inspect_model", counted)
    return calls


@pytest.fixture
def picker(qtbot: QtBot, free_memory: None) -> Iterator[Callable[..., ModelPickerDialog]]:
    def _make(recent: Sequence[str] = ()) -> ModelPickerDialog:
        d = ModelPickerDialog(list(recent), n_ctx=2048)
        qtbot.addWidget(d)
        return d

    yield _make
    QThreadPool.globalInstance().waitForDone()


@pytest.fixture
def loads(monkeypatch: pytest.MonkeyPatch) -> list[tuple[Path, ...]]:
    """The parts of every model llama.cpp is asked to load."""
    calls: list[tuple[Path, ...]] = []
    original = runtime._load_model

    def recording(parts: Sequence[Path], *args: object) -> object:
        calls.append(tuple(parts))
        return original(parts, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(runtime, "_load_model", recording)
    return calls


def read(qtbot: QtBot, d: ModelPickerDialog, *paths: Path) -> ModelInfo | str:
    with qtbot.waitSignal(d.sig_inspected, timeout=WAIT_MS) as blocker:
        d.set_paths([str(p) for p in paths])
    result: ModelInfo | str = blocker.args[0]
    return result


def pick_in_file_dialog(monkeypatch: pytest.MonkeyPatch, *paths: Path) -> list[bool]:
    """The user selects these files in the file dialog (Ctrl+A in the model's folder, say)."""
    asked: list[bool] = []

    def choose(*_args: object) -> tuple[list[str], str]:
        asked.append(True)
        return [str(p) for p in paths], model_dialog.GGUF_FILTER

    monkeypatch.setattr(QFileDialog, "getOpenFileNames", choose)
    return asked


def button(d: ModelPickerDialog, name: str) -> QPushButton:
    return next(w for w in d.findChildren(QPushButton) if w.accessibleName() == name)


def set_size(paths: Sequence[Path]) -> str:
    return f"{format_bytes(sum(p.stat().st_size for p in paths))} in {len(paths)} parts"


# --- the picker: any part, several parts, one model ---


def test_any_part_shows_the_whole_set(
    qtbot: QtBot, picker: Callable[..., ModelPickerDialog], parts: list[Path]
) -> None:
    d = picker()
    for no, part in enumerate(parts):
        info = read(qtbot, d, part)
        assert isinstance(info, ModelInfo)
        assert field(d, "File size") == set_size(parts)
        assert field(d, "MTP heads") == "3 heads, in this set"  # in the last part, whichever part was opened
        assert field(d, "Parameters") == format_params(inspect_model(parts[0]).n_params)
        assert load_button(d).isEnabled()
        assert d.selected() == (str(parts[0]), "")  # part 1 is what loads and what is remembered
        if no == 0:
            assert field(d, "Status") == ""
        else:
            assert field(d, "Status") == (
                f"Opened from part {no + 1} of 3: Stride loads the whole set from part 1 ({parts[0].name})."
            )


def test_a_later_part_of_seven_says_so(
    qtbot: QtBot, picker: Callable[..., ModelPickerDialog], live_gguf: Path, tmp_path: Path
) -> None:
    seven = make_set(live_gguf, tmp_path / "seven", 7)
    d = picker()
    read(qtbot, d, seven[2])
    assert field(d, "Status") == (
        f"Opened from part 3 of 7: Stride loads the whole set from part 1 ({NAME}-00001-of-00007.gguf)."
    )
    assert field(d, "File size") == set_size(seven)


def test_parts_picked_together_in_the_file_dialog_are_read_once(
    qtbot: QtBot,
    picker: Callable[..., ModelPickerDialog],
    parts: list[Path],
    inspections: list[object],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The whole folder, in the order a file dialog may give it, the projector included.
    projector = header_only_projector(parts[0].with_name("mmproj-Step-3.7-Flash-f16.gguf"), n_embd_out=builders.N_EMBD)
    asked = pick_in_file_dialog(monkeypatch, parts[2], projector, parts[0], parts[1])
    d = picker()
    with qtbot.waitSignal(d.sig_inspected, timeout=WAIT_MS):
        QTest.mouseClick(button(d, "Browse for a model file"), Qt.MouseButton.LeftButton)
    assert asked == [True]
    assert inspections == [[parts[2], parts[0], parts[1]]]  # one read of the three parts, not three reads
    assert field(d, "File size") == set_size(parts)
    assert field(d, "Status") == "3 files picked together: Stride loads them as one model in 3 parts."
    assert field(d, "Vision file").startswith("mmproj-Step-3.7-Flash-f16.gguf")  # paired, not loaded as a part
    assert d.selected() == (tuple(str(p) for p in parts), "")  # all parts, in order


def test_dropping_the_parts_reads_the_set_once(
    qtbot: QtBot, picker: Callable[..., ModelPickerDialog], parts: list[Path], inspections: list[object]
) -> None:
    d = picker()
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(p)) for p in reversed(parts)])
    assert _drag_enter(d, mime).isAccepted()
    with qtbot.waitSignal(d.sig_inspected, timeout=WAIT_MS):
        assert _drop(d, mime).isAccepted()
    assert inspections == [list(reversed(parts))]
    assert field(d, "File size") == set_size(parts) and field(d, "MTP heads") == "3 heads, in this set"
    assert d.selected() == (tuple(str(p) for p in parts), "")


def test_several_parts_can_be_typed_quoted(
    qtbot: QtBot, picker: Callable[..., ModelPickerDialog], parts: list[Path]
) -> None:
    d = picker()
    d.show()
    edit = next(w for w in d.findChildren(QLineEdit) if w.accessibleName() == "Model file path")
    edit.setFocus()
    QTest.keyClicks(edit, " ".join(f'"{p}"' for p in parts[1:]))  # parts 2 and 3; part 1 is found beside
    with qtbot.waitSignal(d.sig_inspected, timeout=WAIT_MS):
        QTest.keyClick(edit, Qt.Key.Key_Return)
    assert field(d, "File size") == set_size(parts)
    assert d.selected() == (tuple(str(p) for p in parts), "")


def test_the_recent_list_keeps_one_entry_per_set(
    qtbot: QtBot, picker: Callable[..., ModelPickerDialog], parts: list[Path], live_gguf: Path
) -> None:
    # An older version kept whichever part was opened: the same set under two names.
    d = picker([str(parts[0]), str(parts[2]), str(live_gguf)])
    recent = d.findChild(QListWidget)
    assert recent is not None
    assert [recent.item(i).text() for i in range(recent.count())] == [f"{parts[0]} (3 parts)", str(live_gguf)]
    read(qtbot, d, parts[1])
    assert recent.currentRow() == 0  # part 2 is the set the first entry names
    with qtbot.waitSignal(d.sig_inspected, timeout=WAIT_MS):
        recent.setCurrentRow(1)
    with qtbot.waitSignal(d.sig_inspected, timeout=WAIT_MS):
        recent.setCurrentRow(0)
    assert field(d, "File size") == set_size(parts) and d.selected() == (str(parts[0]), "")
    # What the controller keeps: part 1 first, and any other part of the same set dropped.
    assert recent_with([str(parts[2]), str(live_gguf)], remembered(str(parts[1]))) == [str(parts[0]), str(live_gguf)]


def test_a_split_mtp_file(
    qtbot: QtBot, picker: Callable[..., ModelPickerDialog], split_pair: tuple[Path, Path], tmp_path: Path
) -> None:
    trunk, heads = split_pair
    heads_parts = make_set(heads, tmp_path / "heads", 2, prefix="Step-3.7-Flash-MTP")
    d = picker()
    d.set_mtp_path(str(heads_parts[1]))  # any part of the MTP file's set, too
    read(qtbot, d, trunk)
    assert field(d, "MTP heads") == f"3 heads, in {heads_parts[0].name} (2 parts)"
    assert field(d, "File size") == f"{format_bytes(trunk.stat().st_size)} + {set_size(heads_parts)} (MTP file)"
    assert d.selected() == (str(trunk), str(heads_parts[0]))


# --- the picker: what is wrong with a set ---


def _missing(parts: list[Path]) -> tuple[list[Path], str, str]:
    parts[1].unlink()
    return [parts[0]], "missing part 2 of 3", "download it into the same folder"


def _later_part_alone(parts: list[Path]) -> tuple[list[Path], str, str]:
    parts[0].unlink()
    return [parts[2]], f"{parts[2].name} is part 3 of 3", f"put all 3 parts in one folder and open {parts[0].name}"


def _truncated(parts: list[Path]) -> tuple[list[Path], str, str]:
    data = parts[1].read_bytes()
    parts[1].write_bytes(data[: len(data) // 2])
    return [parts[2]], f"{parts[1].name} is truncated", "download"


def _twice(parts: list[Path]) -> tuple[list[Path], str, str]:
    return [parts[0], parts[0]], f"{parts[0].name} was given twice", "give each part once"


def _other_set(parts: list[Path]) -> tuple[list[Path], str, str]:
    folder = parts[0].parent.parent / "other"
    other = make_set(builders.build(folder / "whole.gguf", builders.oracle()), folder, 4, prefix="Other")
    return [parts[0], other[1]], "belongs to a set of 3 parts", "open the parts of one set"


BROKEN = {
    "missing": _missing,
    "later-part-alone": _later_part_alone,
    "truncated": _truncated,
    "twice": _twice,
    "other-set": _other_set,
}


@pytest.fixture
def broken(parts: list[Path], request: pytest.FixtureRequest) -> tuple[list[Path], str, str]:
    """The chosen file(s), words of the problem and words of the fix that the message must hold."""
    return BROKEN[request.param](parts)


@pytest.mark.parametrize("broken", BROKEN, indirect=True)
def test_a_broken_set_is_named_with_its_fix(
    qtbot: QtBot, picker: Callable[..., ModelPickerDialog], broken: tuple[list[Path], str, str]
) -> None:
    chosen, problem, fix = broken
    d = picker()
    error = read(qtbot, d, *chosen)
    assert isinstance(error, str) and "\n" not in error
    assert problem in error and fix in error
    assert field(d, "Status") == error
    assert not load_button(d).isEnabled()
    assert field(d, "File size") == "—"


# --- the vision projector ---


def test_a_projector_beside_the_model_is_shown_paired(
    qtbot: QtBot, picker: Callable[..., ModelPickerDialog], parts: list[Path]
) -> None:
    projector = header_only_projector(parts[0].with_name("mmproj-Step-3.7-Flash-f16.gguf"), n_embd_out=builders.N_EMBD)
    d = picker()
    d.show()
    read(qtbot, d, parts[2])
    vision = next(w for w in d.findChildren(QLabel) if w.accessibleName().startswith("Vision file: "))
    assert vision.isVisible()
    assert field(d, "Vision file") == (
        f"mmproj-Step-3.7-Flash-f16.gguf ({format_bytes(projector.stat().st_size)}), found beside the model; "
        "it loads with it, so the model reads pictures you attach"
    )
    assert d.selected() == (str(parts[0]), "")
    assert d.selected_projector() == str(projector)  # it loads with the model
    # The memory estimate counts it: its file, the encoder's buffers and the largest picture's rows.
    assert "vision " in field(d, "Memory estimate")


def test_the_estimate_grows_by_the_projector(
    qtbot: QtBot, picker: Callable[..., ModelPickerDialog], parts: list[Path]
) -> None:
    d = picker()
    read(qtbot, d, parts[0])
    alone = d._outcome
    header_only_projector(parts[0].with_name("mmproj-Step-3.7-Flash-f16.gguf"), n_embd_out=builders.N_EMBD)
    read(qtbot, d, parts[0])
    together = d._outcome
    assert alone is not None and together is not None and alone.projector_bytes == 0
    assert together.projector is not None and together.projector_bytes > together.projector.file_bytes


def test_no_projector_no_vision_row(qtbot: QtBot, picker: Callable[..., ModelPickerDialog], parts: list[Path]) -> None:
    d = picker()
    d.show()
    read(qtbot, d, parts[0])
    vision = next(w for w in d.findChildren(QLabel) if w.accessibleName().startswith("Vision file: "))
    assert not vision.isVisible() and field(d, "Vision file") == ""


def test_a_projector_for_another_model_is_not_paired(
    qtbot: QtBot, picker: Callable[..., ModelPickerDialog], parts: list[Path]
) -> None:
    header_only_projector(parts[0].with_name("mmproj-other.gguf"), n_embd_out=4096)
    d = picker()
    read(qtbot, d, parts[0])
    assert field(d, "Vision file") == (
        f"mmproj-other.gguf, found beside the model, is made for another model (image tokens 4,096 wide, "
        f"this model's {builders.N_EMBD:,}); it is not paired"
    )
    assert d.selected_projector() is None and "vision" not in field(d, "Memory estimate")


def test_a_projector_opened_as_the_model_says_what_it_is(
    qtbot: QtBot, picker: Callable[..., ModelPickerDialog], tmp_path: Path
) -> None:
    projector = header_only_projector(tmp_path / "mmproj-Step-3.7-Flash-f16.gguf", n_embd_out=4096)
    d = picker()
    error = read(qtbot, d, projector)
    assert error == (
        "mmproj-Step-3.7-Flash-f16.gguf is a vision projector (mmproj), not a language model; "
        "choose the main model file"
    )
    assert field(d, "Status") == error and not load_button(d).isEnabled()


# --- loading: the window gets the whole set ---


def test_the_picker_loads_the_picked_parts_once_with_the_heads_of_the_last(
    qtbot: QtBot,
    make_app: Callable[..., AppHarness],
    parts: list[Path],
    loads: list[tuple[Path, ...]],
    free_memory: None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    app = make_app("", wait_loaded=False)
    app.controller.choose_model()
    (d,) = app.window.findChildren(ModelPickerDialog)
    pick_in_file_dialog(monkeypatch, parts[1], parts[2], parts[0])
    with qtbot.waitSignal(d.sig_inspected, timeout=WAIT_MS):
        QTest.mouseClick(button(d, "Browse for a model file"), Qt.MouseButton.LeftButton)
    with qtbot.waitSignal(app.controller.sig_model_ready, timeout=LOAD_MS) as ready:
        QTest.mouseClick(load_button(d), Qt.MouseButton.LeftButton)
    loaded: LoadedModel = ready.args[0]
    assert loads == [tuple(parts)]  # one load, every part in order (the heads are embedded: no second model)
    assert loaded.n_heads == 3 and loaded.info.parts == tuple(parts) and loaded.info.mtp_weights == "embedded"
    settings = app.controller.settings
    assert (settings.model_path, settings.recent_models) == (str(parts[0]), [str(parts[0])])
    assert "MTP 3 heads" in app.window.model_label.text()


def test_a_set_reloads_from_the_recent_list_as_one_entry(
    qtbot: QtBot, make_app: Callable[..., AppHarness], parts: list[Path], live_gguf: Path, free_memory: None
) -> None:
    app = make_app(str(parts[2]))  # the last session opened part 3
    assert app.controller.settings.model_path == str(parts[0])
    with qtbot.waitSignal(app.controller.sig_model_ready, timeout=LOAD_MS):
        app.controller.load_model(str(live_gguf), "")
    with qtbot.waitSignal(app.controller.sig_model_ready, timeout=LOAD_MS):
        app.controller.load_model(str(parts[1]), "")
    assert app.controller.settings.recent_models == [str(parts[0]), str(live_gguf)]


def test_stride_with_a_later_part_opens_the_set(
    qtbot: QtBot, parts: list[Path], loads: list[tuple[Path, ...]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`stride NAME-00003-of-00003.gguf`, as a file manager runs it: the real entry point loads the set."""
    controllers = _run_main(monkeypatch, tmp_path, [str(parts[2])])
    controller = controllers[0]
    qtbot.addWidget(controller.window)
    with qtbot.waitSignal(controller.sig_model_ready, timeout=LOAD_MS) as ready:
        pass
    loaded: LoadedModel = ready.args[0]
    assert loads == [tuple(parts)]
    assert loaded.n_heads == 3 and loaded.info.opened_part == 2
    assert controller.settings.model_path == str(parts[0])
    assert app_settings.load_settings().settings.recent_models == [str(parts[0])]
    controller.shutdown()


def test_stride_with_all_the_parts_opens_the_set_once(
    qtbot: QtBot, parts: list[Path], loads: list[tuple[Path, ...]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(parts[0].parent)
    assert app_main.parse_args([p.name for p in parts]).model == tuple(str(p) for p in parts)  # absolute
    controller = _run_main(monkeypatch, tmp_path, [p.name for p in reversed(parts)])[0]
    qtbot.addWidget(controller.window)
    with qtbot.waitSignal(controller.sig_model_ready, timeout=LOAD_MS):
        pass
    assert loads == [tuple(parts)] and controller.settings.model_path == str(parts[0])
    controller.shutdown()


def _run_main(monkeypatch: pytest.MonkeyPatch, folder: Path, argv: list[str]) -> list[ChatController]:
    """The real `stride` start-up on temporary folders, stopped where the event loop would run."""
    monkeypatch.setattr(app_settings, "settings_path", lambda: folder / "config" / "settings.toml")
    monkeypatch.setattr(app_main, "default_db_path", lambda: folder / "data" / "conversations.db")
    monkeypatch.setattr(QApplication, "exec", lambda *_: 0)
    monkeypatch.setattr(sys, "excepthook", sys.excepthook)  # main installs its own; put pytest's back after
    started: list[ChatController] = []
    original = ChatController.start

    def start(self: ChatController, *args: object) -> None:
        started.append(self)
        original(self, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(ChatController, "start", start)
    assert app_main.main(argv) == 0
    return started


@pytest.mark.parametrize("broken", BROKEN, indirect=True)
def test_a_broken_set_at_start_up_gets_one_dialog_and_the_app_carries_on(
    qtbot: QtBot, make_app: Callable[..., AppHarness], broken: tuple[list[Path], str, str]
) -> None:
    chosen, problem, fix = broken
    app = make_app("", wait_loaded=False)
    model = str(chosen[0]) if len(chosen) == 1 else tuple(str(p) for p in chosen)
    with qtbot.waitSignal(app.controller.sig_model_failed, timeout=LOAD_MS) as failed:
        app.controller.start(model)
    message = failed.args[0]
    assert problem in message and fix in message and "\n" not in message
    (dialog,) = open_errors(app)
    assert dialog.windowTitle() == "The model could not be loaded" and dialog._message == message
    dialog.close()
    assert app.window.notice.isVisible() and app.window.model_label.text() == "No model loaded"
    with qtbot.waitSignal(app.controller.sig_model_ready, timeout=LOAD_MS):
        app.window.notice.primary.click()  # "Use the demo model": the window still works


# --- screenshot ---


def test_screenshot_a_set_with_its_projector(
    qtbot: QtBot, parts: list[Path], free_memory: None, screenshot_dir: Path
) -> None:
    app = QApplication.instance()
    assert isinstance(app, QApplication)
    apply_theme(app, "light")
    header_only_projector(parts[0].with_name("mmproj-Step-3.7-Flash-f16.gguf"), n_embd_out=builders.N_EMBD)
    d = ModelPickerDialog([str(parts[0]), "demo"], n_ctx=8192)
    qtbot.addWidget(d)
    d.show()
    read(qtbot, d, parts[2])
    assert field(d, "File size") == set_size(parts)
    assert field(d, "Status").startswith("Opened from part 3 of 3")
    # The vision row appears and long texts wrap: relayouts that take more than one turn of the event loop.
    wrapped = [w for w in d.findChildren(QLabel) if w.wordWrap() and w.text()]
    qtbot.waitUntil(lambda: all(w.isVisible() and w.height() >= w.heightForWidth(w.width()) for w in wrapped))
    screenshot_dir.mkdir(parents=True, exist_ok=True)
    assert d.grab().save(str(screenshot_dir / "model-set.png"))
    QThreadPool.globalInstance().waitForDone()
