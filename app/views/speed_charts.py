"""The speed panel's drawn parts: a figure label screen readers announce, the tokens/s sparkline,
and one acceptance bar per MTP head. They repaint only themselves, as figures arrive up to ten
times a second.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence

from PySide6.QtCore import QPointF, QRectF, Qt
from PySide6.QtGui import QColor, QPainter, QPainterPath, QPaintEvent, QPalette, QPen
from PySide6.QtWidgets import QGridLayout, QLabel, QSizePolicy, QVBoxLayout, QWidget

from app.views.figures import DASH, at, percent, rate

SPARK_POINTS = 120  # 12 s of history at the worker's 10 updates a second


def tint(palette: QPalette, amount: float) -> QColor:
    """The window colour moved towards the text colour: tracks and grid lines that suit any theme."""
    a, b = palette.color(QPalette.ColorRole.Window), palette.color(QPalette.ColorRole.WindowText)
    return QColor.fromRgbF(
        a.redF() + (b.redF() - a.redF()) * amount,
        a.greenF() + (b.greenF() - a.greenF()) * amount,
        a.blueF() + (b.blueF() - a.blueF()) * amount,
    )


class ValueLabel(QLabel):
    """A figure that screen readers announce as "<name>: <value>"."""

    def __init__(self, name: str, parent: QWidget | None = None) -> None:
        super().__init__(DASH, parent)
        self.setTextFormat(Qt.TextFormat.PlainText)
        self.setAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        self.setAccessibleName(name)
        self.setAccessibleDescription(f"{name}: not available")

    def show_value(self, text: str, spoken: str | None = None) -> None:
        """spoken: the words for screen readers when the text has symbols or units they read badly."""
        if text != self.text():  # setText always schedules a relayout, so skip it when nothing changed
            self.setText(text)
        words = "not available" if text == DASH else spoken or text
        description = f"{self.accessibleName()}: {words}"
        if description != self.accessibleDescription():
            self.setAccessibleDescription(description)


class _Bar(QWidget):
    """A thin rounded bar: a theme-derived track with an accent fill for 0..1."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setFixedHeight(7)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        self._fraction: float | None = None

    @property
    def fraction(self) -> float | None:
        return self._fraction

    def set_fraction(self, fraction: float | None) -> None:
        if fraction != self._fraction:
            self._fraction = fraction
            self.update()

    def paintEvent(self, event: QPaintEvent) -> None:
        painter = QPainter(self)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        painter.setPen(Qt.PenStyle.NoPen)
        palette = self.palette()  # its current colour group greys the bar when the row is disabled
        rect = QRectF(self.rect())
        radius = rect.height() / 2
        painter.setBrush(tint(palette, 0.14))
        painter.drawRoundedRect(rect, radius, radius)
        if self._fraction:
            # Never narrower than the bar is tall, so a small share still shows as a dot.
            fill = QRectF(rect)
            fill.setWidth(max(rect.width() * min(self._fraction, 1.0), rect.height()))
            painter.setBrush(palette.color(QPalette.ColorRole.Highlight))
            painter.drawRoundedRect(fill, radius, radius)


