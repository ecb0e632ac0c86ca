"""Markdown text rendered for the transcript: Qt's own importer, then code highlighting and tints.

`RenderedText` turns one message's markdown (answer or reasoning) into a laid-out QTextDocument:
fenced code blocks get padding, a rounded background and pygments colours; inline code gets a
background; links take the theme's link colour; optional draft spans get a background tint.
Colours come from a `Theme` derived from the widget palette, so light and dark both work.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import cache

# pygments ships no type hints (types-Pygments is not a dependency).
from pygments.lexer import Lexer  # type: ignore[import-untyped]
from pygments.lexers import get_lexer_by_name  # type: ignore[import-untyped]
from pygments.token import Comment, Keyword, Name, Number, Operator, String, _TokenType  # type: ignore[import-untyped]
from pygments.util import ClassNotFound  # type: ignore[import-untyped]
from PySide6.QtCore import QPointF, QRectF, QSize, Qt
from PySide6.QtGui import (
    QAbstractTextDocumentLayout,
    QBrush,
    QColor,
    QFont,
    QFontMetricsF,
    QPainter,
    QPalette,
    QPixmap,
    QTextBlock,
    QTextBlockFormat,
    QTextCharFormat,
    QTextCursor,
    QTextDocument,
    QTextFormat,
    QTextFrameFormat,
    QTextOption,
    QTextTable,
)

from app.resources import tinted_pixmap

CODE_PAD = 10.0  # inside a code block's background
CODE_GAP = 8.0  # between a code block's background and the text around it
CODE_RADIUS = 8.0
COPY_PAD_X = 7.0  # inside a code block's Copy button
COPY_ICON_GAP = 4.0
CODE_SCALE = 0.92  # monospace looks larger than the body font at the same size
LINE_HEIGHT = 135  # percent: prose reads easier with air between lines
CODE_LINE_HEIGHT = 115
QUOTE_INDENT = 16.0  # per quote level; a bar sits in it
PROPORTIONAL = QTextBlockFormat.LineHeightTypes.ProportionalHeight.value

# Syntax colours: GitHub's light and dark schemes, picked by the palette's lightness.
_SYNTAX_LIGHT = {
    "keyword": "#cf222e",
    "string": "#0a3069",
    "number": "#0550ae",
    "function": "#8250df",
    "builtin": "#953800",
}
_SYNTAX_DARK = {
    "keyword": "#ff7b72",
    "string": "#a5d6ff",
    "number": "#79c0ff",
    "function": "#d2a8ff",
    "builtin": "#ffa657",
}
# Most specific first: the first token type that contains a token decides its colour.
_TOKEN_ROLES: tuple[tuple[_TokenType, str], ...] = (
    (Comment, "comment"),
    (String, "string"),
    (Number, "number"),
    (Keyword, "keyword"),
    (Operator.Word, "keyword"),
    (Name.Builtin, "builtin"),
    (Name.Function, "function"),
    (Name.Class, "function"),
    (Name.Decorator, "function"),
    (Name.Tag, "keyword"),
    (Name.Attribute, "function"),
)
_SPACE = re.compile(r"\s")
ALIGN_WINDOW = 48  # how far ahead in the source a rendered character is looked for


def blend(a: QColor, b: QColor, t: float) -> QColor:
    """a moved a fraction t towards b (opaque)."""
    return QColor.fromRgbF(
        a.redF() + (b.redF() - a.redF()) * t,
        a.greenF() + (b.greenF() - a.greenF()) * t,
        a.blueF() + (b.blueF() - a.blueF()) * t,
    )


@dataclass(frozen=True)
class Theme:
    """Every colour the transcript paints with, derived from one palette."""

    text: QColor
    muted: QColor
    base: QColor
    bubble: QColor
    code_bg: QColor
    inline_code_bg: QColor
    link: QColor
    tint: QColor
    accent: QColor
    error: QColor
    syntax: dict[str, QColor]

    @classmethod
    def from_palette(cls, palette: QPalette) -> Theme:
        base = palette.color(QPalette.ColorRole.Base)
        text = palette.color(QPalette.ColorRole.Text)
        accent = palette.color(QPalette.ColorRole.Highlight)
        dark = base.lightnessF() < 0.5
        syntax = {k: QColor(v) for k, v in (_SYNTAX_DARK if dark else _SYNTAX_LIGHT).items()}
        muted = blend(text, base, 0.42)
        syntax["comment"] = muted
        return cls(
            text=text,
            muted=muted,
            base=base,
            bubble=blend(base, text, 0.11 if dark else 0.065),
            code_bg=blend(base, text, 0.065 if dark else 0.04),
            inline_code_bg=blend(base, text, 0.12 if dark else 0.075),
            link=palette.color(QPalette.ColorRole.Link),
            tint=blend(base, accent, 0.38 if dark else 0.22),
            accent=accent,
            error=QColor("#f85149" if dark else "#cf222e"),
            syntax=syntax,
        )

    def token_color(self, ttype: _TokenType) -> QColor | None:
        role = _token_role(ttype)
        return self.syntax[role] if role else None


@cache
def _token_role(ttype: _TokenType) -> str | None:
    for parent, role in _TOKEN_ROLES:
        if ttype in parent:
            return role
    return None


@cache
def _copy_icon(side: int, rgba: int, ratio: float) -> QPixmap:
    return tinted_pixmap("copy", QSize(side, side), QColor.fromRgba(rgba), ratio)


@cache
def _lexer(language: str) -> Lexer | None:
    try:
        return get_lexer_by_name(language, stripnl=False, ensurenl=False)
    except ClassNotFound:
        return None


def utf16_positions(text: str) -> Callable[[int], int]:
    """Maps an index into text to a QTextDocument position (UTF-16 units) relative to text's start."""
    if text.isascii() or len(text.encode("utf-16-le")) == 2 * len(text):
        return lambda i: i
    offsets = [0]
    for ch in text:
        offsets.append(offsets[-1] + (2 if ord(ch) > 0xFFFF else 1))
    return offsets.__getitem__


