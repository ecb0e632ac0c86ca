"""The strip above the transcript: which model is loaded, and how full the context is."""

from __future__ import annotations

from PySide6.QtCore import QRect, QRectF, QSize, Qt
from PySide6.QtGui import QColor, QFontMetrics, QPainter, QPaintEvent, QPalette
from PySide6.QtWidgets import QLabel, QSizePolicy, QWidget

METER_BAR_WIDTH = 96
METER_BAR_HEIGHT = 6
METER_GAP = 8
WARN_AT = 0.8  # the fill turns amber from here, red when nearly full
FULL_AT = 0.95
WARN = QColor("#d9822b")
FULL = QColor("#d93a3a")


def _blend(a: QColor, b: QColor, t: float) -> QColor:
    return QColor.fromRgbF(
        a.redF() + (b.redF() - a.redF()) * t,
        a.greenF() + (b.greenF() - a.greenF()) * t,
        a.blueF() + (b.blueF() - a.blueF()) * t,
    )


class ElidedLabel(QLabel):
    """A one-line label that gives up width gracefully: text() stays whole, what is drawn ends in "…"."""

    def __init__(self, text: str = "", parent: QWidget | None = None) -> None:
        super().__init__(text, parent)
        self.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        self.setTextFormat(Qt.TextFormat.PlainText)

    def minimumSizeHint(self) -> QSize:
        return QSize(0, super().minimumSizeHint().height())

    def shown_text(self) -> str:
        """The text as drawn at the current width."""
        width = self.contentsRect().width()
        return self.fontMetrics().elidedText(self.text(), Qt.TextElideMode.ElideRight, width)

    def paintEvent(self, event: QPaintEvent) -> None:
        painter = QPainter(self)
        painter.setPen(self.palette().color(self.foregroundRole()))
        painter.setFont(self.font())
        align = Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter
        painter.drawText(self.contentsRect(), align, self.shown_text())


class ContextMeter(QWidget):
    """How much of the context the conversation fills: "Context", a rounded bar, then "147 / 2,048".

    Caption and figures sit beside the bar, never on it, so they read at any fill.
    """

    CAPTION = "Context"

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("contextMeter")
        self.setAccessibleName("Context used")
        self.setSizePolicy(QSizePolicy.Policy.Fixed, QSizePolicy.Policy.Fixed)
        self._used = 0
        self._total = 0
        self._describe()

    @property
    def used(self) -> int:
        return self._used

    @property
    def total(self) -> int:
        return self._total

    @property
    def fraction(self) -> float:
        return min(1.0, self._used / self._total) if self._total > 0 else 0.0

    def text(self) -> str:
        return f"{self._used:,} / {self._total:,}" if self._total else "–"

    def set_values(self, used: int, total: int) -> None:
        used, total = max(0, used), max(0, total)
        if (used, total) == (self._used, self._total):
            return
        widen = len(f"{total:,}") != len(f"{self._total:,}")
        self._used, self._total = used, total
        self._describe()
        if widen:
            self.updateGeometry()
        self.update()

    def _describe(self) -> None:
        text = f"{self._used:,} of {self._total:,} tokens ({self.fraction:.0%})" if self._total else "no model loaded"
        self.setAccessibleDescription(text)
        self.setToolTip(f"Context: {text}")

    # Geometry ------------------------------------------------------------------------------

    def _text_width(self) -> int:
        # As wide as the fullest text this context can show, so the bar does not move while counting.
        widest = f"{self._total:,} / {self._total:,}" if self._total else "00,000 / 00,000"
        return QFontMetrics(self.font()).horizontalAdvance(widest) + 2

    def _caption_width(self) -> int:
        return QFontMetrics(self.font()).horizontalAdvance(self.CAPTION)

    def sizeHint(self) -> QSize:
        height = max(QFontMetrics(self.font()).height(), METER_BAR_HEIGHT) + 4
        return QSize(self._caption_width() + 2 * METER_GAP + METER_BAR_WIDTH + self._text_width(), height)

    def minimumSizeHint(self) -> QSize:
        return self.sizeHint()

    def caption_rect(self) -> QRect:
        return QRect(0, 0, self._caption_width(), self.height())

    def bar_rect(self) -> QRectF:
        top = (self.height() - METER_BAR_HEIGHT) / 2
        return QRectF(self._caption_width() + METER_GAP, top, METER_BAR_WIDTH, METER_BAR_HEIGHT)

    def text_rect(self) -> QRect:
        left = round(self.bar_rect().right()) + METER_GAP
        return QRect(left, 0, self.width() - left, self.height())

    def fill_color(self) -> QColor:
        if self.fraction >= FULL_AT:
            return FULL
        if self.fraction >= WARN_AT:
            return WARN
        return self.palette().color(QPalette.ColorRole.Highlight)

    def paintEvent(self, event: QPaintEvent) -> None:
        painter = QPainter(self)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        palette = self.palette()
        window, ink = palette.color(QPalette.ColorRole.Window), palette.color(QPalette.ColorRole.WindowText)
        track = _blend(window, ink, 0.16)
        bar = self.bar_rect()
        radius = bar.height() / 2
        painter.setPen(Qt.PenStyle.NoPen)
        painter.setBrush(track)
        painter.drawRoundedRect(bar, radius, radius)
        if self._used > 0 and self._total > 0:
            fill = QRectF(bar)
            fill.setWidth(max(bar.width() * self.fraction, bar.height()))  # a little use still shows, as a dot
            painter.setBrush(self.fill_color())
            painter.drawRoundedRect(fill, radius, radius)
        align = Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter
        painter.setPen(palette.color(QPalette.ColorRole.PlaceholderText))
        painter.drawText(self.caption_rect(), align, self.CAPTION)
        painter.setPen(ink)
        painter.drawText(self.text_rect(), align, self.text())