class Sparkline(QWidget):
    """A small line chart of the last SPARK_POINTS tokens/s values, oldest at the left, newest on the right."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._values: deque[float] = deque(maxlen=SPARK_POINTS)
        self.setFixedHeight(48)
        self.setMinimumWidth(120)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        self.setAccessibleName("Tokens per second, recent history")
        self._describe()

    @property
    def values(self) -> tuple[float, ...]:
        return tuple(self._values)

    def add_point(self, value: float) -> None:
        self._values.append(max(value, 0.0))
        self._describe()
        self.update()  # repaint this widget only; its size never changes

    def clear(self) -> None:
        if self._values:
            self._values.clear()
            self._describe()
            self.update()

    def _describe(self) -> None:
        if self._values:
            latest, peak = rate(self._values[-1]), rate(max(self._values))
            text = f"Latest {latest} tokens per second, peak {peak} over the last {len(self._values)} updates"
        else:
            text = "No tokens generated yet"
        self.setAccessibleDescription(text)

    def plot_area(self) -> QRectF:
        return QRectF(self.rect()).adjusted(2, 4, -3, -1)  # room for the pen and the end dot

    def points(self, area: QRectF) -> list[QPointF]:
        """Where the values go: the oldest at the left edge, the newest at the right, whatever their
        number (a short reply's few points span the width instead of bunching up at the right)."""
        values = list(self._values)
        if len(values) == 1:
            values *= 2  # one value: a level line across
        top = max(values) * 1.15 or 1.0  # headroom so the peak does not touch the edge
        step = area.width() / (len(values) - 1)
        bottom, height = area.bottom(), area.height()
        return [QPointF(area.left() + i * step, bottom - value / top * height) for i, value in enumerate(values)]

    def paintEvent(self, event: QPaintEvent) -> None:
        painter = QPainter(self)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        palette = self.palette()
        area = self.plot_area()
        grid = tint(palette, 0.18)
        painter.setPen(QPen(grid, 1))
        painter.drawLine(area.bottomLeft(), area.bottomRight())
        if not self._values:
            return
        points = self.points(area)
        accent = palette.color(QPalette.ColorRole.Highlight)
        line = QPainterPath(points[0])
        for point in points[1:]:
            line.lineTo(point)
        fill = QPainterPath(line)
        fill.lineTo(points[-1].x(), area.bottom())
        fill.lineTo(points[0].x(), area.bottom())
        fill.closeSubpath()
        shade = QColor(accent)
        shade.setAlphaF(0.18)
        painter.fillPath(fill, shade)
        pen = QPen(accent, 1.6)
        pen.setCapStyle(Qt.PenCapStyle.RoundCap)
        pen.setJoinStyle(Qt.PenJoinStyle.RoundJoin)
        painter.strokePath(line, pen)
        painter.setPen(Qt.PenStyle.NoPen)
        painter.setBrush(accent)
        painter.drawEllipse(points[-1], 2.5, 2.5)


class _HeadRow(QWidget):
    def __init__(self, number: int, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.value = ValueLabel(f"Head {number} acceptance")
        self.bar = _Bar()
        grid = QGridLayout(self)
        grid.setContentsMargins(0, 0, 0, 0)
        grid.setHorizontalSpacing(8)
        grid.setVerticalSpacing(3)
        grid.addWidget(QLabel(f"Head {number}"), 0, 0)
        grid.addWidget(self.value, 0, 1)
        grid.addWidget(self.bar, 1, 0, 1, 2)
        grid.setColumnStretch(1, 1)

    def show_used(self, fraction: float | None, drafted: int, accepted: int) -> None:
        if not self.isEnabled():
            self.setEnabled(True)
        if fraction is None:
            self.value.show_value(DASH)
        else:
            self.value.show_value(
                f"{percent(fraction)} · {accepted:,}/{drafted:,}",
                spoken=f"{percent(fraction)}, {accepted:,} of {drafted:,} drafts accepted",
            )
        self.bar.set_fraction(fraction)

    def show_unused(self) -> None:
        if self.isEnabled():
            self.setEnabled(False)  # the disabled colour group greys text and bar in any theme
        self.value.show_value("not used", spoken="not used at this depth")
        self.bar.set_fraction(None)


class HeadBars(QWidget):
    """One bar per MTP head: the share of its drafts the trunk accepted; heads past the depth greyed."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._rows: list[_HeadRow] = []
        self._layout = QVBoxLayout(self)
        self._layout.setContentsMargins(0, 0, 0, 0)
        self._layout.setSpacing(8)
        self.setAccessibleName("Acceptance per MTP head")

    def set_heads(self, n_heads: int) -> None:
        while len(self._rows) < n_heads:
            row = _HeadRow(len(self._rows) + 1)
            row.show_used(None, 0, 0)
            self._layout.addWidget(row)
            self._rows.append(row)
        while len(self._rows) > n_heads:
            row = self._rows.pop()
            self._layout.removeWidget(row)
            row.setParent(None)  # gone at once (not at the next event loop pass); Python frees it

    def head_count(self) -> int:
        return len(self._rows)

    def set_values(
        self,
        acceptance_per_position: Sequence[float | None],
        drafted: Sequence[int],
        accepted: Sequence[int],
        depth: int,
    ) -> None:
        for index, row in enumerate(self._rows):
            if index >= depth:
                row.show_unused()
            else:
                row.show_used(at(acceptance_per_position, index), at(drafted, index) or 0, at(accepted, index) or 0)
