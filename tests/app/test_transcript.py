"""The transcript: virtualised (fast with 5,000 messages), cheap to stream into, markdown with
highlighted code, collapsible reasoning, draft tint, actions and accessible text."""

from __future__ import annotations

import random
import time
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
from PySide6.QtCore import QModelIndex, QPoint, QRect, QRectF, Qt
from PySide6.QtGui import QColor, QFont, QImage, QPixmap, QTextCursor, QTextFormat
from PySide6.QtWidgets import QApplication
from pytestqt.qtbot import QtBot

from app.theme import dark_palette, light_palette
from app.views.markdown import RenderedText, Theme, align
from app.views.transcript import (
    FLUSH_BUDGET,
    FLUSH_INTERVAL_MS,
    RowState,
    TranscriptDelegate,
    TranscriptModel,
    TranscriptView,
    thought_duration,
)
from tests.app.pixels import box, count_colour, drawn_fraction, rgb_pixels

WORDS = ["the", "model", "drafts", "tokens", "ahead", "and", "the", "trunk", "verifies", "them", "in", "one", "pass"]
CODE_ANSWER = """Here is a **fast** way to reverse a string:

```python
def reverse(text: str) -> str:
    # slicing walks the string backwards
    return text[::-1]
```

It runs in *O(n)* time."""


@dataclass
class Msg:
    """Shaped like app.store.Message (the transcript reads any object with these attributes)."""

    id: int
    conversation_id: int
    role: str
    content: str
    reasoning: str = ""
    status: str = "complete"
    created_at: float = 0.0
    thought_seconds: float | None = None
    stats: dict[str, Any] | None = None
    draft_spans: dict[str, list[list[int]]] | None = None
    images: tuple[str, ...] = ()


def words(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n))


def conversation(n: int, seed: int = 1) -> list[Msg]:
    """Alternating user and assistant messages; some replies carry code blocks and reasoning."""
    rng = random.Random(seed)
    messages = []
    for i in range(n):
        if i % 2 == 0:
            messages.append(Msg(i, 1, "user", words(rng, rng.randint(3, 40))))
            continue
        content = words(rng, rng.randint(20, 160))
        if i % 5 == 1:
            content += "\n\n" + CODE_ANSWER
        reasoning = words(rng, 60) if i % 3 == 1 else ""
        messages.append(Msg(i, 1, "assistant", content, reasoning=reasoning, thought_seconds=2.4))
    return messages


@pytest.fixture
def builds(monkeypatch: pytest.MonkeyPatch) -> Counter[int]:
    """How many times each row (by uid) had its documents built."""
    counts: Counter[int] = Counter()
    original = TranscriptDelegate.build_layout

    def counting(self: TranscriptDelegate, state: RowState, width: int) -> Any:
        counts[state.uid] += 1
        return original(self, state, width)

    monkeypatch.setattr(TranscriptDelegate, "build_layout", counting)
    return counts


@pytest.fixture
def make_view(qtbot: QtBot) -> Any:
    def _make(messages: list[Msg], width: int = 900, height: int = 700) -> tuple[TranscriptModel, TranscriptView]:
        model = TranscriptModel()
        view = TranscriptView(model)
        qtbot.addWidget(view)
        model.set_messages(messages)
        view.resize(width, height)
        view.show()
        qtbot.waitExposed(view)
        return model, view

    return _make


def focus(qtbot: QtBot, view: TranscriptView) -> None:
    """Shortcuts need the view focused in the active window."""
    view.activateWindow()
    view.setFocus()
    qtbot.waitUntil(view.hasFocus)


def rows_on_screen(view: TranscriptView) -> range:
    model = view.transcript_model
    rows = [r for r in range(model.rowCount()) if view.visualRect(model.index(r)).intersects(view.viewport().rect())]
    return range(rows[0], rows[-1] + 1)


def assert_laid_out_exactly(view: TranscriptView) -> None:
    """Every row on screen has the list height its real layout needs: nothing clipped or overlapping."""
    for row in rows_on_screen(view):
        assert view.allocated_height(row) == view.delegate.layout(row).height, row


