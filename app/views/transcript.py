"""The chat transcript: a virtualised list of messages (model, delegate, view).

Performance design, so a 5,000-message conversation opens at once and streaming stays cheap:

- `TranscriptView` is a QListView: only rows that intersect the viewport are painted, and
  only their QTextDocuments are ever built (`RowLayout`, in an LRU of `LAYOUT_CACHE` entries
  keyed by (row uid, version, width, tint) so memory stays bounded however far one scrolls).
- Row heights are lazy. `sizeHint` returns the exact height when that row has been laid out at
  this width and version, otherwise a cheap estimate from its text length. Before a paint, the
  view lays out the rows in (and half a screen around) the viewport; when one of them differs
  from what the list assumed, it lays out a screen and a half further each way, relayouts the
  list (only cheap sizeHints: about 8 µs a row) and keeps the first visible message where it
  was, or the bottom when it follows the bottom.
  The layout mode stays SinglePass: Batched would shrink the scroll range on every relayout
  and lose a bottom-anchored position.
- Streaming: `append_stream` appends to a per-row buffer and marks the row dirty; a timer
  publishes dirty rows at most 20 times a second (one dataChanged for that row, one rebuild of
  that row's document), less often when re-rendering a long reply gets slow (`FLUSH_BUDGET`).
  Other rows' documents are never rebuilt. A streaming row's height
  grows in steps of `STREAM_STEP` pixels, so the list relayouts every few lines, not per line.

Streamed text lives in the model (the caller's message object is never mutated): `message(row)`
returns the object last given for the row, `live_text(row)` the text and draft spans including
everything streamed since. When the reply ends, the caller stores the final message and calls
`update_message`, which replaces the buffer with that message's own content.

Draft tint: the answer stays markdown. Draft spans are character ranges of the markdown source;
each rendered character is mapped back to its source character (`markdown.align`), and those
inside a span get a background tint.
"""

from __future__ import annotations

import itertools
import math
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeAlias

from PySide6.QtCore import (
    QAbstractItemModel,
    QAbstractListModel,
    QEvent,
    QModelIndex,
    QObject,
    QPersistentModelIndex,
    QPoint,
    QPointF,
    QRect,
    QRectF,
    QSize,
    Qt,
    QTimer,
    Signal,
)
from PySide6.QtGui import (
    QAction,
    QColor,
    QContextMenuEvent,
    QCursor,
    QFont,
    QFontMetrics,
    QHelpEvent,
    QKeyEvent,
    QKeySequence,
    QMouseEvent,
    QPainter,
    QPainterPath,
    QPen,
    QResizeEvent,
)
from PySide6.QtWidgets import (
    QAbstractItemView,
    QListView,
    QMenu,
    QStyle,
    QStyledItemDelegate,
    QStyleOptionViewItem,
    QToolTip,
    QWidget,
)

from app.views.markdown import LINE_HEIGHT, RenderedText, Theme, blend
from app.views.message_actions import ACTION_SIZE, ActionPainter, MessageAction, action_row

KINDS = ("answer", "reasoning")
ROLE_LABELS = {"user": "You", "assistant": "Assistant", "system": "System"}
BADGES = {"stopped": "Stopped", "error": "Error"}

FLUSH_INTERVAL_MS = 100  # streaming repaints at most 10 times a second,
FLUSH_BUDGET = 0.1  # and spends at most about this share of the GUI thread on it: a long reply
MAX_FLUSH_INTERVAL_MS = 400  # (tens of ms to re-render) repaints less often, down to this
LAYOUT_CACHE = 160  # laid-out rows kept; a screenful is rarely more than 20
STREAM_STEP = 64  # a streaming row's height grows in these steps
FOLLOW_SLACK = 4  # pixels from the bottom that still count as "at the bottom"
SETTLE_PASSES = 4  # a relayout can bring new rows into view; measure those too, a few times
NEAR_SCREENS = 0.5  # rows this close to the viewport get exact heights before they show
PREFETCH_SCREENS = 1.5  # ... and this far when a relayout is due anyway, so the next few scroll steps need none

# Geometry, in pixels.
MAX_COLUMN = 820  # messages sit in a centred column, like modern chat apps
SIDE = 24
ROW_PAD = 10
BUBBLE_PAD_X = 14
BUBBLE_PAD_Y = 9
BUBBLE_RADIUS = 16
BUBBLE_MAX = 0.78  # of the column
HEADER_PAD = 4
REASONING_INDENT = 16
GAP = 8
BADGE_PAD = 7
FOCUS_MARGIN = 6
COPIED_MS = 1500  # how long a code block's button says "Copied"

AnyIndex: TypeAlias = QModelIndex | QPersistentModelIndex


class MessageLike(Protocol):
    """What the transcript reads from a message (app.store.Message has these and more)."""

    @property
    def id(self) -> int: ...
    @property
    def conversation_id(self) -> int: ...  # not read here; callers acting on message(row) need it
    @property
    def role(self) -> str: ...
    @property
    def content(self) -> str: ...
    @property
    def reasoning(self) -> str: ...
    @property
    def status(self) -> str: ...
    @property
    def thought_seconds(self) -> float | None: ...
    @property
    def draft_spans(self) -> Mapping[str, Sequence[Sequence[int]]] | None: ...


@dataclass(frozen=True)
class LiveText:
    """A row's text including everything streamed into it."""

    content: str
    reasoning: str
    draft_spans: dict[str, list[list[int]]]


