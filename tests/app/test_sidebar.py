"""The conversation list: titles cut with an ellipsis to the list's width, never a horizontal scroll bar."""

from __future__ import annotations

from dataclasses import dataclass

from PySide6.QtWidgets import QApplication, QStyleOptionViewItem
from pytestqt.qtbot import QtBot

from app.views.sidebar import ConversationDelegate, Sidebar

LONG = "Explain how multi-token prediction drafts tokens and why the trunk verifies them all in one pass"


@dataclass
class Conv:
    id: int
    title: str
    updated_at: float = 1_700_000_000.0
    snippet: str = ""


def test_long_titles_are_elided_and_the_list_never_scrolls_sideways(qtbot: QtBot) -> None:
    sidebar = Sidebar()
    qtbot.addWidget(sidebar)
    sidebar.resize(230, 400)
    sidebar.set_conversations(
        [Conv(1, LONG, snippet="…the trunk verifies every drafted token in a single batched pass"), Conv(2, "Hi")], 1
    )
    sidebar.show()
    qtbot.waitExposed(sidebar)
    QApplication.processEvents()
    view = sidebar.list
    assert view.horizontalScrollBar().maximum() == 0
    assert not view.horizontalScrollBar().isVisible()

    delegate = view.itemDelegate()
    assert isinstance(delegate, ConversationDelegate)
    index = view.model().index(0, 0)
    option = QStyleOptionViewItem()
    option.initFrom(view)
    option.rect = view.visualRect(index)
    assert option.rect.width() <= view.viewport().width()  # rows as wide as the list, never wider
    title, subtitle = delegate.lines(option, index)
    assert title.endswith("…") and LONG.startswith(title[:-1].rstrip())
    assert subtitle.endswith("…")
    assert view.fontMetrics().horizontalAdvance(title) < view.viewport().width()
    short = view.model().index(1, 0)
    option.rect = view.visualRect(short)
    assert delegate.lines(option, short)[0] == "Hi"  # a title that fits is drawn whole
    assert view.model().index(0, 0).data(3) == LONG  # the full title in the tooltip (ToolTipRole)