def align(rendered: str, source: str) -> list[int]:
    """For each rendered character, the index of the source character it shows, or -1.

    Rendered markdown is (nearly) a subsequence of its source: markup is dropped, text kept in
    order. A greedy match within a short window recovers which source character each rendered
    one came from; whitespace matches any whitespace (soft breaks, block separators).
    """
    out = [-1] * len(rendered)
    j, n = 0, len(source)
    for i, ch in enumerate(rendered):
        end = min(n, j + ALIGN_WINDOW)
        if ch.isspace():
            m = _SPACE.search(source, j, end)
            k = m.start() if m else -1
        else:
            k = source.find(ch, j, end)
        if k >= 0:
            out[i] = k
            j = k + 1
    return out


def _runs(flags: Sequence[bool]) -> list[tuple[int, int]]:
    """[start, end) ranges of consecutive true flags."""
    runs: list[tuple[int, int]] = []
    start = -1
    for i, flag in enumerate(flags):
        if flag and start < 0:
            start = i
        elif not flag and start >= 0:
            runs.append((start, i))
            start = -1
    if start >= 0:
        runs.append((start, len(flags)))
    return runs


def _merge(doc: QTextDocument, start: int, end: int, fmt: QTextCharFormat) -> None:
    cursor = QTextCursor(doc)
    cursor.setPosition(start)
    cursor.setPosition(end, QTextCursor.MoveMode.KeepAnchor)
    cursor.mergeCharFormat(fmt)


COPY_CAPTION, COPIED_CAPTION = "Copy", "Copied"


@dataclass(frozen=True)
class CodeBox:
    rect: QRectF  # background, document coordinates
    language: str
    code: str  # the block's text, as Copy puts it on the clipboard
    copy_rect: QRectF  # its Copy button, top right in the box's header line


