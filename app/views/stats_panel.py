"""The speed panel: how fast the current reply runs and how many MTP drafts the trunk accepts.

Only displays figures it is given (api.StatsSnapshot); it never talks to the engine.
Updates arrive up to ten times a second, so every setter changes a label only when its text
changes, and the sparkline repaints only itself.
"""

from __future__ import annotations

import html
from typing import TypeVar

from PySide6.QtCore import QSize, Qt
from PySide6.QtGui import QFont, QPalette
from PySide6.QtWidgets import (
    QFrame,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QVBoxLayout,
    QWidget,
)

from app.views.figures import DASH, count, duration, percent, rate
from app.views.speed_charts import HeadBars, Sparkline, ValueLabel
from engine.api import AUTO, MTP_NOTE_TEXT, StatsSnapshot

NOW_HEADING, IDLE_HEADING = "Now", "Last reply"  # the big figure: the rate right now, or the reply's average
NOW_NAME, IDLE_NAME = "Tokens per second now", "Tokens per second, last reply's average"
PANEL_WIDTH = 260
MTP_OFF_NOTES = ("no_heads", "weights_absent", "depth_zero")  # notes meaning no drafting at all this reply

_Label = TypeVar("_Label", bound=QLabel)


# Formatting ----------------------------------------------------------------------------


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


def reply_summary(snapshot: StatsSnapshot) -> str:
    """One line for under a finished message: tokens, speed, MTP and time to first token.

    A reply that ran without MTP says nothing about it: the speed panel says once, with the
    reason, that MTP is off; a line under every reply repeating it would be noise."""
    n = snapshot.n_predicted
    parts = [f"{n:,} token" if n == 1 else f"{n:,} tokens"]
    tps = snapshot.tokens_per_second
    if tps is not None:
        parts.append(f"{rate(tps)} tok/s")
    depth = snapshot.mtp_depth
    if depth > 0:
        requested, now = snapshot.mtp_depth_requested, snapshot.auto_mode
        speedup = snapshot.estimated_speedup_vs_plain
        parts.append(f"MTP depth {_depth_text(depth, requested, now, speedup)}")
        acceptance = snapshot.acceptance
        if acceptance is not None:
            accepted, drafted = count(snapshot.n_accepted), count(snapshot.n_drafted)
            parts.append(f"{percent(acceptance)} accepted ({accepted}/{drafted})")
    ttft = snapshot.ttft_s
    if ttft is not None:
        parts.append(f"first token {duration(ttft)}")
    return " · ".join(parts)


# Small building blocks -----------------------------------------------------------------


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


