"""The main window as a new user reads it: the model's name, the context meter, MTP's state said
once, and buttons that look as enabled as they are."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from PySide6.QtGui import QColor, QImage, QPalette
from PySide6.QtWidgets import QApplication, QLabel, QListWidget, QStyleOptionViewItem
from pytestqt.qtbot import QtBot

from app.model_files import display_name
from app.theme import apply_theme
from app.views.elide import PathItemDelegate, elide_path
from app.views.main_window import MainWindow
from app.views.model_dialog import ModelPickerDialog
from app.views.sidebar import Sidebar
from tests.app.conftest import AppHarness
from tests.app.test_app import send

LONG_NAME = "Models--stepfun-ai--Step-3.7-Flash-Instruct-Preview-With-A-Very-Long-Repository-Description " * 2


def close_to(a: QColor, b: QColor, tolerance: int = 40) -> bool:
    return abs(a.red() - b.red()) + abs(a.green() - b.green()) + abs(a.blue() - b.blue()) < tolerance


def pixels_like(image: QImage, color: QColor, tolerance: int = 40) -> int:
    return sum(
        close_to(image.pixelColor(x, y), color, tolerance) for y in range(image.height()) for x in range(image.width())
    )


@pytest.mark.parametrize(
    ("general_name", "path", "quantization", "shown"),
    [
        ("Step 3.7 Flash", "/m/Step-3.7-Flash-Q4_K_M-00001-of-00003.gguf", "Q4_K_M", "Step 3.7 Flash"),
        ("  SmolLM2   135M\tInstruct ", "/m/smollm2.gguf", "Q8_0", "SmolLM2 135M Instruct"),
        ("stepfun-ai/Step-3.5-Flash", "/m/x.gguf", "F16", "Step-3.5-Flash"),  # a repository prefix goes
        # No name, or one too long to be a name: the file's, without part number, quantization or .gguf.
        (None, "/m/Step-3.7-Flash-Q4_K_M-00002-of-00003.gguf", "Q4_K_M (F32)", "Step-3.7-Flash"),
        (LONG_NAME, "/m/smollm2-135m-instruct-q8_0.gguf", "Q8_0", "smollm2-135m-instruct"),
        ("", "/m/model.gguf", "Q8_0", "model"),
        (None, "/m/q8_0.gguf", "Q8_0", "q8_0"),  # nothing left after the quantization: keep the name
    ],
)
def test_display_name(general_name: str | None, path: str, quantization: str, shown: str) -> None:
    assert display_name(general_name, Path(path), quantization) == shown


def test_a_long_model_name_is_cut_and_the_context_meter_stays_readable(qtbot: QtBot) -> None:
    window = MainWindow()
    qtbot.addWidget(window)
    window.resize(1240, 800)
    window.show()
    qtbot.waitExposed(window)
    text = f"{LONG_NAME} · Q4_K_M · MTP 3 heads"
    window.show_model(text, f"{text}\n/models/x.gguf")
    window.set_context(147, 2048)
    QApplication.processEvents()

    label, meter = window.model_label, window.context_meter
    assert window.width() == 1240  # the name did not widen the window
    assert label.text() == text and label.toolTip().startswith(text)  # whole where it is read out
    assert label.shown_text().endswith("…") and len(label.shown_text()) < len(text)
    assert label.geometry().right() < meter.geometry().left()
    assert meter.width() >= meter.sizeHint().width() and meter.height() >= meter.sizeHint().height()
    assert meter.height() >= meter.fontMetrics().height()  # not a line: the figures have their height

    # The figures sit beside the bar, not on it; the bar shows its 7% as a visible fill.
    assert meter.text() == "147 / 2,048" and meter.toolTip() == "Context: 147 of 2,048 tokens (7%)"
    assert not meter.bar_rect().intersects(meter.text_rect().toRectF())
    image = meter.grab().toImage()
    bar = meter.bar_rect().toAlignedRect()
    accent = meter.palette().color(QPalette.ColorRole.Highlight)
    assert pixels_like(image.copy(bar), accent) >= bar.height() * 3
    ink = meter.palette().color(QPalette.ColorRole.WindowText)
    assert pixels_like(image.copy(meter.text_rect()), ink, 120) > 20

    window.set_context(1900, 2048)  # nearly full: the fill says so
    assert meter.fill_color() != accent


@pytest.mark.parametrize("theme", ["light", "dark"])
def test_sidebar_buttons_look_enabled(qtbot: QtBot, theme: str) -> None:
    app = QApplication.instance()
    assert isinstance(app, QApplication)
    apply_theme(app, theme)
    try:
        sidebar = Sidebar()
        qtbot.addWidget(sidebar)
        sidebar.show()
        qtbot.waitExposed(sidebar)
        text = app.palette().color(QPalette.ColorRole.ButtonText)
        for button in (sidebar.rename_button, sidebar.delete_button):
            # The icon is drawn in the caption colour of an enabled button ...
            assert pixels_like(button.grab().toImage(), text, 30) >= 5, button.accessibleName()
            button.setEnabled(False)
            QApplication.processEvents()
            # ... and greys out like one when the button is disabled.
            assert pixels_like(button.grab().toImage(), text, 30) == 0, button.accessibleName()
    finally:
        apply_theme(app, "light")


def visible_texts(harness: AppHarness) -> list[str]:
    """Everything the window says in words: labels on show, the notice, the lines under replies."""
    window = harness.window
    texts = [label.text() for label in window.findChildren(QLabel) if label.isVisibleTo(window)]
    model = window.transcript_model
    texts += [model.state(row).summary for row in range(model.rowCount())]
    return texts


def test_mtp_off_is_said_once_in_the_speed_panel(
    qtbot: QtBot, make_app: Callable[..., AppHarness], noheads_gguf: Path
) -> None:
    app = make_app(str(noheads_gguf), max_tokens=40)
    send(qtbot, app, "alpha bravo")
    said = [text for text in visible_texts(app) if "MTP is off" in text or "MTP off" in text]
    assert len(said) == 1 and "no MTP heads" in said[0]
    assert app.window.stats_panel.mtp_banner.text() == said[0]
    assert not app.window.notice.isVisible()


def test_after_a_reply_the_big_figure_is_its_average(qtbot: QtBot, make_app: Callable[..., AppHarness]) -> None:
    app = make_app()
    result = send(qtbot, app, "Hi")
    panel = app.window.stats_panel
    assert not panel.is_live() and panel.now_heading.text() == "Last reply"
    assert panel.now_value.text() == f"{result.stats.tokens_per_second:.1f}"  # type: ignore[attr-defined]


def test_paths_give_up_their_folders_first(qtbot: QtBot) -> None:
    label = QLabel()
    metrics = label.fontMetrics()
    path = "/tmp/pytest-of-root/pytest-91/test_screenshot0/model/Step-3.7-Flash-Q4_K_M-00001-of-00003.gguf (3 parts)"
    name = "Step-3.7-Flash-Q4_K_M-00001-of-00003.gguf (3 parts)"
    assert elide_path(path, metrics, 10_000) == path
    short = elide_path(path, metrics, metrics.horizontalAdvance("…/model/" + name) + 1)
    assert short == "…/model/" + name
    tiny = elide_path(path, metrics, 80)
    assert "…" in tiny and metrics.horizontalAdvance(tiny) <= 80


def test_recent_models_show_the_file_name_without_a_horizontal_scroll_bar(qtbot: QtBot) -> None:
    deep = "/home/someone/" + "a-rather-long-folder-name/" * 4 + "Step-3.7-Flash-Q4_K_M-00001-of-00003.gguf"
    dialog = ModelPickerDialog([deep, "demo"], n_ctx=8192)
    qtbot.addWidget(dialog)
    dialog.show()
    qtbot.waitExposed(dialog)
    recent = dialog.findChild(QListWidget)
    assert recent is not None and recent.accessibleName() == "Recent models"
    assert recent.horizontalScrollBar().maximum() == 0
    index = recent.model().index(0, 0)
    option = QStyleOptionViewItem()
    option.initFrom(recent)
    option.rect = recent.visualRect(index)
    delegate = recent.itemDelegate()
    assert isinstance(delegate, PathItemDelegate)
    delegate.initStyleOption(option, index)  # what is drawn
    assert option.text.startswith("…/") and option.text.endswith(
        "Step-3.7-Flash-Q4_K_M-00001-of-00003.gguf (3 parts) (missing)"
    )