class RowState:
    """One row: the caller's message plus what the view adds (stream buffer, summary, toggle)."""

    def __init__(self, uid: int, message: MessageLike) -> None:
        self.uid = uid  # identity for caches: unlike a row number or message id, never reused
        self.version = 0  # bumped on every visible change; part of every cache key
        self.summary = ""
        self.expanded: bool | None = None  # None: the default, expanded only while streaming
        self.load(message)

    def load(self, message: MessageLike) -> None:
        self.message = message
        self._text = {"answer": message.content, "reasoning": message.reasoning}
        self._pending: dict[str, list[str]] = {"answer": [], "reasoning": []}
        self._length = {kind: len(text) for kind, text in self._text.items()}
        # Copied only when streaming extends them: thousands of rows can carry long span lists.
        self._spans: dict[str, list[list[int]]] | None = None

    @property
    def role(self) -> str:
        return self.message.role

    @property
    def status(self) -> str:
        return self.message.status

    @property
    def is_expanded(self) -> bool:
        return self.status == "streaming" if self.expanded is None else self.expanded

    def text(self, kind: str) -> str:
        if self._pending[kind]:
            self._text[kind] += "".join(self._pending[kind])
            self._pending[kind].clear()
        return self._text[kind]

    def spans(self, kind: str) -> Sequence[Sequence[int]]:
        if self._spans is not None:
            return self._spans[kind]
        given = self.message.draft_spans
        return given.get(kind, ()) if given else ()

    def append(self, kind: str, text: str, from_draft: bool) -> None:
        start = self._length[kind]
        self._pending[kind].append(text)
        self._length[kind] += len(text)
        if not from_draft or not text:
            return
        if self._spans is None:
            self._spans = {k: [[int(a), int(b)] for a, b in self.spans(k)] for k in KINDS}
        spans = self._spans[kind]
        if spans and spans[-1][1] == start:
            spans[-1][1] = self._length[kind]
        else:
            spans.append([start, self._length[kind]])

    def live(self) -> LiveText:
        spans = {k: [[int(a), int(b)] for a, b in self.spans(k)] for k in KINDS}
        return LiveText(self.text("answer"), self.text("reasoning"), spans)


