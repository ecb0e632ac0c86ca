"""The speed panel: how fast the current reply runs and how many MTP drafts the trunk accepts.

Only displays figures it is given (ReplyStats.snapshot() dicts); it never talks to the engine.
Updates arrive up to ten times a second, so every setter changes a label only when its text
changes, and the sparkline repaints only itself.
"""

from __future__ import annotations

import html
from collections import deque
from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

from PySide6.QtCore import QPointF, QRectF, QSize, Qt
from PySide6.QtGui import QColor, QFont, QPainter, QPainterPath, QPaintEvent, QPalette, QPen
from PySide6.QtWidgets import (
    QFrame,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QSizePolicy,
    QVBoxLayout,
    QWidget,
)

from engine.generate import AUTO
from engine.stats import MTP_NOTE_TEXT

DASH = "–"
NOW_HEADING, IDLE_HEADING = "Now", "Last reply"  # the big figure: the rate right now, or the reply's average
NOW_NAME, IDLE_NAME = "Tokens per second now", "Tokens per second, last reply's average"
PANEL_WIDTH = 260
SPARK_POINTS = 120  # 12 s of history at the worker's 10 updates a second
MTP_OFF_NOTES = ("no_heads", "weights_absent", "depth_zero")  # notes meaning no drafting at all this reply

_T = TypeVar("_T")
_Label = TypeVar("_Label", bound=QLabel)


# Formatting ----------------------------------------------------------------------------


def _count(n: int | None) -> str:
    return DASH if n is None else f"{n:,}"


def _rate(value: float | None) -> str:
    if value is None:
        return DASH
    return f"{value:,.0f}" if value >= 1000 else f"{value:.1f}"


def _percent(fraction: float | None) -> str:
    return DASH if fraction is None else f"{fraction:.0%}"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return DASH
    if seconds < 0.9995:  # below this, rounding to ms would print "1000 ms"
        return f"{seconds * 1000:.0f} ms"
    return f"{seconds:.2f} s" if seconds < 10 else f"{seconds:,.1f} s"


def _depth_text(depth: int, requested: object, now: object = None, speedup: object = None, short: bool = False) -> str:
    if requested == AUTO:  # what Auto is doing now, and what drafting is worth here
        text = {"drafting": "Auto: drafting", "off": "Auto: Off"}.get(str(now), "Auto")
        if isinstance(speedup, float) and now == "drafting":  # the panel's narrow column: "Auto ×1.22"
            return f"Auto ×{speedup:.2f}" if short else f"{text}, ×{speedup:.2f} vs plain"
        return text
    shown = str(depth) if depth > 0 else "Off"
    if isinstance(requested, int) and requested != depth:
        return f"{shown} (asked {requested})"
    return shown


def _prompt_text(n_prompt: int, n_evaluated: int) -> str:
    if not n_prompt:  # the prompt has not been processed yet
        return DASH
    return f"{n_prompt:,} (all new)" if n_evaluated >= n_prompt else f"{n_prompt:,} ({n_evaluated:,} new)"


def _sentence(text: str) -> str:
    return text[:1].upper() + text[1:] + ("" if text.endswith(".") else ".")


def _at(values: Sequence[_T], index: int) -> _T | None:
    return values[index] if index < len(values) else None


def reply_summary(snapshot: Mapping[str, Any]) -> str:
    """One line for under a finished message: tokens, speed, MTP and time to first token.

    A reply that ran without MTP says nothing about it: the speed panel says once, with the
    reason, that MTP is off; a line under every reply repeating it would be noise."""
    n = int(snapshot.get("n_predicted") or 0)
    parts = [f"{n:,} token" if n == 1 else f"{n:,} tokens"]
    tps = snapshot.get("tokens_per_second")
    if tps is not None:
        parts.append(f"{_rate(tps)} tok/s")
    depth = int(snapshot.get("mtp_depth") or 0)
    if depth > 0:
        requested, now = snapshot.get("mtp_depth_requested"), snapshot.get("auto_mode")
        speedup = snapshot.get("estimated_speedup_vs_plain")
        parts.append(f"MTP depth {_depth_text(depth, requested, now, speedup)}")
        acceptance = snapshot.get("acceptance")
        if acceptance is not None:
            accepted, drafted = _count(snapshot.get("n_accepted")), _count(snapshot.get("n_drafted"))
            parts.append(f"{_percent(acceptance)} accepted ({accepted}/{drafted})")
    ttft = snapshot.get("ttft_s")
    if ttft is not None:
        parts.append(f"first token {_duration(ttft)}")
    return " · ".join(parts)