class RenderedText:
    """One markdown text laid out at a fixed width, ready to paint."""

    def __init__(
        self,
        source: str,
        *,
        font: QFont,
        width: float,
        theme: Theme,
        tint_spans: Sequence[Sequence[int]] | None = None,
    ) -> None:
        self.theme = theme
        doc = QTextDocument()
        doc.setUndoRedoEnabled(False)
        doc.setDocumentMargin(0)
        doc.setDefaultFont(font)
        option = doc.defaultTextOption()
        # Long words, URLs and code lines wrap rather than run past the row and get clipped.
        option.setWrapMode(QTextOption.WrapMode.WrapAtWordBoundaryOrAnywhere)
        doc.setDefaultTextOption(option)
        doc.setMarkdown(source)
        self.doc = doc
        self._mono_size = font.pointSizeF() * CODE_SCALE
        self._label_font = QFont(font)
        self._label_font.setPointSizeF(font.pointSizeF() * 0.8)
        self._label_height = QFontMetricsF(self._label_font).height()
        self._groups: list[tuple[str, list[QTextBlock]]] = []  # fenced code: language, its lines
        self._quotes: list[QTextBlock] = []
        self._style_tables()  # first: it may merge blocks, which _scan_blocks keeps references to
        self._scan_blocks()
        self._style_code_blocks()
        self._style_spans()
        if tint_spans:
            self._tint(source, tint_spans)
        doc.setTextWidth(width)
        self._decorate()

    @property
    def height(self) -> float:
        return float(self.doc.size().height())

    def shrink_to_fit(self) -> None:
        """Narrow the layout to the widest line, so a bubble hugs a short message."""
        ideal = math.ceil(self.doc.idealWidth())
        if ideal < self.doc.textWidth():
            self.doc.setTextWidth(ideal)
            self._decorate()

    def _label_space(self, language: str) -> float:
        """Room above the code for its header line: the language label and the Copy button."""
        return self._label_height + 4

    # Building ---------------------------------------------------------------------

    def _scan_blocks(self) -> None:
        """Find code and quote blocks; give prose its line height and quotes a narrower indent.

        Qt makes one QTextBlock per line of a fenced code block, each tagged with the fence.
        """
        previous_was_code = False
        block = self.doc.begin()
        while block.isValid():
            fmt = block.blockFormat()
            is_code = bool(fmt.property(QTextFormat.Property.BlockCodeFence))
            cursor = QTextCursor(block)
            if is_code:
                language = str(fmt.property(QTextFormat.Property.BlockCodeLanguage) or "")
                if previous_was_code:
                    self._groups[-1][1].append(block)
                else:
                    self._groups.append((language, [block]))
            elif cursor.currentTable() is None:  # proportional line height misplaces text in table cells
                level = int(fmt.property(QTextFormat.Property.BlockQuoteLevel) or 0)
                if level:
                    fmt.setLeftMargin(QUOTE_INDENT * level)
                    self._quotes.append(block)
                fmt.setLineHeight(LINE_HEIGHT, PROPORTIONAL)
                cursor.setBlockFormat(fmt)
            previous_was_code = is_code
            block = block.next()

    def _style_code_blocks(self) -> None:
        mono = QTextCharFormat()
        mono.setFontPointSize(self._mono_size)
        for language, blocks in self._groups:
            label = self._label_space(language)
            for i, block in enumerate(blocks):
                fmt = block.blockFormat()
                fmt.setNonBreakableLines(False)  # wrap long lines inside the box, never clip
                fmt.setLeftMargin(CODE_PAD)
                fmt.setRightMargin(CODE_PAD)
                fmt.setTopMargin(CODE_GAP + CODE_PAD + label if i == 0 else 0)
                fmt.setBottomMargin(CODE_GAP + CODE_PAD if i == len(blocks) - 1 else 0)
                fmt.setLineHeight(CODE_LINE_HEIGHT, PROPORTIONAL)
                cursor = QTextCursor(block)
                cursor.setBlockFormat(fmt)
            first, last = blocks[0], blocks[-1]
            start, end = first.position(), last.position() + last.length() - 1
            _merge(self.doc, start, end, mono)
            self._highlight(language, blocks, start)

    def _highlight(self, language: str, blocks: list[QTextBlock], start: int) -> None:
        lexer = _lexer(language) if language else None
        if lexer is None:
            return
        code = "\n".join(block.text() for block in blocks)  # block separators are one position each
        to_doc = utf16_positions(code)
        runs: list[tuple[int, int, QColor]] = []
        tokens: Iterable[tuple[int, _TokenType, str]] = lexer.get_tokens_unprocessed(code)
        for index, ttype, value in tokens:
            color = self.theme.token_color(ttype)
            if color is None or not value.strip():
                continue
            end = index + len(value)
            if runs and runs[-1][1] == index and runs[-1][2] == color:
                runs[-1] = (runs[-1][0], end, color)
            else:
                runs.append((index, end, color))
        for a, b, color in runs:
            fmt = QTextCharFormat()
            fmt.setForeground(color)
            _merge(self.doc, start + to_doc(a), start + to_doc(b), fmt)

    def _style_tables(self) -> None:
        border = QBrush(blend(self.theme.base, self.theme.text, 0.2))
        for frame in self.doc.rootFrame().childFrames():
            if isinstance(frame, QTextTable):
                fmt = frame.format()
                fmt.setBorderBrush(border)
                fmt.setBorderStyle(QTextFrameFormat.BorderStyle.BorderStyle_Solid)  # Qt's Outset hides light borders
                fmt.setCellPadding(6)
                fmt.setMargin(CODE_GAP / 2)
                frame.setFormat(fmt)
                self._drop_leading_empty_blocks(frame)

    @staticmethod
    def _drop_leading_empty_blocks(table: QTextTable) -> None:
        """Qt's importer starts the first cell of a table that follows a quote with an empty line
        (which also took the header's bold)."""
        for row in range(table.rows()):
            for column in range(table.columns()):
                cell = table.cellAt(row, column)
                cursor = cell.firstCursorPosition()
                first = cursor.block()
                if first.length() == 1 and first != cell.lastCursorPosition().block():
                    weight = QTextCharFormat()
                    weight.setFontWeight(first.charFormat().fontWeight())
                    cursor.deleteChar()  # joins the next line into the empty one
                    cursor.movePosition(QTextCursor.MoveOperation.EndOfBlock, QTextCursor.MoveMode.KeepAnchor)
                    cursor.mergeCharFormat(weight)

    def _style_spans(self) -> None:
        """Inline code gets a background and the code size; links the theme's link colour."""
        inline = QTextCharFormat()
        inline.setBackground(self.theme.inline_code_bg)
        inline.setFontPointSize(self._mono_size)
        link = QTextCharFormat()
        link.setForeground(self.theme.link)
        edits: list[tuple[int, int, QTextCharFormat]] = []
        block = self.doc.begin()
        while block.isValid():
            if not block.blockFormat().property(QTextFormat.Property.BlockCodeFence):
                it = block.begin()
                while not it.atEnd():
                    fragment = it.fragment()
                    fmt = fragment.charFormat()
                    span = (fragment.position(), fragment.position() + fragment.length())
                    if fmt.isAnchor():
                        edits.append((*span, link))
                    elif fmt.fontFixedPitch():
                        edits.append((*span, inline))
                    it += 1
            block = block.next()
        for start, end, fmt in edits:
            _merge(self.doc, start, end, fmt)

    def _tint(self, source: str, spans: Sequence[Sequence[int]]) -> None:
        drafted = bytearray(len(source))
        for span in spans:
            a, b = max(0, span[0]), min(len(source), span[1])
            if a < b:
                drafted[a:b] = b"\x01" * (b - a)
        rendered = self.doc.toPlainText()
        mapping = range(len(rendered)) if rendered == source else align(rendered, source)
        to_doc = utf16_positions(rendered)
        fmt = QTextCharFormat()
        fmt.setBackground(self.theme.tint)
        # Never across a "\n": block and table-cell boundaries; a selection spanning cells would format whole cells.
        flags = [m >= 0 and drafted[m] == 1 and ch != "\n" for m, ch in zip(mapping, rendered)]
        for a, b in _runs(flags):
            _merge(self.doc, to_doc(a), to_doc(b), fmt)

    def _decorate(self) -> None:
        """Where code backgrounds and quote bars go at the current width."""
        layout = self.doc.documentLayout()
        width = self.doc.textWidth()
        metrics = QFontMetricsF(self._label_font)
        icon = self._copy_icon_size()
        captions = max(metrics.horizontalAdvance(c) for c in (COPY_CAPTION, COPIED_CAPTION))
        copy_width = icon + COPY_ICON_GAP + captions + 2 * COPY_PAD_X
        self.code_boxes = []
        for language, blocks in self._groups:
            # blockBoundingRect excludes the vertical margins; the box keeps CODE_PAD of them.
            top = layout.blockBoundingRect(blocks[0]).top() - CODE_PAD - self._label_space(language)
            bottom = layout.blockBoundingRect(blocks[-1]).bottom() + CODE_PAD
            box = QRectF(0, top, width, bottom - top)
            button = QRectF(box.right() - CODE_PAD / 2 - copy_width, top + 3, copy_width, self._label_height + 4)
            code = "\n".join(block.text() for block in blocks)
            self.code_boxes.append(CodeBox(box, language, code, button))
        self.quote_bars = []
        for block in self._quotes:
            rect = layout.blockBoundingRect(block)
            x = block.blockFormat().leftMargin() - QUOTE_INDENT + 2
            self.quote_bars.append(QRectF(x, rect.top(), 3, rect.height()))

    # Painting ---------------------------------------------------------------------

    def draw(
        self, painter: QPainter, origin: QPointF, color: QColor, *, hovered_copy: int = -1, copied: int = -1
    ) -> None:
        """Paint at origin with color as the default text colour; hovered_copy and copied: which code
        block's Copy button is under the pointer, and which one was just clicked (it says "Copied")."""
        painter.save()
        painter.translate(origin)
        painter.setPen(Qt.PenStyle.NoPen)
        for bar in self.quote_bars:
            painter.fillRect(bar, blend(self.theme.base, self.theme.muted, 0.6))
        for index, box in enumerate(self.code_boxes):
            painter.setBrush(self.theme.code_bg)
            painter.drawRoundedRect(box.rect, CODE_RADIUS, CODE_RADIUS)
            painter.setFont(self._label_font)
            if box.language:
                painter.setPen(self.theme.muted)
                label = box.rect.adjusted(CODE_PAD, CODE_PAD * 0.6, -CODE_PAD, 0)
                painter.drawText(label, Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignTop, box.language)
            self._draw_copy(painter, box, hovered=index == hovered_copy, copied=index == copied)
            painter.setPen(Qt.PenStyle.NoPen)
        context = QAbstractTextDocumentLayout.PaintContext()
        palette = QPalette(context.palette)
        palette.setColor(QPalette.ColorRole.Text, color)
        palette.setColor(QPalette.ColorRole.WindowText, color)
        context.palette = palette
        self.doc.documentLayout().draw(painter, context)
        painter.restore()

    def _copy_icon_size(self) -> int:
        return round(self._label_height * 0.8)

    def _draw_copy(self, painter: QPainter, box: CodeBox, *, hovered: bool, copied: bool) -> None:
        if hovered:
            painter.setPen(Qt.PenStyle.NoPen)
            painter.setBrush(blend(self.theme.code_bg, self.theme.text, 0.1))
            painter.drawRoundedRect(box.copy_rect, 5, 5)
        color = self.theme.text if hovered or copied else self.theme.muted
        side = self._copy_icon_size()
        device = painter.device()
        ratio = device.devicePixelRatioF() if device is not None else 1.0
        icon = _copy_icon(side, color.rgba(), ratio)
        rect = box.copy_rect.adjusted(COPY_PAD_X, 0, -COPY_PAD_X, 0)
        painter.drawPixmap(QPointF(rect.left(), rect.center().y() - side / 2), icon)
        painter.setPen(color)
        caption = COPIED_CAPTION if copied else COPY_CAPTION
        text_rect = rect.adjusted(side + COPY_ICON_GAP, 0, 0, 0)
        painter.drawText(text_rect, Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter, caption)
