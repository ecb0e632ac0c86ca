"""How a transcript row looks: its layout at a width (bubble, reasoning toggle, answer, footer)
and its painting.

Layouts are cached (LRU of `LAYOUT_CACHE`, keyed by row uid, version, width and tint) so memory
stays bounded however far one scrolls; exact heights are remembered per row version and width,
and rows not laid out yet get a cheap estimate from their text length. A streaming row's height
grows in steps of `STREAM_STEP` pixels, so the list relayouts every few lines, not per line.

Draft tint: the answer stays markdown. Draft spans are character ranges of the markdown source;
each rendered character is mapped back to its source character (`markdown.align`), and those
inside a span get a background tint.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from PySide6.QtCore import QPoint, QPointF, QRect, QRectF, QSize, Qt
from PySide6.QtGui import QColor, QFont, QFontMetrics, QPainter, QPainterPath, QPen
from PySide6.QtWidgets import QStyle, QStyledItemDelegate, QStyleOptionViewItem

from app.views.markdown import LINE_HEIGHT, RenderedText, Theme, blend
from app.views.message_actions import ACTION_SIZE, ActionPainter, MessageAction, action_row
from app.views.transcript.model import BADGES, AnyIndex, RowState

if TYPE_CHECKING:
    from app.views.transcript.view import TranscriptView

LAYOUT_CACHE = 160  # laid-out rows kept; a screenful is rarely more than 20
STREAM_STEP = 64  # a streaming row's height grows in these steps

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
PICTURE_EDGE = 160  # a picture in a bubble fits this square
PICTURE_RADIUS = 8


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
    pictures: list[tuple[str, QRect]] = field(default_factory=list)  # (content hash, where) in a user's bubble


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
            if state.message.images:
                height += PICTURE_EDGE + GAP
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
        max_inner = max(40, int(column * BUBBLE_MAX) - 2 * BUBBLE_PAD_X)
        text = self._rendered(state, "answer", max_inner)
        text.shrink_to_fit()
        sizes = [self._picture_size(digest) for digest in state.message.images]
        places, pictures_w, pictures_h = _flow(sizes, max_inner)
        has_text = bool(state.text("answer"))
        text_w, text_h = (math.ceil(text.doc.textWidth()), math.ceil(text.height)) if has_text or not sizes else (0, 0)
        gap = GAP if sizes and has_text else 0
        inner_w, inner_h = max(text_w, pictures_w), pictures_h + gap + text_h
        outer_w = inner_w + 2 * BUBBLE_PAD_X
        bubble = QRect(x + column - outer_w, ROW_PAD, outer_w, inner_h + 2 * BUBBLE_PAD_Y)
        layout = RowLayout(height=0, frame=bubble, answer=text if text_h else None, bubble=bubble)
        # Beside the bubble, level with its last line: the row does not grow for them.
        layout.actions = action_row("user", bubble.left() - GAP, bubble.bottom() + 1 - ACTION_SIZE - BUBBLE_PAD_Y // 2)
        inner_left = bubble.right() + 1 - BUBBLE_PAD_X - inner_w  # pictures and text align right, like the bubble
        layout.pictures = [
            (digest, place.translated(inner_left + inner_w - pictures_w, bubble.y() + BUBBLE_PAD_Y))
            for digest, place in zip(state.message.images, places, strict=True)
        ]
        layout.answer_pos = QPointF(
            bubble.right() + 1 - BUBBLE_PAD_X - text_w, bubble.y() + BUBBLE_PAD_Y + pictures_h + gap
        )
        self._finish(layout, state, bubble.bottom() + 1, x + column - bubble.width(), bubble.width())
        return layout

    def _picture_size(self, digest: str) -> QSize:
        """A picture's size in the bubble: its thumbnail fitted into PICTURE_EDGE (a square when missing)."""
        image = self._view.transcript_model.thumbnail(digest)
        if image.isNull():
            return QSize(PICTURE_EDGE, PICTURE_EDGE)
        return image.size().scaled(PICTURE_EDGE, PICTURE_EDGE, Qt.AspectRatioMode.KeepAspectRatio)

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
        for digest, rect in layout.pictures:
            self._paint_picture(painter, digest, rect, theme)
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

    def _paint_picture(self, painter: QPainter, digest: str, rect: QRect, theme: Theme) -> None:
        image = self._view.transcript_model.thumbnail(digest)
        clip = QPainterPath()
        clip.addRoundedRect(QRectF(rect), PICTURE_RADIUS, PICTURE_RADIUS)
        painter.save()
        painter.setClipPath(clip, Qt.ClipOperation.IntersectClip)
        if image.isNull():  # its file was deleted outside Stride: say so where it was
            painter.fillRect(rect, blend(theme.base, theme.muted, 0.25))
            painter.setPen(theme.muted)
            painter.setFont(self._small_font())
            painter.drawText(rect, Qt.AlignmentFlag.AlignCenter | Qt.TextFlag.TextWordWrap, "Picture missing")
        else:
            painter.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform)
            painter.drawImage(QRectF(rect), image)
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
        buttons ("copy", "edit", "regenerate"), each picture ("picture:0", ...) and each code block's Copy
        ("code:answer:0", ...)."""
        layout = self.layout(row)
        out = [(action.name, action.rect) for action in layout.actions]
        out += [(f"picture:{i}", rect) for i, (_digest, rect) in enumerate(layout.pictures)]
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


def _flow(sizes: list[QSize], width: int) -> tuple[list[QRect], int, int]:
    """Pictures placed left to right, wrapping at `width`; returns their rects and the block's size."""
    places: list[QRect] = []
    x = y = line_h = block_w = 0
    for size in sizes:
        if x and x + size.width() > width:
            x, y, line_h = 0, y + line_h + GAP, 0
        places.append(QRect(x, y, size.width(), size.height()))
        x += size.width() + GAP
        line_h = max(line_h, size.height())
        block_w = max(block_w, x - GAP)
    return places, block_w, (y + line_h if sizes else 0)


def _chevron_radius(header: QRect) -> float:
    return (header.height() - 2 * HEADER_PAD) / 5


def _column(width: int) -> tuple[int, int]:
    """x and width of the centred message column in a row of this width."""
    column = max(80, min(width - 2 * SIDE, MAX_COLUMN))
    return max(0, (width - column) // 2), column