# Small building blocks -----------------------------------------------------------------


def _tint(palette: QPalette, amount: float) -> QColor:
    """The window colour moved towards the text colour: tracks and grid lines that suit any theme."""
    a, b = palette.color(QPalette.ColorRole.Window), palette.color(QPalette.ColorRole.WindowText)
    return QColor.fromRgbF(
        a.redF() + (b.redF() - a.redF()) * amount,
        a.greenF() + (b.greenF() - a.greenF()) * amount,
        a.blueF() + (b.blueF() - a.blueF()) * amount,
    )


def _scaled_font(base: QFont, factor: float, weight: QFont.Weight) -> QFont:
    font = QFont(base)
    if base.pointSizeF() > 0:
        font.setPointSizeF(base.pointSizeF() * factor)
    else:  # the font is sized in pixels
        font.setPixelSize(round(base.pixelSize() * factor))
    font.setWeight(weight)
    return font


def _show(widget: QWidget, visible: bool) -> None:
    # Only on a change: most updates leave visibility alone, and setVisible is not free even then.
    if widget.isHidden() == visible:
        widget.setVisible(visible)


def _muted(label: _Label) -> _Label:
    label.setForegroundRole(QPalette.ColorRole.PlaceholderText)
    return label


class _ValueLabel(QLabel):
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
        painter.setBrush(_tint(palette, 0.14))
        painter.drawRoundedRect(rect, radius, radius)
        if self._fraction:
            # Never narrower than the bar is tall, so a small share still shows as a dot.
            fill = QRectF(rect)
            fill.setWidth(max(rect.width() * min(self._fraction, 1.0), rect.height()))
            painter.setBrush(palette.color(QPalette.ColorRole.Highlight))
            painter.drawRoundedRect(fill, radius, radius)


# Public widgets ------------------------------------------------------------------------


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
            latest, peak = _rate(self._values[-1]), _rate(max(self._values))
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
        grid = _tint(palette, 0.18)
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
        self.value = _ValueLabel(f"Head {number} acceptance")
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
                f"{_percent(fraction)} · {accepted:,}/{drafted:,}",
                spoken=f"{_percent(fraction)}, {accepted:,} of {drafted:,} drafts accepted",
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
                row.show_used(_at(acceptance_per_position, index), _at(drafted, index) or 0, _at(accepted, index) or 0)