class TranscriptModel(QAbstractListModel):
    """Messages of one conversation, with streaming buffers; rows only ever append."""

    SummaryRole = Qt.ItemDataRole.UserRole + 1  # str: the stats line under a finished reply

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._rows: list[RowState] = []
        self._by_id: dict[int, int] = {}
        self._uids = itertools.count()
        self._dirty: set[int] = set()
        self._flush_timer = QTimer(self)
        self._flush_timer.setSingleShot(True)
        self._flush_timer.setInterval(FLUSH_INTERVAL_MS)
        self._flush_timer.timeout.connect(self._flush)

    # Qt model ------------------------------------------------------------------------

    def rowCount(self, parent: AnyIndex | None = None) -> int:
        return 0 if parent is not None and parent.isValid() else len(self._rows)

    def data(self, index: AnyIndex, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if not index.isValid() or not 0 <= index.row() < len(self._rows):
            return None
        state = self._rows[index.row()]
        if role == Qt.ItemDataRole.DisplayRole:
            return state.text("answer")
        if role == Qt.ItemDataRole.AccessibleTextRole:
            label = ROLE_LABELS.get(state.role, state.role.capitalize())
            badge = BADGES.get(state.status)
            prefix = f"{label} ({badge.lower()})" if badge else label
            return f"{prefix}: {state.text('answer')}"
        if role == Qt.ItemDataRole.AccessibleDescriptionRole:
            return state.summary
        if role == self.SummaryRole:
            return state.summary
        return None

    def flags(self, index: AnyIndex) -> Qt.ItemFlag:
        return Qt.ItemFlag.ItemIsEnabled | Qt.ItemFlag.ItemIsSelectable if index.isValid() else Qt.ItemFlag.NoItemFlags

    # Transcript API --------------------------------------------------------------------

    def set_messages(self, messages: Sequence[MessageLike], summaries: Mapping[int, str] | None = None) -> None:
        """Replace every row (opening a conversation); summaries: the line under a reply, by row.

        Summaries come in with the rows: set one by one, each would be a dataChanged and a
        re-layout (2.5 s for a 5,000-message chat).
        """
        self.beginResetModel()
        self._flush_timer.stop()
        self._dirty.clear()
        self._rows = [RowState(next(self._uids), m) for m in messages]
        for row, summary in (summaries or {}).items():
            self._rows[row].summary = summary
        self._by_id = {m.id: row for row, m in enumerate(messages)}
        self.endResetModel()

    def append_message(self, message: MessageLike) -> int:
        row = len(self._rows)
        self.beginInsertRows(QModelIndex(), row, row)
        self._rows.append(RowState(next(self._uids), message))
        self._by_id[message.id] = row
        self.endInsertRows()
        return row

    def message(self, row: int) -> MessageLike:
        """The object last given for this row; streamed text is in live_text(row)."""
        return self._rows[row].message

    def live_text(self, row: int) -> LiveText:
        return self._rows[row].live()

    def state(self, row: int) -> RowState:
        return self._rows[row]

    def row_of(self, message_id: int) -> int | None:
        return self._by_id.get(message_id)

    def update_message(self, row: int, message: MessageLike) -> None:
        """Replace one row's message (final text, status, stats); drops its stream buffer."""
        state = self._rows[row]
        if self._by_id.get(state.message.id) == row:
            del self._by_id[state.message.id]
        self._by_id[message.id] = row
        state.load(message)
        self._dirty.discard(row)
        self._changed(row)

    def append_stream(self, row: int, kind: str, text: str, from_draft: bool) -> None:
        """Append streamed text to the row's answer or reasoning; repaint coalesced at 20 Hz."""
        if kind not in KINDS:
            raise ValueError(f"unknown text kind {kind!r}")
        self._rows[row].append(kind, text, from_draft)
        self._dirty.add(row)
        if not self._flush_timer.isActive():
            self._flush_timer.start()

    def set_summary(self, row: int, summary: str) -> None:
        if self._rows[row].summary != summary:
            self._rows[row].summary = summary
            self._changed(row)

    def set_reasoning_expanded(self, row: int, expanded: bool) -> None:
        self._rows[row].expanded = expanded
        self._changed(row)

    def _changed(self, row: int) -> None:
        self._rows[row].version += 1
        index = self.index(row)
        self.dataChanged.emit(index, index)

    def _flush(self) -> None:
        start = time.perf_counter()
        dirty, self._dirty = sorted(self._dirty), set()
        for row in dirty:
            self._changed(row)  # views re-render the row on screen before this returns
        cost_ms = (time.perf_counter() - start) * 1000
        interval = min(MAX_FLUSH_INTERVAL_MS, max(FLUSH_INTERVAL_MS, round(cost_ms / FLUSH_BUDGET)))
        self._flush_timer.setInterval(interval)


# Delegate ----------------------------------------------------------------------------------


@dataclass
class RowLayout:
    """One row laid out at one width; coordinates relative to the row's top-left corner."""

    height: int
    frame: QRect  # the message's area: focus ring, hit tests
    answer: RenderedText | None = None
    answer_pos: QPointF = field(default_factory=QPointF)
    answer_color: QColor | None = None
    bubble: QRect | None = None
    header: QRect | None = None  # the reasoning toggle
    header_text: str = ""
    reasoning: RenderedText | None = None
    reasoning_pos: QPointF = field(default_factory=QPointF)
    placeholder: QRect | None = None  # "…" while a reply has no text yet
    footer: QRect | None = None
    badge: str = ""
    summary: str = ""
    actions: list[MessageAction] = field(default_factory=list)  # shown while the pointer is over the row


def thought_label(state: RowState) -> str:
    if state.status == "streaming" and not state.text("answer"):
        return "Thinking…"
    seconds = state.message.thought_seconds
    if seconds is None:
        return "Thought"
    return f"Thought for {thought_duration(seconds)}"


def thought_duration(seconds: float) -> str:
    """How long a reply thought, as a person would say it: "a moment", "0.4 s", "12 s", "2 min 5 s"."""
    if seconds < 0.05:
        return "a moment"
    if seconds < 0.95:  # tenths below a second: "1 s" for a 0.12 s thought would be five times too long
        return f"{seconds:.1f} s"
    n = round(seconds)
    return f"{n} s" if n < 60 else f"{n // 60} min {n % 60} s"


class TranscriptDelegate(QStyledItemDelegate):
    """Lays out and paints rows; caches layouts (LRU) and exact heights per row version and width."""

    def __init__(self, view: TranscriptView) -> None:
        super().__init__(view)
        self._view = view
        self.tint_drafts = False
        self._layouts: OrderedDict[tuple[int, int, int, bool], RowLayout] = OrderedDict()
        self._heights: dict[int, tuple[int, int, int]] = {}  # uid -> (version, width, height)
        self._estimates: dict[int, tuple[int, int, int]] = {}
        self._theme: Theme | None = None
        self._metrics: tuple[int, int] | None = None  # line spacing, average character width
        self._actions = ActionPainter()

    def reset(self) -> None:
        """Forget every layout and height (new conversation, palette or font)."""
        self._layouts.clear()
        self._heights.clear()
        self._estimates.clear()
        self._theme = None
        self._metrics = None

    @property
    def theme(self) -> Theme:
        if self._theme is None:
            self._theme = Theme.from_palette(self._view.palette())
        return self._theme

    def width(self) -> int:
        return self._view.layout_width

    # Sizes -------------------------------------------------------------------------------

    def sizeHint(self, option: QStyleOptionViewItem, index: AnyIndex) -> QSize:
        return QSize(1, self.height(index.row()))

    def height(self, row: int) -> int:
        """Exact when this row version was laid out at this width, else an estimate."""
        state = self._view.transcript_model.state(row)
        width = self.width()
        for cache in (self._heights, self._estimates):
            known = cache.get(state.uid)
            if known and known[0] == state.version and known[1] == width:
                return known[2]
        height = self._estimate(state, width)
        self._estimates[state.uid] = (state.version, width, height)
        return height

    def _estimate(self, state: RowState, width: int) -> int:
        if self._metrics is None:
            fm = QFontMetrics(self._view.font())
            line = math.ceil(fm.lineSpacing() * LINE_HEIGHT / 100)
            self._metrics = (line, max(1, int(fm.averageCharWidth())))
        line, char_width = self._metrics
        column = _column(width)[1]
        text_width = column * BUBBLE_MAX - 2 * BUBBLE_PAD_X if state.role == "user" else column
        per_line = max(8, int(text_width / char_width))

        def lines(text: str) -> int:
            return sum(1 + len(part) // per_line for part in text.split("\n")) if text else 0

        height = 2 * ROW_PAD + line * max(1, lines(state.text("answer")))
        if state.role == "user":
            height += 2 * BUBBLE_PAD_Y
        if state.text("reasoning"):
            height += line + 2 * HEADER_PAD + GAP
            if state.is_expanded:
                height += line * lines(state.text("reasoning")) + GAP
        if state.role == "assistant" and state.status != "streaming":
            height += max(line, ACTION_SIZE) + GAP
        return height

    # Layout ------------------------------------------------------------------------------

    def layout(self, row: int) -> RowLayout:
        """The row laid out at the current width (built on a cache miss); records its height."""
        state = self._view.transcript_model.state(row)
        width = self.width()
        key = (state.uid, state.version, width, self.tint_drafts)
        layout = self._layouts.get(key)
        if layout is None:
            layout = self.build_layout(state, width)
            self._layouts[key] = layout
            if len(self._layouts) > LAYOUT_CACHE:
                self._layouts.popitem(last=False)
        else:
            self._layouts.move_to_end(key)
        self._heights[state.uid] = (state.version, width, layout.height)
        return layout

    def build_layout(self, state: RowState, width: int) -> RowLayout:
        if state.role == "user":
            return self._layout_bubble(state, width)
        if state.role == "system":
            return self._layout_system(state, width)
        return self._layout_reply(state, width)

    def _rendered(self, state: RowState, kind: str, width: float, font: QFont | None = None) -> RenderedText:
        spans = state.spans(kind) if self.tint_drafts else None
        return RenderedText(
            state.text(kind), font=font or self._view.font(), width=width, theme=self.theme, tint_spans=spans
        )

    def _layout_bubble(self, state: RowState, width: int) -> RowLayout:
        x, column = _column(width)
        text = self._rendered(state, "answer", max(40, int(column * BUBBLE_MAX) - 2 * BUBBLE_PAD_X))
        text.shrink_to_fit()
        inner_w, inner_h = math.ceil(text.doc.textWidth()), math.ceil(text.height)
        outer_w = inner_w + 2 * BUBBLE_PAD_X
        bubble = QRect(x + column - outer_w, ROW_PAD, outer_w, inner_h + 2 * BUBBLE_PAD_Y)
        layout = RowLayout(height=0, frame=bubble, answer=text, bubble=bubble)
        # Beside the bubble, level with its last line: the row does not grow for them.
        layout.actions = action_row("user", bubble.left() - GAP, bubble.bottom() + 1 - ACTION_SIZE - BUBBLE_PAD_Y // 2)
        layout.answer_pos = QPointF(bubble.x() + BUBBLE_PAD_X, bubble.y() + BUBBLE_PAD_Y)
        self._finish(layout, state, bubble.bottom() + 1, x + column - bubble.width(), bubble.width())
        return layout

    def _layout_system(self, state: RowState, width: int) -> RowLayout:
        x, column = _column(width)
        text = self._rendered(state, "answer", int(column * BUBBLE_MAX), self._small_font())
        text.shrink_to_fit()
        w, h = math.ceil(text.doc.textWidth()), math.ceil(text.height)
        frame = QRect(x + (column - w) // 2, ROW_PAD, w, h)
        layout = RowLayout(height=0, frame=frame, answer=text, answer_color=self.theme.muted)
        layout.answer_pos = QPointF(frame.topLeft())
        self._finish(layout, state, frame.bottom() + 1, x, column)
        return layout

    def _layout_reply(self, state: RowState, width: int) -> RowLayout:
        x, column = _column(width)
        layout = RowLayout(height=0, frame=QRect())
        y = ROW_PAD
        if state.text("reasoning"):
            layout.header_text = thought_label(state)
            fm = QFontMetrics(self._view.font())
            text_w = fm.horizontalAdvance(layout.header_text)
            layout.header = QRect(x, y, REASONING_INDENT + text_w + HEADER_PAD, fm.height() + 2 * HEADER_PAD)
            y = layout.header.bottom() + 1
            if state.is_expanded:
                reasoning = self._rendered(state, "reasoning", column - REASONING_INDENT)
                layout.reasoning = reasoning
                layout.reasoning_pos = QPointF(x + REASONING_INDENT, y + GAP // 2)
                y += GAP // 2 + math.ceil(reasoning.height)
            y += GAP
        answer = state.text("answer")
        if answer:
            layout.answer = self._rendered(state, "answer", column)
            layout.answer_pos = QPointF(x, y)
            y += math.ceil(layout.answer.height)
        elif state.status == "streaming":
            layout.placeholder = QRect(x, y, column, QFontMetrics(self._view.font()).height())
            y = layout.placeholder.bottom() + 1
        layout.frame = QRect(x, ROW_PAD, column, y - ROW_PAD)
        self._finish(layout, state, y, x, column)
        if state.status == "streaming":
            layout.height = math.ceil(layout.height / STREAM_STEP) * STREAM_STEP
        return layout

    def _finish(self, layout: RowLayout, state: RowState, y: int, x: int, width: int) -> None:
        """Add the footer (status badge, stats summary; a finished reply's action buttons at its right)
        under the message and set the height."""
        layout.badge = BADGES.get(state.status, "")
        if state.status != "streaming":
            layout.summary = state.summary
        text_height = QFontMetrics(self._small_font()).height() + 4
        reply_done = state.role == "assistant" and state.status != "streaming"
        if layout.badge or layout.summary or reply_done:
            height = max(text_height, ACTION_SIZE) if reply_done else text_height
            layout.footer = QRect(x, y + GAP // 2, width, height)
            y = layout.footer.bottom() + 1
            if reply_done:
                layout.actions = action_row("assistant", x + width, layout.footer.y())
        layout.height = y + ROW_PAD

    def _small_font(self) -> QFont:
        font = QFont(self._view.font())
        font.setPointSizeF(font.pointSizeF() * 0.87)
        return font

    # Painting ----------------------------------------------------------------------------

    def paint(self, painter: QPainter, option: QStyleOptionViewItem, index: AnyIndex) -> None:
        layout = self.layout(index.row())
        if layout.height != self._view.allocated_height(index.row()):
            self._view.request_settle()  # the list still assumed an estimate: draw clipped, then fix
        theme = self.theme
        painter.save()
        painter.setClipRect(option.rect)
        painter.translate(option.rect.topLeft() + QPoint(self._view.content_shift(), 0))
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        keyboard_focus = QStyle.StateFlag.State_HasFocus | QStyle.StateFlag.State_KeyboardFocusChange
        if option.state & keyboard_focus == keyboard_focus:  # a ring for keyboard users, not after every click
            painter.setPen(QPen(theme.accent, 1.5))
            painter.setBrush(Qt.BrushStyle.NoBrush)
            ring = QRectF(layout.frame).adjusted(-FOCUS_MARGIN, -FOCUS_MARGIN / 2, FOCUS_MARGIN, FOCUS_MARGIN / 2)
            radius = BUBBLE_RADIUS + FOCUS_MARGIN / 2 if layout.bubble is not None else 10
            painter.drawRoundedRect(ring, radius, radius)
        if layout.bubble is not None:
            painter.setPen(Qt.PenStyle.NoPen)
            painter.setBrush(theme.bubble)
            painter.drawRoundedRect(QRectF(layout.bubble), BUBBLE_RADIUS, BUBBLE_RADIUS)
        if layout.header is not None:
            self._paint_header(painter, layout, theme)
        row = index.row()
        hovered = self._view.hovered_target(row)
        copied = self._view.copied_code(row)
        if layout.reasoning is not None:
            top = layout.reasoning_pos.y()
            header = layout.header or QRect()
            bar = QRectF(header.x() + _chevron_radius(header), top, 2, layout.reasoning.height)  # under the chevron
            painter.fillRect(bar, blend(theme.base, theme.muted, 0.45))
            layout.reasoning.draw(
                painter,
                layout.reasoning_pos,
                theme.muted,
                hovered_copy=_code_index(hovered, "reasoning"),
                copied=_code_index(copied, "reasoning"),
            )
        if layout.answer is not None:
            layout.answer.draw(
                painter,
                layout.answer_pos,
                layout.answer_color or theme.text,
                hovered_copy=_code_index(hovered, "answer"),
                copied=_code_index(copied, "answer"),
            )
        if layout.placeholder is not None:
            painter.setPen(theme.muted)
            painter.drawText(layout.placeholder, Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter, "…")
        if layout.footer is not None:
            self._paint_footer(painter, layout, theme)
        if hovered is not None and layout.actions:
            self._actions.paint(painter, layout.actions, theme, hovered, self._view.hidden_actions())
        painter.restore()

    def _paint_header(self, painter: QPainter, layout: RowLayout, theme: Theme) -> None:
        assert layout.header is not None
        rect = layout.header
        # A chevron drawn as a path (no font needs the glyph), its ink starting at the column's edge.
        r = _chevron_radius(rect)
        cx, cy = rect.x() + r + 1, rect.center().y() + 0.5
        path = QPainterPath()
        if layout.reasoning is not None:  # expanded: pointing down
            path.moveTo(cx - r, cy - r / 2)
            path.lineTo(cx, cy + r / 2)
            path.lineTo(cx + r, cy - r / 2)
        else:
            path.moveTo(cx - r / 2, cy - r)
            path.lineTo(cx + r / 2, cy)
            path.lineTo(cx - r / 2, cy + r)
        painter.setPen(QPen(theme.muted, 1.6, Qt.PenStyle.SolidLine, Qt.PenCapStyle.RoundCap))
        painter.setBrush(Qt.BrushStyle.NoBrush)
        painter.drawPath(path)
        painter.setFont(self._view.font())
        text_rect = rect.adjusted(REASONING_INDENT, 0, 0, 0)  # lines up with the reasoning text
        painter.drawText(text_rect, Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter, layout.header_text)

    def _paint_footer(self, painter: QPainter, layout: RowLayout, theme: Theme) -> None:
        assert layout.footer is not None
        font = self._small_font()
        fm = QFontMetrics(font)
        painter.setFont(font)
        rect = QRect(layout.footer)
        if layout.actions:  # room for the buttons, drawn only while the pointer is over the row
            rect.setRight(layout.actions[0].rect.left() - GAP)
        if layout.badge:
            color = theme.error if layout.badge == BADGES["error"] else theme.muted
            pill_height = min(rect.height(), fm.height() + 4)
            pill_top = rect.y() + (rect.height() - pill_height) // 2
            pill = QRect(rect.x(), pill_top, fm.horizontalAdvance(layout.badge) + 2 * BADGE_PAD, pill_height)
            painter.setPen(Qt.PenStyle.NoPen)
            painter.setBrush(blend(theme.base, color, 0.16))
            painter.drawRoundedRect(QRectF(pill), pill.height() / 2, pill.height() / 2)
            painter.setPen(color)
            painter.drawText(pill, Qt.AlignmentFlag.AlignCenter, layout.badge)
            rect.setLeft(pill.right() + 1 + GAP)
        if layout.summary:
            painter.setPen(theme.muted)
            text = fm.elidedText(layout.summary, Qt.TextElideMode.ElideRight, rect.width())
            painter.drawText(rect, Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter, text)

    def header_rect(self, row: int) -> QRect | None:
        """The reasoning toggle of a row, in row coordinates, when it has one."""
        return self.layout(row).header

    def targets(self, row: int) -> list[tuple[str, QRect]]:
        """What can be clicked in a row besides the reasoning toggle, in row coordinates: the action
        buttons ("copy", "edit", "regenerate") and each code block's Copy ("code:answer:0", ...)."""
        layout = self.layout(row)
        out = [(action.name, action.rect) for action in layout.actions]
        for kind, text, origin in (
            ("reasoning", layout.reasoning, layout.reasoning_pos),
            ("answer", layout.answer, layout.answer_pos),
        ):
            for i, box in enumerate(text.code_boxes if text is not None else ()):
                out.append((f"code:{kind}:{i}", box.copy_rect.translated(origin).toAlignedRect()))
        return out

    def code_text(self, row: int, target: str) -> str:
        """The text of the code block a "code:<kind>:<n>" target names."""
        _, kind, number = target.split(":")
        layout = self.layout(row)
        text = layout.answer if kind == "answer" else layout.reasoning
        return text.code_boxes[int(number)].code if text is not None else ""


def _code_index(target: str | None, kind: str) -> int:
    """The code block a target names in this text ("code:answer:2" -> 2 for "answer"), else -1."""
    if target and target.startswith(f"code:{kind}:"):
        return int(target.rsplit(":", 1)[1])
    return -1


def _chevron_radius(header: QRect) -> float:
    return (header.height() - 2 * HEADER_PAD) / 5


def _column(width: int) -> tuple[int, int]:
    """x and width of the centred message column in a row of this width."""
    column = max(80, min(width - 2 * SIDE, MAX_COLUMN))
    return max(0, (width - column) // 2), column


# View --------------------------------------------------------------------------------------


class TranscriptView(QListView):
    """The transcript list. It emits requests; controllers act on them."""

    sig_copy_requested = Signal(int)  # row
    sig_regenerate_requested = Signal(int)
    sig_edit_requested = Signal(int)
    sig_copy_text_requested = Signal(str)  # a code block's Copy button: its text

    def __init__(self, model: TranscriptModel | None = None, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._model: TranscriptModel | None = None
        self.layout_width = 1  # see _update_layout_width
        self._update_layout_width()
        self._following = True
        self._busy = False  # inside a layout or settle: scroll signals are ours, not the user's
        self._settle_timer = QTimer(self)
        self._settle_timer.setSingleShot(True)
        self._settle_timer.timeout.connect(self._settle)
        self._hover: tuple[int, str] | None = None  # the row under the pointer, and the button there ("" none)
        self._copied: tuple[int, str] | None = None  # (row uid, code target) just copied: it says "Copied"
        self._copied_timer = QTimer(self)
        self._copied_timer.setSingleShot(True)
        self._copied_timer.setInterval(COPIED_MS)
        self._copied_timer.timeout.connect(self._clear_copied)
        self._busy_reply = False  # a reply is being generated: Edit and Regenerate are not offered
        self._delegate = TranscriptDelegate(self)
        self.setItemDelegate(self._delegate)
        self.setVerticalScrollMode(QAbstractItemView.ScrollMode.ScrollPerPixel)
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.setFrameShape(QListView.Shape.NoFrame)
        self.setMouseTracking(True)  # pointing-hand cursor over reasoning toggles
        self.setAccessibleName("Conversation")
        self.setAccessibleDescription("Messages of the current conversation, oldest first")

        self.verticalScrollBar().valueChanged.connect(self._on_scrolled)

        # Space is handled in keyPressEvent (the list view would take it as a shortcut); "\t" shows it in menus.
        self.action_toggle_reasoning = self._action("Show thinking\tSpace", None, self.toggle_reasoning)
        self.action_copy = self._action("Copy", QKeySequence.StandardKey.Copy, self.sig_copy_requested.emit)
        self.action_regenerate = self._action("Regenerate", "Ctrl+R", self.sig_regenerate_requested.emit)
        self.action_edit = self._action("Edit and resend", "Ctrl+E", self.sig_edit_requested.emit)
        self._update_actions()
        if model is not None:
            self.setModel(model)

    def setModel(self, model: QAbstractItemModel | None) -> None:
        if not isinstance(model, TranscriptModel):
            raise TypeError("TranscriptView shows a TranscriptModel")
        if self._model is not None:
            self.transcript_model.modelReset.disconnect(self._on_reset)
        self._model = model
        self._delegate.reset()
        super().setModel(model)
        model.modelReset.connect(self._on_reset)
        self._update_actions()

    @property
    def transcript_model(self) -> TranscriptModel:
        if self._model is None:
            raise RuntimeError("TranscriptView has no model yet")
        return self._model

    @property
    def delegate(self) -> TranscriptDelegate:
        return self._delegate

    # Public API --------------------------------------------------------------------------

    def set_tint_drafts(self, on: bool) -> None:
        """Tint the answer text that came from accepted MTP drafts (heights do not change)."""
        if self._delegate.tint_drafts != on:
            self._delegate.tint_drafts = on
            self.viewport().update()

    def tint_drafts(self) -> bool:
        return self._delegate.tint_drafts

    def is_following(self) -> bool:
        return self._following

    def scroll_to_bottom_if_following(self) -> None:
        if self._following:
            self.scrollToBottom()

    def toggle_reasoning(self, row: int) -> None:
        state = self.transcript_model.state(row)
        if state.text("reasoning"):
            self.transcript_model.set_reasoning_expanded(row, not state.is_expanded)

    def context_menu(self, row: int) -> QMenu:
        """The actions for one message (it becomes the current one); the caller shows it."""
        self.setCurrentIndex(self.transcript_model.index(row))
        menu = QMenu(self)
        for action in (self.action_toggle_reasoning, self.action_copy, self.action_regenerate, self.action_edit):
            if action.isVisible():
                menu.addAction(action)
        return menu

    def request_settle(self) -> None:
        self._settle_timer.start(0)

    def set_busy(self, busy: bool) -> None:
        """A reply is being generated: the hover buttons offer Copy only (Edit and Regenerate would wait)."""
        if busy != self._busy_reply:
            self._busy_reply = busy
            self.viewport().update()

    def hidden_actions(self) -> frozenset[str]:
        return frozenset({"edit", "regenerate"}) if self._busy_reply else frozenset()

    # Hover buttons -------------------------------------------------------------------------

    def hovered_target(self, row: int) -> str | None:
        """None when the pointer is not over this row; else the button under it ("" for none)."""
        return self._hover[1] if self._hover is not None and self._hover[0] == row else None

    def copied_code(self, row: int) -> str | None:
        """The code block in this row whose Copy was just clicked, if any."""
        if self._copied is None or self._model is None or not 0 <= row < self._model.rowCount():
            return None
        return self._copied[1] if self._copied[0] == self._model.state(row).uid else None

    def target_at(self, pos: QPoint) -> tuple[int, str] | None:
        """The row at a viewport position, with the button there ("" when none); None off the rows."""
        index = self.indexAt(pos)
        if not index.isValid():
            return None
        row = int(index.row())
        local = pos - self.visualRect(index).topLeft() - QPoint(self.content_shift(), 0)
        for name, rect in self._delegate.targets(row):
            if name in self.hidden_actions():
                continue
            if rect.contains(local):
                return row, name
        return row, ""

    def _set_hover(self, hover: tuple[int, str] | None) -> None:
        if hover == self._hover:
            return
        for previous_or_new in (self._hover, hover):
            if previous_or_new is not None and self._model is not None:
                self.viewport().update(self.visualRect(self.transcript_model.index(previous_or_new[0])))
        self._hover = hover

    def _click_target(self, row: int, target: str) -> None:
        if target.startswith("code:"):
            self.sig_copy_text_requested.emit(self._delegate.code_text(row, target))
            self._copied = (self.transcript_model.state(row).uid, target)
            self._copied_timer.start()
            self.viewport().update(self.visualRect(self.transcript_model.index(row)))
            return
        self.setCurrentIndex(self.transcript_model.index(row))
        signal = {
            "copy": self.sig_copy_requested,
            "edit": self.sig_edit_requested,
            "regenerate": self.sig_regenerate_requested,
        }[target]
        signal.emit(row)

    def _clear_copied(self) -> None:
        self._copied = None
        self.viewport().update()

    # Actions -----------------------------------------------------------------------------

    def _action(self, text: str, keys: str | QKeySequence.StandardKey | None, emit: Callable[[int], object]) -> QAction:
        action = QAction(text, self)
        if keys is not None:
            action.setShortcut(QKeySequence(keys))
            action.setShortcutContext(Qt.ShortcutContext.WidgetShortcut)
        action.triggered.connect(lambda: self._on_action(emit))
        self.addAction(action)
        return action

    def _on_action(self, emit: Callable[[int], object]) -> None:
        row = self.currentIndex().row()
        if row >= 0:
            emit(row)

    def _update_actions(self) -> None:
        row = self.currentIndex().row()
        state = self.transcript_model.state(row) if self._model is not None and row >= 0 else None
        role = state.role if state else ""
        has_reasoning = bool(state and state.text("reasoning"))
        self.action_toggle_reasoning.setVisible(has_reasoning)
        if state and has_reasoning:
            label = "Hide thinking" if state.is_expanded else "Show thinking"
            self.action_toggle_reasoning.setText(f"{label}\tSpace")
        self.action_copy.setVisible(state is not None)
        self.action_regenerate.setVisible(role == "assistant")
        self.action_regenerate.setEnabled(bool(state and state.status != "streaming"))
        self.action_edit.setVisible(role == "user")

    def currentChanged(self, current: AnyIndex, previous: AnyIndex) -> None:
        super().currentChanged(current, previous)
        self._update_actions()

    def contextMenuEvent(self, event: QContextMenuEvent) -> None:
        if event.reason() == QContextMenuEvent.Reason.Mouse:
            index = self.indexAt(event.pos())
            position = event.globalPos()
        else:  # keyboard: the menu key on the current message
            index = self.currentIndex()
            position = self.viewport().mapToGlobal(self.visualRect(index).topLeft() + QPoint(SIDE, ROW_PAD))
        if index.isValid():
            self.context_menu(index.row()).exec(position)

    def keyPressEvent(self, event: QKeyEvent) -> None:
        toggle_keys = (Qt.Key.Key_Space, Qt.Key.Key_Return, Qt.Key.Key_Enter)
        row = self.currentIndex().row()
        if (
            event.key() in toggle_keys
            and not event.modifiers()
            and row >= 0
            and self.action_toggle_reasoning.isVisible()
        ):
            self.toggle_reasoning(row)
            event.accept()
            return
        super().keyPressEvent(event)

    # Mouse -------------------------------------------------------------------------------

    def _header_at(self, pos: QPoint) -> int | None:
        index = self.indexAt(pos)
        if not index.isValid():
            return None
        header = self._delegate.header_rect(index.row())
        origin = self.visualRect(index).topLeft() + QPoint(self.content_shift(), 0)
        if header is not None and header.translated(origin).contains(pos):
            return int(index.row())
        return None

    def mousePressEvent(self, event: QMouseEvent) -> None:
        pos = event.position().toPoint()
        left = event.button() == Qt.MouseButton.LeftButton
        target = self.target_at(pos) if left else None
        if target is not None and target[1]:
            self._click_target(*target)
            event.accept()
            return
        row = self._header_at(pos) if left else None
        if row is None:
            super().mousePressEvent(event)
            return
        self.setCurrentIndex(self.transcript_model.index(row))
        self.toggle_reasoning(row)
        event.accept()

    def mouseMoveEvent(self, event: QMouseEvent) -> None:
        pos = event.position().toPoint()
        target = self.target_at(pos)
        self._set_hover(target)
        over = self._header_at(pos) is not None or bool(target and target[1])
        self.viewport().setCursor(Qt.CursorShape.PointingHandCursor if over else Qt.CursorShape.ArrowCursor)
        super().mouseMoveEvent(event)

    def viewportEvent(self, event: QEvent) -> bool:
        if event.type() == QEvent.Type.Leave:
            self._set_hover(None)
        elif event.type() == QEvent.Type.ToolTip and isinstance(event, QHelpEvent):
            target = self.target_at(event.pos())
            tip = self._tooltip(*target) if target is not None else ""
            if tip:
                QToolTip.showText(event.globalPos(), tip, self.viewport())
            else:
                QToolTip.hideText()
            return True
        return super().viewportEvent(event)

    def _tooltip(self, row: int, target: str) -> str:
        if target.startswith("code:"):
            return "Copy the code"
        layout = self._delegate.layout(row)
        return next((action.tooltip for action in layout.actions if action.name == target), "")

    # Layout: lazy exact heights, anchored ------------------------------------------------

    def doItemsLayout(self) -> None:
        if self._busy:
            super().doItemsLayout()
            return
        self._busy = True
        try:
            anchor = self._anchor()
            super().doItemsLayout()
            self._settle_locked(anchor, relaid=True)
        finally:
            self._busy = False

    def _settle(self) -> None:
        """Lay out the rows around the viewport exactly; relayout the list if that changed heights."""
        if self._busy:
            return
        self._busy = True
        try:
            self._settle_locked(self._anchor(), relaid=False)
        finally:
            self._busy = False

    def _settle_locked(self, anchor: tuple[int, int] | None, relaid: bool) -> None:
        for _ in range(SETTLE_PASSES):
            if relaid:
                self._restore(anchor)
            if not self._measure(NEAR_SCREENS):
                return
            self._measure(PREFETCH_SCREENS)  # a relayout is due anyway: cover the next scroll steps too
            super().doItemsLayout()
            relaid = True
        self._restore(anchor)

    def _measure(self, screens: float) -> bool:
        """Lay out the rows within this many screens of the viewport; True when the list had another height."""
        count = self.transcript_model.rowCount() if self._model is not None else 0
        if count == 0 or not self.isVisible():
            return False
        if not self.visualRect(self.transcript_model.index(count - 1)).isValid():
            return False  # rows without positions: a relayout is posted, and it measures when it runs
        margin = int(self.viewport().height() * screens)
        stale = False
        for row in range(self._row_at(-margin), self._row_at(self.viewport().height() + margin) + 1):
            stale = self._delegate.layout(row).height != self.allocated_height(row) or stale
        return stale

    def allocated_height(self, row: int) -> int:
        """The height the list gave the row at its last layout.

        Not visualRect().height(): QListView sizes that rect from the current sizeHint, while row
        positions stay those of the last layout.
        """
        model = self.transcript_model
        top = self.visualRect(model.index(row)).top()
        if row + 1 < model.rowCount():
            return int(self.visualRect(model.index(row + 1)).top() - top)
        return int(self.contentsSize().height() - self.verticalOffset() - top)

    def _row_at(self, y: int) -> int:
        """The row at viewport height y, clamped to the rows there are (indexAt fails off screen)."""
        model = self.transcript_model
        low, high = 0, model.rowCount() - 1
        while low < high:  # the last row whose top is at or above y
            mid = (low + high + 1) // 2
            if self.visualRect(model.index(mid)).top() <= y:
                low = mid
            else:
                high = mid - 1
        return low

    def _anchor(self) -> tuple[int, int] | None:
        """What to keep in place across a relayout: None for the bottom, else (row, its top)."""
        if self._following:
            return None
        if self._model is None or self._model.rowCount() == 0:
            return None
        row = self._row_at(0)
        return row, self.visualRect(self._model.index(row)).top()

    def _restore(self, anchor: tuple[int, int] | None) -> None:
        if anchor is None:
            if self._following:
                self.scrollToBottom()
            return
        row, top = anchor
        if row < self.transcript_model.rowCount():
            bar = self.verticalScrollBar()
            bar.setValue(bar.value() + self.visualRect(self.transcript_model.index(row)).top() - top)

    def _on_scrolled(self, value: int) -> None:
        if self._busy:
            return
        self._following = value >= self.verticalScrollBar().maximum() - FOLLOW_SLACK
        self._settle()
        if self._hover is not None:  # the rows moved under a still pointer
            self._set_hover(self.target_at(self.viewport().mapFromGlobal(QCursor.pos())))

    def _on_reset(self) -> None:
        self._delegate.reset()
        self._hover = None
        self._following = True  # a conversation opens at its latest message
        self._update_actions()

    def dataChanged(self, topLeft: AnyIndex, bottomRight: AnyIndex, roles: Sequence[int] = ()) -> None:
        # Not QListView.dataChanged: Qt 6 answers every change with a relayout of every row (40 ms
        # at 5,000 rows, 20 times a second while streaming). Repaint the rows, and let the settle
        # relayout only when a row on screen changed height; rows off screen are measured when
        # scrolled to.
        rows = self.visualRect(topLeft).united(self.visualRect(bottomRight))
        if self.isVisible() and rows.intersects(self.viewport().rect()):
            self.viewport().update(rows)
            if not self._settle_timer.isActive():  # else a settle is due this turn: it covers this change
                self._settle()
                self.request_settle()  # for any further changes this turn (a caller setting many summaries)
        if topLeft.row() <= self.currentIndex().row() <= bottomRight.row():
            self._update_actions()

    def scrollTo(
        self, index: AnyIndex, hint: QAbstractItemView.ScrollHint = QAbstractItemView.ScrollHint.EnsureVisible
    ) -> None:
        # Clicking a message taller than the screen must not jump to its top.
        rect = self.visualRect(index)
        tall = rect.height() > self.viewport().height()
        if hint == QAbstractItemView.ScrollHint.EnsureVisible and tall and rect.intersects(self.viewport().rect()):
            return
        super().scrollTo(index, hint)

    def _update_layout_width(self) -> bool:
        """Rows are laid out as if the scroll bar were always shown. Their heights must not depend
        on whether it is, or showing it could make it unnecessary, hiding it necessary, and so on."""
        extent = self.style().pixelMetric(QStyle.PixelMetric.PM_ScrollBarExtent, None, self.verticalScrollBar())
        width = max(1, self.contentsRect().width() - extent)
        changed = width != self.layout_width
        self.layout_width = width
        return changed

    def content_shift(self) -> int:
        """How far right rows are drawn, to stay centred while the scroll bar is hidden."""
        return max(0, (self.viewport().width() - self.layout_width) // 2)

    def resizeEvent(self, event: QResizeEvent) -> None:
        super().resizeEvent(event)
        if self._update_layout_width():
            self.doItemsLayout()  # every row's height depends on the width; QListView only relayouts on height

    def changeEvent(self, event: QEvent) -> None:
        super().changeEvent(event)
        if event.type() in (QEvent.Type.PaletteChange, QEvent.Type.FontChange, QEvent.Type.StyleChange):
            self._delegate.reset()
            self._update_layout_width()
            self.doItemsLayout()