# Performance -------------------------------------------------------------------------------


def test_5000_messages_open_virtualised_and_scroll_to_the_top(
    qtbot: QtBot, builds: Counter[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    """How fast is benchmarks/open_conversation.py's job; this checks the work done is bounded."""
    messages = conversation(5000)
    model = TranscriptModel()
    view = TranscriptView(model)
    qtbot.addWidget(view)
    view.resize(900, 700)
    painted: list[int] = []
    original_paint = TranscriptDelegate.paint

    def paint(self: TranscriptDelegate, painter: Any, option: Any, index: QModelIndex) -> None:
        painted.append(index.row())
        original_paint(self, painter, option, index)

    monkeypatch.setattr(TranscriptDelegate, "paint", paint)
    changed: list[int] = []
    model.dataChanged.connect(lambda first, _last, _roles=(): changed.append(first.row()))

    summaries = {row: "41.8 tok/s · 96 tokens" for row, m in enumerate(messages) if m.role == "assistant"}
    model.set_messages(messages, summaries)  # as the controller opens a conversation
    view.show()
    view.scrollToBottom()
    QApplication.processEvents()
    qtbot.waitUntil(lambda: bool(painted), timeout=5000)
    assert changed == []  # one model reset, not a re-layout per reply summary
    assert model.state(1).summary == "41.8 tok/s · 96 tokens"

    painted.clear()
    view.scrollToTop()
    QApplication.processEvents()
    qtbot.waitUntil(lambda: 0 in painted, timeout=5000)
    # It opened at the latest message, then showed the first one, exactly laid out.
    assert view.visualRect(model.index(0)).top() == 0
    assert_laid_out_exactly(view)
    # Virtualised: only rows near the screen were ever laid out.
    assert sum(builds.values()) < 80


def test_scrolling_through_a_long_conversation_keeps_rows_exact(make_view: Any, builds: Counter[int]) -> None:
    _, view = make_view(conversation(2000))
    bar = view.verticalScrollBar()
    view.scrollToTop()
    for _ in range(60):
        bar.setValue(bar.value() + 150)
        QApplication.processEvents()
        assert_laid_out_exactly(view)
    assert len(builds) < 200  # the rows passed by, not the conversation


def test_resizing_keeps_the_message_at_the_top_in_place(make_view: Any) -> None:
    model, view = make_view(conversation(600))
    bar = view.verticalScrollBar()
    bar.setValue(bar.maximum() // 2)
    QApplication.processEvents()
    row = view._row_at(0)
    top = view.visualRect(model.index(row)).top()
    view.resize(640, 700)
    QApplication.processEvents()
    assert view._row_at(0) == row
    assert abs(view.visualRect(model.index(row)).top() - top) <= 1
    assert_laid_out_exactly(view)


def test_the_scroll_bar_appearing_does_not_change_row_heights(make_view: Any) -> None:
    # Otherwise showing the bar could make it unnecessary, hiding it necessary again, and so on.
    model, view = make_view(conversation(6), width=520, height=300)
    content = sum(view.allocated_height(r) for r in range(model.rowCount()))
    widths = set()
    for height in range(content - 40, content + 40, 4):
        view.resize(520, height)
        QApplication.processEvents()
        widths.add(view.layout_width)
        assert_laid_out_exactly(view)
    assert len(widths) == 1


# Streaming ---------------------------------------------------------------------------------


def test_streaming_rebuilds_only_the_streaming_row_and_coalesces(
    qtbot: QtBot, make_view: Any, builds: Counter[int]
) -> None:
    model, view = make_view(conversation(60))
    row = model.append_message(Msg(1000, 1, "assistant", "", status="streaming"))
    streaming_uid = model.state(row).uid
    qtbot.waitUntil(lambda: view.visualRect(model.index(row)).intersects(view.viewport().rect()))
    QApplication.processEvents()
    builds.clear()
    changed: list[int] = []
    model.dataChanged.connect(lambda top, bottom: changed.extend(range(top.row(), bottom.row() + 1)))

    rng = random.Random(7)
    pieces = [(("reasoning" if i < 300 else "answer"), rng.choice(WORDS) + " ", i % 3 != 0) for i in range(2000)]
    start = time.perf_counter()
    for i, (kind, text, from_draft) in enumerate(pieces):
        model.append_stream(row, kind, text, from_draft)
        if i % 25 == 0:  # deltas arrive between event-loop turns
            QApplication.processEvents()
    with qtbot.waitSignal(model.dataChanged, timeout=1000):
        pass
    QApplication.processEvents()
    elapsed = time.perf_counter() - start

    assert set(changed) == {row}
    assert set(builds) == {streaming_uid}, "another row's documents were rebuilt"
    # Coalesced: at most one rebuild per flush interval, not one per piece.
    assert builds[streaming_uid] <= elapsed * 1000 / FLUSH_INTERVAL_MS + 3
    assert builds[streaming_uid] < 100

    live = model.live_text(row)
    assert live.reasoning == "".join(t for k, t, _ in pieces if k == "reasoning")
    assert live.content == "".join(t for k, t, _ in pieces if k == "answer")
    # Draft spans cover exactly the drafted pieces, one span per run of them.
    for kind in ("answer", "reasoning"):
        expected: list[bool] = []
        for piece_kind, text, from_draft in pieces:
            if piece_kind == kind:
                expected += [from_draft] * len(text)
        covered = [False] * len(expected)
        for a, b in live.draft_spans[kind]:
            covered[a:b] = [True] * (b - a)
        assert covered == expected
        runs = sum(1 for i, flag in enumerate(expected) if flag and (i == 0 or not expected[i - 1]))
        assert len(live.draft_spans[kind]) == runs
    # The caller's message object is left alone; the view follows the bottom.
    assert model.message(row).content == ""
    assert view.is_following()
    assert view.verticalScrollBar().value() == view.verticalScrollBar().maximum()
    assert_laid_out_exactly(view)


def test_a_reply_slow_to_render_is_repainted_less_often(
    qtbot: QtBot, make_view: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    model, _ = make_view([Msg(1, 1, "user", "Hi")])
    row = model.append_message(Msg(2, 1, "assistant", "", status="streaming"))
    original = TranscriptDelegate.build_layout

    def slow(self: TranscriptDelegate, state: RowState, width: int) -> Any:
        time.sleep(0.03)  # what a very long reply costs to re-render
        return original(self, state, width)

    monkeypatch.setattr(TranscriptDelegate, "build_layout", slow)
    model.append_stream(row, "answer", "Hello", False)
    with qtbot.waitSignal(model.dataChanged, timeout=1000):
        pass
    assert model._flush_timer.interval() >= 0.03 * 1000 / FLUSH_BUDGET


def test_streaming_does_not_scroll_a_reader_who_scrolled_up(qtbot: QtBot, make_view: Any) -> None:
    model, view = make_view(conversation(200))
    row = model.append_message(Msg(1000, 1, "assistant", "", status="streaming"))
    QApplication.processEvents()
    bar = view.verticalScrollBar()
    bar.setValue(bar.maximum() // 3)
    QApplication.processEvents()
    assert not view.is_following()
    top_row = view._row_at(0)
    top = view.visualRect(model.index(top_row)).top()
    for _ in range(300):
        model.append_stream(row, "answer", "more words here ", False)
        view.scroll_to_bottom_if_following()
    with qtbot.waitSignal(model.dataChanged, timeout=1000):
        pass
    QApplication.processEvents()
    assert view._row_at(0) == top_row
    assert view.visualRect(model.index(top_row)).top() == top


# Reasoning, tint, summary, badges ----------------------------------------------------------


def test_reasoning_is_collapsed_when_finished_and_toggles_by_click_and_key(qtbot: QtBot, make_view: Any) -> None:
    reply = Msg(2, 1, "assistant", "The answer.", reasoning="Let me think about it.\n\n" * 6, thought_seconds=12.4)
    model, view = make_view([Msg(1, 1, "user", "Question?"), reply])
    delegate = view.delegate
    collapsed = delegate.layout(1)
    assert collapsed.reasoning is None
    assert collapsed.header_text == "Thought for 12 s"
    assert model.data(model.index(1), Qt.ItemDataRole.AccessibleTextRole) == "Assistant: The answer."

    header = collapsed.header
    assert header is not None
    click_at = view.visualRect(model.index(1)).topLeft() + header.center()
    qtbot.mouseClick(view.viewport(), Qt.MouseButton.LeftButton, pos=click_at)
    expanded = delegate.layout(1)
    assert expanded.reasoning is not None
    assert expanded.height > collapsed.height
    assert view.sizeHintForIndex(model.index(1)).height() == expanded.height
    assert_laid_out_exactly(view)

    focus(qtbot, view)
    qtbot.keyClick(view, Qt.Key.Key_Space)  # on the current (clicked) message
    assert delegate.layout(1).reasoning is None
    assert view.sizeHintForIndex(model.index(1)).height() == collapsed.height


def test_reasoning_is_expanded_while_streaming_and_collapses_when_done(make_view: Any) -> None:
    model, view = make_view([Msg(1, 1, "user", "Hi")])
    row = model.append_message(Msg(2, 1, "assistant", "", status="streaming"))
    model.append_stream(row, "reasoning", "Considering the greeting.", False)
    model._flush()
    streaming = view.delegate.layout(row)
    assert streaming.reasoning is not None and streaming.header_text == "Thinking…"
    assert streaming.footer is None  # no summary or badge while streaming

    live = model.live_text(row)
    final = replace(
        model.message(row), content="Hello!", reasoning=live.reasoning, status="complete", thought_seconds=0.4
    )
    model.update_message(row, final)
    model.set_summary(row, "40.0 tok/s · 3 tokens")
    done = view.delegate.layout(row)
    assert done.reasoning is None and done.header_text == "Thought for 0.4 s"
    assert done.summary == "40.0 tok/s · 3 tokens" and done.badge == ""
    assert model.data(model.index(row), TranscriptModel.SummaryRole) == "40.0 tok/s · 3 tokens"


def test_status_badges(make_view: Any) -> None:
    model, view = make_view(
        [
            Msg(1, 1, "assistant", "Half a repl", status="stopped"),
            Msg(2, 1, "assistant", "", status="error"),
            Msg(3, 1, "assistant", "Fine."),
        ]
    )
    assert [view.delegate.layout(r).badge for r in range(3)] == ["Stopped", "Error", ""]
    assert model.data(model.index(0), Qt.ItemDataRole.AccessibleTextRole) == "Assistant (stopped): Half a repl"


def tinted_positions(text: RenderedText, tint: QColor) -> set[int]:
    doc = text.doc
    tinted = set()
    for position in range(doc.characterCount() - 1):
        cursor = QTextCursor(doc)
        cursor.setPosition(position + 1)  # the format of the character before the cursor
        if cursor.charFormat().background().color() == tint:
            tinted.add(position)
    return tinted


def test_draft_tint_marks_drafted_text_inside_markdown(make_view: Any) -> None:
    content = "Plain start, **bold drafted** end."
    start = content.index("bold")
    spans = {"answer": [[start, start + len("bold drafted")]], "reasoning": []}
    _, view = make_view([Msg(1, 1, "assistant", content, draft_spans=spans)])
    theme = view.delegate.theme

    answer = view.delegate.layout(0).answer
    assert answer is not None and tinted_positions(answer, theme.tint) == set()

    view.set_tint_drafts(True)
    answer = view.delegate.layout(0).answer
    assert answer is not None
    rendered = answer.doc.toPlainText()
    assert rendered == "Plain start, bold drafted end."
    first = rendered.index("bold")
    assert tinted_positions(answer, theme.tint) == set(range(first, first + len("bold drafted")))
    # Still markdown: the drafted words are bold too.
    cursor = QTextCursor(answer.doc)
    cursor.setPosition(first + 2)
    assert cursor.charFormat().fontWeight() == QFont.Weight.Bold

    view.set_tint_drafts(False)
    answer = view.delegate.layout(0).answer
    assert answer is not None and tinted_positions(answer, theme.tint) == set()


def test_tint_and_highlighting_count_positions_like_qt_around_emoji(make_view: Any) -> None:
    # Qt positions count UTF-16 units; an emoji is two of them but one Python character.
    content = "😀 then **drafted** text\n\n```python\n# 😀\nreturn 1\n```"
    start = content.index("drafted")
    spans = {"answer": [[start, start + len("drafted")]], "reasoning": []}
    _, view = make_view([Msg(1, 1, "assistant", content, draft_spans=spans)])
    view.set_tint_drafts(True)
    answer = view.delegate.layout(0).answer
    assert answer is not None
    plain = answer.doc.toPlainText()
    first = plain.index("drafted") + 1  # the emoji before it takes two positions
    assert tinted_positions(answer, view.delegate.theme.tint) == set(range(first, first + len("drafted")))
    cursor = QTextCursor(answer.doc)
    cursor.setPosition(plain.index("return") + 2 + 1)  # two emojis before it now
    assert cursor.charFormat().foreground().color() == view.delegate.theme.syntax["keyword"]


def test_align_maps_rendered_characters_back_to_the_markdown() -> None:
    source = "# Title\n\nSome **bold** and `code` [link](http://x) &amp; more"
    rendered = "Title\nSome bold and code link & more"
    mapping = align(rendered, source)
    for i, ch in enumerate(rendered):
        if ch != "&":
            assert source[mapping[i]] == ch or (ch.isspace() and source[mapping[i]].isspace())
    assert mapping[rendered.index("bold")] == source.index("bold")
    assert mapping[rendered.index("more")] == source.index("more")


# Markdown ----------------------------------------------------------------------------------


def rendered(source: str, dark: bool = False) -> RenderedText:
    palette = dark_palette() if dark else light_palette()
    return RenderedText(source, font=QFont(), width=600, theme=Theme.from_palette(palette))


def test_markdown_bold_and_highlighted_python_code() -> None:
    text = rendered("Some **bold** words.\n\n" + CODE_ANSWER)
    doc = text.doc
    plain = doc.toPlainText()
    cursor = QTextCursor(doc)
    cursor.setPosition(plain.index("bold") + 1)
    assert cursor.charFormat().fontWeight() == QFont.Weight.Bold

    colours = set()
    code_blocks = 0
    block = doc.begin()
    while block.isValid():
        if block.blockFormat().property(QTextFormat.Property.BlockCodeFence):
            code_blocks += 1
            it = block.begin()
            while not it.atEnd():
                fragment = it.fragment()
                if fragment.text().strip():
                    colours.add(fragment.charFormat().foreground().color().name())
                it += 1
        block = block.next()
    assert code_blocks == 3
    assert len(colours) >= 3, colours  # keyword, function name, comment, ... not one flat colour
    assert len(text.code_boxes) == 1 and text.code_boxes[0].language == "python"


def test_code_colours_follow_the_theme() -> None:
    def keyword_colour(text: RenderedText) -> str:
        cursor = QTextCursor(text.doc)
        cursor.setPosition(text.doc.toPlainText().index("def ") + 1)
        return str(cursor.charFormat().foreground().color().name())

    light, dark = rendered(CODE_ANSWER), rendered(CODE_ANSWER, dark=True)
    assert keyword_colour(light) != keyword_colour(dark)
    assert light.theme.code_bg.lightness() > 200 and dark.theme.code_bg.lightness() < 60


def test_long_code_lines_wrap_instead_of_clipping() -> None:
    text = rendered("```\n" + "x = 1; " * 80 + "\n```")
    assert text.doc.size().width() <= 600.5
    assert text.doc.size().height() > 3 * 14


# Actions and accessibility -----------------------------------------------------------------


def test_context_menu_actions_emit_the_row(qtbot: QtBot, make_view: Any) -> None:
    _, view = make_view([Msg(1, 1, "user", "Question?"), Msg(2, 1, "assistant", "Answer.", reasoning="hmm")])

    user_menu = view.context_menu(0)
    assert [a.text() for a in user_menu.actions()] == ["Copy", "Edit and resend"]
    with qtbot.waitSignal(view.sig_edit_requested) as edit:
        next(a for a in user_menu.actions() if a.text() == "Edit and resend").trigger()
    assert edit.args == [0]
    with qtbot.waitSignal(view.sig_copy_requested) as copy:
        next(a for a in user_menu.actions() if a.text() == "Copy").trigger()
    assert copy.args == [0]

    reply_menu = view.context_menu(1)
    assert [a.text() for a in reply_menu.actions()] == ["Show thinking\tSpace", "Copy", "Regenerate"]
    with qtbot.waitSignal(view.sig_regenerate_requested) as regenerate:
        next(a for a in reply_menu.actions() if a.text() == "Regenerate").trigger()
    assert regenerate.args == [1]


def at_rect(view: TranscriptView, row: int, rect: QRect) -> QRect:
    """A rectangle in a row's coordinates, in the viewport's."""
    return rect.translated(
        view.visualRect(view.transcript_model.index(row)).topLeft() + QPoint(view.content_shift(), 0)
    )


def at(view: TranscriptView, row: int, rect: QRect) -> QPoint:
    return at_rect(view, row, rect).center()


def snapshot(view: TranscriptView, row: int, rect: QRect) -> QImage:
    """What is drawn there."""
    return view.viewport().grab(at_rect(view, row, rect)).toImage()


def inked(image: QImage, background: QColor) -> int:
    """How many pixels differ clearly from the background."""
    count = 0
    for y in range(image.height()):
        for x in range(image.width()):
            c = image.pixelColor(x, y)
            if (
                abs(c.red() - background.red())
                + abs(c.green() - background.green())
                + abs(c.blue() - background.blue())
                > 60
            ):
                count += 1
    return count


def test_each_message_shows_its_actions_on_hover(qtbot: QtBot, make_view: Any) -> None:
    model, view = make_view([Msg(1, 1, "user", "Question?"), Msg(2, 1, "assistant", "Answer.")])
    model.set_summary(1, "3 tokens · 40.0 tok/s")
    delegate = view.delegate
    assert [a.name for a in delegate.layout(0).actions] == ["copy", "edit"]
    assert [a.name for a in delegate.layout(1).actions] == ["copy", "regenerate"]
    base = view.palette().color(view.viewport().backgroundRole())
    reply_actions = delegate.layout(1).actions
    strip = reply_actions[0].rect.united(reply_actions[-1].rect)
    heights = [delegate.layout(r).height for r in range(2)]

    # Not drawn until the pointer is over the message; drawn then, and the text does not move.
    assert inked(snapshot(view, 1, strip), base) == 0
    qtbot.mouseMove(view.viewport(), at(view, 1, delegate.layout(1).frame))
    assert view.hovered_target(1) == "" and view.hovered_target(0) is None
    assert inked(snapshot(view, 1, strip), base) > 20
    assert [delegate.layout(r).height for r in range(2)] == heights

    with qtbot.waitSignal(view.sig_regenerate_requested) as regenerate:
        qtbot.mouseClick(view.viewport(), Qt.MouseButton.LeftButton, pos=at(view, 1, reply_actions[1].rect))
    assert regenerate.args == [1]
    with qtbot.waitSignal(view.sig_copy_requested) as copy:
        qtbot.mouseClick(view.viewport(), Qt.MouseButton.LeftButton, pos=at(view, 1, reply_actions[0].rect))
    assert copy.args == [1]

    user_actions = delegate.layout(0).actions
    qtbot.mouseMove(view.viewport(), at(view, 0, user_actions[1].rect))
    assert view.hovered_target(0) == "edit" and view.hovered_target(1) is None
    assert inked(snapshot(view, 1, strip), base) == 0  # the reply's buttons went with the pointer
    assert inked(snapshot(view, 0, user_actions[0].rect.united(user_actions[1].rect)), base) > 20
    with qtbot.waitSignal(view.sig_edit_requested) as edit:
        qtbot.mouseClick(view.viewport(), Qt.MouseButton.LeftButton, pos=at(view, 0, user_actions[1].rect))
    assert edit.args == [0]

    view.set_busy(True)  # a reply is being generated: only Copy is offered
    assert view.target_at(at(view, 0, user_actions[1].rect)) == (0, "")
    assert view.target_at(at(view, 0, user_actions[0].rect)) == (0, "copy")


def test_code_blocks_have_a_copy_button(qtbot: QtBot, make_view: Any) -> None:
    _, view = make_view([Msg(1, 1, "user", "How?"), Msg(2, 1, "assistant", CODE_ANSWER)])
    layout = view.delegate.layout(1)
    assert layout.answer is not None
    (box,) = layout.answer.code_boxes
    assert box.code == (
        "def reverse(text: str) -> str:\n    # slicing walks the string backwards\n    return text[::-1]"
    )
    button = box.copy_rect.translated(layout.answer_pos).toAlignedRect()
    assert box.rect.translated(layout.answer_pos).contains(QRectF(button))  # inside the code's box, at its top right
    assert button.right() > box.rect.translated(layout.answer_pos).center().x()
    # Drawn whether or not the pointer is over the message: a code block always shows how to copy it.
    assert inked(snapshot(view, 1, button), layout.answer.theme.code_bg) > 10

    with qtbot.waitSignal(view.sig_copy_text_requested) as copied:
        qtbot.mouseClick(view.viewport(), Qt.MouseButton.LeftButton, pos=at(view, 1, button))
    assert copied.args == [box.code]
    assert view.copied_code(1) == "code:answer:0" and view.copied_code(0) is None  # it says "Copied" a moment


@pytest.mark.parametrize(
    ("seconds", "label"),
    [(0.02, "a moment"), (0.12, "0.1 s"), (0.4, "0.4 s"), (0.96, "1 s"), (12.4, "12 s"), (125.0, "2 min 5 s")],
)
def test_thought_for_says_tenths_below_a_second(seconds: float, label: str) -> None:
    assert thought_duration(seconds) == label


def test_keyboard_shortcuts_act_on_the_current_message(qtbot: QtBot, make_view: Any) -> None:
    model, view = make_view([Msg(1, 1, "user", "Question?"), Msg(2, 1, "assistant", "Answer.")])
    focus(qtbot, view)
    view.setCurrentIndex(model.index(1))
    with qtbot.waitSignal(view.sig_regenerate_requested) as regenerate:
        qtbot.keyClick(view, Qt.Key.Key_R, Qt.KeyboardModifier.ControlModifier)
    assert regenerate.args == [1]
    with qtbot.waitSignal(view.sig_copy_requested) as copy:
        qtbot.keyClick(view, Qt.Key.Key_C, Qt.KeyboardModifier.ControlModifier)
    assert copy.args == [1]
    qtbot.keyClick(view, Qt.Key.Key_Up)
    assert view.currentIndex().row() == 0
    with qtbot.waitSignal(view.sig_edit_requested) as edit:
        qtbot.keyClick(view, Qt.Key.Key_E, Qt.KeyboardModifier.ControlModifier)
    assert edit.args == [0]


def test_regenerate_is_disabled_while_a_reply_streams(make_view: Any) -> None:
    _, view = make_view([Msg(1, 1, "assistant", "", status="streaming")])
    view.context_menu(0)
    assert not view.action_regenerate.isEnabled()


def test_accessible_names(make_view: Any) -> None:
    model, view = make_view([Msg(1, 1, "user", "Hello there"), Msg(2, 1, "system", "Be brief.")])
    assert view.accessibleName() == "Conversation"
    texts = [model.data(model.index(r), Qt.ItemDataRole.AccessibleTextRole) for r in range(2)]
    assert texts == ["You: Hello there", "System: Be brief."]


def test_row_of_and_update_message(make_view: Any) -> None:
    model, view = make_view(conversation(10))
    assert model.row_of(7) == 7
    assert model.row_of(999) is None
    model.update_message(7, replace(model.message(7), id=70, content="Rewritten"))
    assert model.row_of(70) == 7 and model.row_of(7) is None
    assert model.live_text(7).content == "Rewritten"
    assert_laid_out_exactly(view)


# Screenshots -------------------------------------------------------------------------------


SHOT_ANSWER = """You can reverse a string with **slicing**: a step of `-1` walks it backwards.

```python
def reverse(text: str) -> str:
    \"\"\"Return text backwards.\"\"\"
    return text[::-1]

print(reverse("stride"))  # edirts
```

Slicing copies the string once, so it runs in *O(n)*. For a list, `list.reverse()` works in place."""


@pytest.mark.parametrize(("theme", "palette_factory"), [("light", light_palette), ("dark", dark_palette)])
def test_screenshot(qtbot: QtBot, theme: str, palette_factory: Any, screenshot_dir: Path) -> None:
    model = TranscriptModel()
    view = TranscriptView(model)
    qtbot.addWidget(view)
    view.setPalette(palette_factory())
    model.set_messages(
        [
            Msg(1, 1, "user", "How do I reverse a string in Python?"),
            Msg(
                2,
                1,
                "assistant",
                SHOT_ANSWER,
                reasoning="The user wants the idiomatic way. Slicing.",
                thought_seconds=3.2,
            ),
            Msg(3, 1, "user", "And without slicing?"),
            Msg(
                4,
                1,
                "assistant",
                'Join the characters from `reversed()`:\n\n- `"".join(reversed(text))`',
                status="stopped",
            ),
        ]
    )
    # The lines as reply_summary writes them under real replies.
    model.set_summary(1, "96 tokens · 41.8 tok/s · MTP depth 3 · 72% accepted (64/89) · first token 210 ms")
    model.set_summary(3, "18 tokens · 39.5 tok/s · MTP depth 3 · 69% accepted (11/16) · first token 190 ms")
    view.resize(760, 460)
    view.show()
    qtbot.waitExposed(view)
    view.scrollToTop()
    QApplication.processEvents()
    assert_laid_out_exactly(view)
    last = view.visualRect(model.index(3))
    assert last.bottom() < view.viewport().height(), "the whole exchange fits the shot"

    screenshot_dir.mkdir(parents=True, exist_ok=True)
    pixmap = QPixmap(view.size() * 2)  # 2x, so the docs image stays crisp on high-DPI screens
    pixmap.setDevicePixelRatio(2)
    view.render(pixmap)
    path = screenshot_dir / f"transcript-{theme}.png"
    assert pixmap.save(str(path))

    # What the shot shows: the messages and summary lines as the model holds them, and in the pixels
    # each row drawn, the questions in their bubbles and the answer's code block on its background.
    assert model.data(model.index(1), Qt.ItemDataRole.DisplayRole) == SHOT_ANSWER
    assert [model.data(model.index(row), TranscriptModel.SummaryRole) for row in (1, 3)] == [
        "96 tokens · 41.8 tok/s · MTP depth 3 · 72% accepted (64/89) · first token 210 ms",
        "18 tokens · 39.5 tok/s · MTP depth 3 · 69% accepted (11/16) · first token 190 ms",
    ]
    colours, pixels = view.delegate.theme, rgb_pixels(pixmap)
    offset = view.viewport().mapTo(view, QPoint(0, 0))
    rows = [box(pixels, view.visualRect(model.index(row)).translated(offset), 2) for row in range(4)]
    assert all(drawn_fraction(row, colours.base) > 0.02 for row in rows)
    bubble = [count_colour(row, colours.bubble, tolerance=0) for row in rows]
    assert [n > 5000 for n in bubble] == [True, False, True, False], bubble
    code = [count_colour(row, colours.code_bg, tolerance=0) for row in rows]
    assert [n > 10_000 for n in code] == [False, True, False, False], code