class StatsPanel(QWidget):
    """The narrow "Speed" panel beside the chat."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("statsPanel")
        self.setAccessibleName("Speed")
        self.setMinimumWidth(220)
        self._model_reason: str | None = None
        self.last_snapshot: dict[str, Any] | None = None  # the figures on show, as the engine sent them

        title = QLabel("Speed")
        title.setFont(_scaled_font(self.font(), 1.4, QFont.Weight.Bold))

        self.prompt_progress = QProgressBar()
        self.prompt_progress.setAccessibleName("Prompt processing")
        self.prompt_progress.hide()

        # Shown when MTP cannot draft at all: it explains a slower reply before anyone asks.
        self.mtp_banner = QLabel()
        self.mtp_banner.setAccessibleName("MTP status")
        self.mtp_banner.setTextFormat(Qt.TextFormat.RichText)
        self.mtp_banner.setWordWrap(True)
        self.mtp_banner.setFrameShape(QFrame.Shape.StyledPanel)
        self.mtp_banner.setAutoFillBackground(True)
        self.mtp_banner.setBackgroundRole(QPalette.ColorRole.AlternateBase)
        self.mtp_banner.setMargin(6)
        self.mtp_banner.hide()

        # Now
        self.now_value = _ValueLabel(NOW_NAME)
        self.now_value.setFont(_scaled_font(self.font(), 2.4, QFont.Weight.Bold))
        self.sparkline = Sparkline()
        now_row = QHBoxLayout()
        now_row.setSpacing(6)
        now_row.addWidget(self.now_value, 1)
        now_row.addWidget(_muted(QLabel("tok/s")), 0, Qt.AlignmentFlag.AlignBottom)

        # This reply
        self.average_value = _ValueLabel("Tokens per second over the reply")
        self.ttft_value = _ValueLabel("Time to first token")
        self.prompt_value = _ValueLabel("Prompt tokens")
        self.prompt_rate_value = _ValueLabel("Prompt tokens per second")
        self.generated_value = _ValueLabel("Generated tokens")

        # MTP drafts
        self.depth_value = _ValueLabel("MTP depth")
        self.depth_note = _muted(QLabel())
        self.depth_note.setAccessibleName("MTP depth note")
        self.depth_note.setWordWrap(True)
        self.depth_note.hide()
        self.drafted_value = _ValueLabel("Drafted tokens")
        self.accepted_value = _ValueLabel("Accepted drafts")
        self.acceptance_value = _ValueLabel("Acceptance")
        self.mean_value = _muted(_ValueLabel("Mean accepted length"))
        self.head_bars = HeadBars()

        column = QVBoxLayout(self)
        column.setContentsMargins(14, 12, 14, 12)
        column.setSpacing(6)
        column.addWidget(title)
        column.addWidget(self.prompt_progress)
        column.addWidget(self.mtp_banner)

        self.now_heading = self._heading(NOW_HEADING)
        column.addWidget(self.now_heading)
        column.addLayout(now_row)
        column.addWidget(self.sparkline)

        column.addWidget(self._heading("This reply"))
        column.addLayout(
            self._grid(
                ("Average", self.average_value),
                ("First token", self.ttft_value),
                ("Prompt", self.prompt_value),
                ("Prompt speed", self.prompt_rate_value),
                ("Generated", self.generated_value),
            )
        )

        column.addWidget(self._heading("MTP drafts"))
        column.addLayout(
            self._grid(
                ("Depth", self.depth_value),
                self.depth_note,
                ("Drafted", self.drafted_value),
                ("Accepted", self.accepted_value),
                ("Acceptance", self.acceptance_value),
                self.mean_value,
            )
        )
        column.addSpacing(4)
        column.addWidget(self.head_bars)
        column.addStretch(1)

    def sizeHint(self) -> QSize:
        return QSize(PANEL_WIDTH, super().sizeHint().height())

    def _heading(self, text: str) -> QLabel:
        label = _muted(QLabel(text))
        label.setFont(_scaled_font(self.font(), 1.0, QFont.Weight.Bold))
        label.setContentsMargins(0, 10, 0, 2)
        return label

    @staticmethod
    def _grid(*rows: tuple[str, _ValueLabel] | QWidget) -> QGridLayout:
        """Caption left, value right; a lone widget spans the row (a note under the figure above)."""
        grid = QGridLayout()
        grid.setHorizontalSpacing(10)
        grid.setVerticalSpacing(4)
        grid.setColumnStretch(1, 1)
        for index, row in enumerate(rows):
            if isinstance(row, QWidget):
                grid.addWidget(row, index, 0, 1, 2)
            else:
                grid.addWidget(QLabel(row[0]), index, 0)
                grid.addWidget(row[1], index, 1)
        return grid

    # Public API ------------------------------------------------------------------------

    def displayed_text(self) -> str:
        """Every figure on show as "<name>: <text>" lines, the MTP banner included when visible."""
        lines = [f"{label.accessibleName()}: {label.text()}" for label in self.findChildren(_ValueLabel)]
        if not self.mtp_banner.isHidden():
            lines.append(self.mtp_banner.accessibleDescription())
        if not self.depth_note.isHidden():
            lines.append(self.depth_note.text())
        return "\n".join(lines)

    def set_model(self, n_heads: int, mtp_off_reason: str | None) -> None:
        """A model loaded: how many heads it has, and in plain words why MTP cannot run (None if it can)."""
        self._model_reason = mtp_off_reason
        self.reset(n_heads)

    def reset(self, n_heads: int) -> None:
        """A new reply starts: every figure back to "–", an empty sparkline."""
        self.last_snapshot = None
        self._set_live(True)
        for label in (
            self.now_value,
            self.average_value,
            self.ttft_value,
            self.prompt_value,
            self.prompt_rate_value,
            self.generated_value,
            self.depth_value,
            self.drafted_value,
            self.accepted_value,
            self.acceptance_value,
        ):
            label.show_value(DASH)
        self.mean_value.show_value(f"{DASH} drafts accepted per step")
        self.sparkline.clear()
        _show(self.prompt_progress, False)
        self.head_bars.set_heads(n_heads)
        self.head_bars.set_values([], [], [], 0 if self._model_reason else n_heads)
        self._show_note(None, off=self._model_reason is not None)

    def finish(self, snapshot: Mapping[str, Any] | None = None) -> None:
        """The reply ended (with its final figures, when it has them): the big figure stops reading
        "now", which would freeze on the rate of the last two seconds, and shows the reply's average."""
        if snapshot is not None:
            self.update_stats(snapshot)
        self._set_live(False)
        average = (self.last_snapshot or {}).get("tokens_per_second")
        self.now_value.show_value(_rate(average))

    def is_live(self) -> bool:
        """True while a reply runs (the big figure is the rate now), False after it ended."""
        return self.now_heading.text() == NOW_HEADING

    def _set_live(self, live: bool) -> None:
        heading = NOW_HEADING if live else IDLE_HEADING
        if self.now_heading.text() != heading:
            self.now_heading.setText(heading)
            self.now_value.setAccessibleName(NOW_NAME if live else IDLE_NAME)

    def set_prompt_progress(self, done: int, total: int) -> None:
        """Prompt processing: the bar shows only while tokens remain to be read."""
        if total <= 0 or done >= total:
            _show(self.prompt_progress, False)
            return
        if self.prompt_progress.maximum() != total:
            self.prompt_progress.setRange(0, total)
        self.prompt_progress.setValue(done)
        self.prompt_progress.setFormat(f"Reading prompt {done:,} / {total:,}")
        _show(self.prompt_progress, True)

    def update_stats(self, snapshot: Mapping[str, Any]) -> None:
        """Show a ReplyStats.snapshot(): live while generating, then once more with the final figures."""
        self.last_snapshot = dict(snapshot)
        if snapshot.get("prompt_seconds") is not None:
            _show(self.prompt_progress, False)
        now = snapshot.get("window_tokens_per_second")
        self.now_value.show_value(_rate(now))
        if now is not None:
            self.sparkline.add_point(now)

        average = snapshot.get("tokens_per_second")
        self.average_value.show_value(f"{_rate(average)} tok/s" if average is not None else DASH, _rate(average))
        self.ttft_value.show_value(_duration(snapshot.get("ttft_s")))
        self.prompt_value.show_value(
            _prompt_text(int(snapshot.get("n_prompt") or 0), int(snapshot.get("n_prompt_evaluated") or 0))
        )
        prompt_rate = snapshot.get("prompt_tokens_per_second")
        self.prompt_rate_value.show_value(
            f"{_rate(prompt_rate)} tok/s" if prompt_rate is not None else DASH, _rate(prompt_rate)
        )
        self.generated_value.show_value(_count(snapshot.get("n_predicted")))

        depth = int(snapshot.get("mtp_depth") or 0)
        note = snapshot.get("mtp_note")
        drafting = depth > 0
        self.depth_value.show_value(
            _depth_text(
                depth,
                snapshot.get("mtp_depth_requested"),
                snapshot.get("auto_mode"),
                snapshot.get("estimated_speedup_vs_plain"),
                short=True,
            )
        )
        # With MTP off, zero drafts is not a figure worth reading: show it as not applicable.
        self.drafted_value.show_value(_count(snapshot.get("n_drafted")) if drafting else DASH)
        self.accepted_value.show_value(_count(snapshot.get("n_accepted")) if drafting else DASH)
        self.acceptance_value.show_value(_percent(snapshot.get("acceptance")))
        mean = snapshot.get("mean_accepted_length")
        self.mean_value.show_value(f"{DASH if mean is None else f'{mean:.1f}'} drafts accepted per step")
        if depth > self.head_bars.head_count():
            self.head_bars.set_heads(depth)
        self.head_bars.set_values(
            snapshot.get("acceptance_per_position") or [],
            snapshot.get("drafted_per_position") or [],
            snapshot.get("accepted_per_position") or [],
            depth,
        )
        self._show_note(note, off=not drafting or note in MTP_OFF_NOTES)

    def _show_note(self, note: str | None, off: bool) -> None:
        """MTP off: the reason in the banner. Running but not as asked (depth clamped): a quiet note."""
        text = MTP_NOTE_TEXT.get(note or "")
        if off:
            reason = _sentence(text or self._model_reason or "MTP is not drafting for this reply")
            markup = f"<b>MTP is off</b><br>{html.escape(reason)}"
            if markup != self.mtp_banner.text():
                self.mtp_banner.setText(markup)
                self.mtp_banner.setAccessibleDescription(f"MTP is off: {reason}")
            _show(self.mtp_banner, True)
            _show(self.depth_note, False)
            return
        _show(self.mtp_banner, False)
        if text:
            sentence = _sentence(text)
            if sentence != self.depth_note.text():
                self.depth_note.setText(sentence)
                self.depth_note.setAccessibleDescription(sentence)
        _show(self.depth_note, bool(text))