class StatsPanel(QWidget):
    """The narrow "Speed" panel beside the chat."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("statsPanel")
        self.setAccessibleName("Speed")
        self.setMinimumWidth(220)
        self._model_reason: str | None = None
        self.last_snapshot: StatsSnapshot | None = None  # the figures on show, as the engine sent them

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
        self.now_value = ValueLabel(NOW_NAME)
        self.now_value.setFont(_scaled_font(self.font(), 2.4, QFont.Weight.Bold))
        self.sparkline = Sparkline()
        now_row = QHBoxLayout()
        now_row.setSpacing(6)
        now_row.addWidget(self.now_value, 1)
        now_row.addWidget(_muted(QLabel("tok/s")), 0, Qt.AlignmentFlag.AlignBottom)

        # This reply
        self.average_value = ValueLabel("Tokens per second over the reply")
        self.ttft_value = ValueLabel("Time to first token")
        self.prompt_value = ValueLabel("Prompt tokens")
        self.prompt_rate_value = ValueLabel("Prompt tokens per second")
        self.generated_value = ValueLabel("Generated tokens")
        # Apart from prompt speed (which leaves it out): shown only for a prompt with pictures.
        self.picture_caption = QLabel("Picture encoding")
        self.picture_value = ValueLabel("Picture encoding")

        # MTP drafts
        self.depth_value = ValueLabel("MTP depth")
        self.depth_note = _muted(QLabel())
        self.depth_note.setAccessibleName("MTP depth note")
        self.depth_note.setWordWrap(True)
        self.depth_note.hide()
        self.drafted_value = ValueLabel("Drafted tokens")
        self.accepted_value = ValueLabel("Accepted drafts")
        self.acceptance_value = ValueLabel("Acceptance")
        self.mean_value = _muted(ValueLabel("Mean accepted length"))
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
        reply_grid = self._grid(
            ("Average", self.average_value),
            ("First token", self.ttft_value),
            ("Prompt", self.prompt_value),
            ("Prompt speed", self.prompt_rate_value),
            ("Generated", self.generated_value),
        )
        reply_grid.addWidget(self.picture_caption, reply_grid.rowCount(), 0)
        reply_grid.addWidget(self.picture_value, reply_grid.rowCount() - 1, 1)
        column.addLayout(reply_grid)
        self._show_pictures(0, 0.0)

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
    def _grid(*rows: tuple[str, ValueLabel] | QWidget) -> QGridLayout:
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
        lines = [
            f"{label.accessibleName()}: {label.text()}"
            for label in self.findChildren(ValueLabel)
            if label is not self.picture_value or not label.isHidden()  # a row only replies to pictures have
        ]
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
        self._show_pictures(0, 0.0)
        self.sparkline.clear()
        _show(self.prompt_progress, False)
        self.head_bars.set_heads(n_heads)
        self.head_bars.set_values([], [], [], 0 if self._model_reason else n_heads)
        self._show_note(None, off=self._model_reason is not None)

    def finish(self, snapshot: StatsSnapshot | None = None) -> None:
        """The reply ended (with its final figures, when it has them): the big figure stops reading
        "now", which would freeze on the rate of the last two seconds, and shows the reply's average."""
        if snapshot is not None:
            self.update_stats(snapshot)
        self._set_live(False)
        average = self.last_snapshot.tokens_per_second if self.last_snapshot else None
        self.now_value.show_value(rate(average))

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

    def update_stats(self, snapshot: StatsSnapshot) -> None:
        """Show the figures: live while generating, then once more with the final ones."""
        self.last_snapshot = snapshot
        if snapshot.prompt_seconds is not None:
            _show(self.prompt_progress, False)
        now = snapshot.window_tokens_per_second
        self.now_value.show_value(rate(now))
        if now is not None:
            self.sparkline.add_point(now)

        average = snapshot.tokens_per_second
        self.average_value.show_value(f"{rate(average)} tok/s" if average is not None else DASH, rate(average))
        self.ttft_value.show_value(duration(snapshot.ttft_s))
        self.prompt_value.show_value(_prompt_text(snapshot.n_prompt, snapshot.n_prompt_evaluated))
        prompt_rate = snapshot.prompt_tokens_per_second
        self.prompt_rate_value.show_value(
            f"{rate(prompt_rate)} tok/s" if prompt_rate is not None else DASH, rate(prompt_rate)
        )
        self.generated_value.show_value(count(snapshot.n_predicted))
        self._show_pictures(snapshot.n_image_tokens, snapshot.image_encode_seconds)

        depth = snapshot.mtp_depth
        note = snapshot.mtp_note
        drafting = depth > 0
        self.depth_value.show_value(
            _depth_text(
                depth,
                snapshot.mtp_depth_requested,
                snapshot.auto_mode,
                snapshot.estimated_speedup_vs_plain,
                short=True,
            )
        )
        # With MTP off, zero drafts is not a figure worth reading: show it as not applicable.
        self.drafted_value.show_value(count(snapshot.n_drafted) if drafting else DASH)
        self.accepted_value.show_value(count(snapshot.n_accepted) if drafting else DASH)
        self.acceptance_value.show_value(percent(snapshot.acceptance))
        mean = snapshot.mean_accepted_length
        self.mean_value.show_value(f"{DASH if mean is None else f'{mean:.1f}'} drafts accepted per step")
        if depth > self.head_bars.head_count():
            self.head_bars.set_heads(depth)
        self.head_bars.set_values(
            snapshot.acceptance_per_position,
            snapshot.drafted_per_position,
            snapshot.accepted_per_position,
            depth,
        )
        self._show_note(note, off=not drafting or note in MTP_OFF_NOTES)

    def _show_pictures(self, n_tokens: int, seconds: float) -> None:
        self.picture_value.show_value(f"{duration(seconds)} · {n_tokens:,} tokens", duration(seconds))
        _show(self.picture_caption, n_tokens > 0)
        _show(self.picture_value, n_tokens > 0)

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
