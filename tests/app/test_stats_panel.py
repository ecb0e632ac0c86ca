"""The speed panel shows real ReplyStats snapshots as readable, accessible figures in light and dark themes."""

from __future__ import annotations

import math
import types
from collections.abc import Iterable, Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from PySide6.QtGui import QColor, QPalette, QPixmap
from PySide6.QtWidgets import QApplication, QLabel
from pytestqt.qtbot import QtBot

import engine.stats
from app.theme import apply_theme
from app.views.figures import DASH, count, percent, rate
from app.views.speed_charts import SPARK_POINTS, HeadBars, Sparkline
from app.views.stats_panel import PANEL_WIDTH, StatsPanel, reply_summary
from engine.api import MTP_NOTE_TEXT, MtpNote, StatsSnapshot
from engine.stats import ReplyStats
from tests.app.pixels import count_colour, drawn_fraction, region, rgb_pixels

# Drafts accepted per step at depth 3, repeated: head 1 accepts 8/10, head 2 6/10, head 3 3/10.
PATTERN = (3, 1, 2, 0, 3, 2, 3, 1, 0, 2)


class Clock:
    """Stands in for time.perf_counter() inside engine.stats, so rates come out exact."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr(engine.stats, "time", types.SimpleNamespace(perf_counter=fake))
    return fake


@pytest.fixture
def panel(qtbot: QtBot) -> StatsPanel:
    widget = StatsPanel()
    qtbot.addWidget(widget)
    widget.set_model(3, None)
    return widget


def new_stats(
    clock: Clock, depth: int = 3, requested: int = 3, note: MtpNote | None = None, heads: int = 3
) -> ReplyStats:
    # t_start's default factory is bound to the real perf_counter, so pass the fake time in.
    return ReplyStats(n_heads=heads, mtp_depth=depth, mtp_depth_requested=requested, mtp_note=note, t_start=clock())


def generate(
    panel: StatsPanel,
    clock: Clock,
    stats: ReplyStats,
    accepted: Iterable[int],
    step_s: Iterable[float] | None = None,
    every: int = 3,
) -> StatsSnapshot:
    """Prompt (1,234 tokens, 56 new) in 0.12 s, then one step per item, sending a snapshot every few steps."""
    clock.advance(0.12)
    stats.prompt_done(1234, 56)
    accepted = list(accepted)
    durations = list(step_s) if step_s is not None else [0.04] * len(accepted)
    for index, (n_accepted, seconds) in enumerate(zip(accepted, durations, strict=True)):
        clock.advance(seconds)
        stats.step(stats.mtp_depth, n_accepted, n_accepted + 1)
        if index % every == every - 1:
            panel.update_stats(stats.snapshot())
    return stats.snapshot()


def named(widget: StatsPanel | HeadBars, name: str) -> QLabel:
    matches = [label for label in widget.findChildren(QLabel) if label.accessibleName() == name]
    assert len(matches) == 1, name
    return matches[0]


def head_texts(panel: StatsPanel) -> list[str]:
    return [named(panel, f"Head {n} acceptance").text() for n in range(1, panel.head_bars.head_count() + 1)]


# Figures -------------------------------------------------------------------------------------


def test_figures_at_depth_three(panel: StatsPanel, clock: Clock) -> None:
    final = generate(panel, clock, new_stats(clock), PATTERN * 6)
    panel.update_stats(final)

    assert panel.acceptance_value.text() == "57%"  # 102 of 180
    assert panel.drafted_value.text() == "180"
    assert panel.accepted_value.text() == "102"
    assert head_texts(panel) == ["80% · 48/60", "60% · 36/60", "30% · 18/60"]
    assert [row.bar.fraction for row in panel.head_bars._rows] == pytest.approx([0.8, 0.6, 0.3])
    assert panel.mean_value.text() == "1.7 drafts accepted per step"
    assert panel.depth_value.text() == "3"
    assert panel.generated_value.text() == "162"  # 60 steps, each the accepted drafts plus one
    assert panel.prompt_value.text() == "1,234 (56 new)"
    assert panel.prompt_rate_value.text() == "466.7 tok/s"
    assert panel.ttft_value.text() == "160 ms"
    assert panel.average_value.text() == "67.5 tok/s"  # 162 tokens in 2.4 s
    assert panel.now_value.text() == f"{final.window_tokens_per_second:.1f}"
    assert panel.mtp_banner.isHidden() and panel.depth_note.isHidden()
    assert panel.last_snapshot == final


def test_labels_tell_screen_readers_name_and_value(panel: StatsPanel, clock: Clock) -> None:
    final = generate(panel, clock, new_stats(clock), PATTERN * 3)
    panel.update_stats(final)
    now = f"{final.window_tokens_per_second:.1f}"
    assert named(panel, "Tokens per second now").accessibleDescription() == f"Tokens per second now: {now}"
    assert panel.acceptance_value.accessibleDescription() == "Acceptance: 57%"
    assert panel.average_value.accessibleDescription() == "Tokens per second over the reply: 67.5"
    assert named(panel, "Head 2 acceptance").accessibleDescription() == (
        "Head 2 acceptance: 60%, 18 of 30 drafts accepted"
    )
    assert panel.sparkline.accessibleDescription().startswith(f"Latest {now} tokens per second")
    assert "Acceptance: 57%" in panel.displayed_text()


def test_large_numbers_get_thousands_separators(panel: StatsPanel, clock: Clock) -> None:
    stats = new_stats(clock)
    final = generate(panel, clock, stats, PATTERN * 120, step_s=[0.004] * 1200, every=300)
    panel.update_stats(final)
    assert panel.drafted_value.text() == "3,600"
    assert panel.generated_value.text() == "3,240"
    assert head_texts(panel)[0] == "80% · 960/1,200"
    assert panel.average_value.text() == "675.0 tok/s"


def test_none_values_show_a_dash(panel: StatsPanel, clock: Clock) -> None:
    stats = new_stats(clock)
    clock.advance(0.5)
    stats.prompt_done(300, 300)
    panel.update_stats(stats.snapshot())  # prompt read, nothing generated yet

    for label in (panel.now_value, panel.average_value, panel.ttft_value, panel.acceptance_value):
        assert label.text() == "–"
    assert panel.now_value.accessibleDescription() == "Tokens per second now: not available"
    assert panel.mean_value.text() == "– drafts accepted per step"
    assert panel.prompt_value.text() == "300 (all new)"
    assert panel.prompt_rate_value.text() == "600.0 tok/s"
    assert head_texts(panel) == ["–", "–", "–"]
    assert panel.sparkline.values == ()


def test_sparkline_gets_one_point_per_live_update(panel: StatsPanel, clock: Clock) -> None:
    # Steps of 40-80 ms, so the rate now moves; every third step sends a snapshot (10 Hz-ish).
    durations = [0.04 + 0.01 * (i % 5) for i in range(60)]
    generate(panel, clock, new_stats(clock), PATTERN * 6, step_s=durations)
    points = panel.sparkline.values
    assert len(points) == 20  # one per snapshot: each has two steps in the window already
    assert len(set(points)) > 5 and all(p > 0 for p in points)


def test_when_the_reply_ends_the_big_figure_is_its_average(panel: StatsPanel, clock: Clock) -> None:
    # The rate of the last two seconds differs from the whole reply's: slow steps first, fast ones last.
    durations = [0.12] * 30 + [0.03] * 30
    final = generate(panel, clock, new_stats(clock), PATTERN * 6, step_s=durations)
    panel.update_stats(final)
    assert panel.now_heading.text() == "Now" and panel.is_live()
    assert panel.now_value.text() == f"{final.window_tokens_per_second:.1f}"
    assert final.window_tokens_per_second != pytest.approx(final.tokens_per_second, rel=0.05)

    panel.finish(final)
    average = f"{final.tokens_per_second:.1f}"
    assert not panel.is_live() and panel.now_heading.text() == "Last reply"
    assert panel.now_value.text() == average == panel.average_value.text().removesuffix(" tok/s")
    assert panel.now_value.accessibleDescription() == f"Tokens per second, last reply's average: {average}"

    panel.reset(3)  # the next reply: live again
    assert panel.is_live() and panel.now_heading.text() == "Now" and panel.now_value.text() == "–"


def test_sparkline_starts_at_the_left_edge(qtbot: QtBot) -> None:
    spark = Sparkline()
    qtbot.addWidget(spark)
    spark.resize(240, 48)
    for value in (40.0, 60.0, 55.0, 70.0, 65.0):  # a short reply: five updates of 120
        spark.add_point(value)
    area = spark.plot_area()
    points = spark.points(area)
    assert points[0].x() == pytest.approx(area.left()) and points[-1].x() == pytest.approx(area.right())

    # What is drawn: the accent line and its shade reach the left edge, not only the right third.
    image = spark.grab().toImage()
    accent = spark.palette().color(QPalette.ColorRole.Highlight)

    def inked(x: int) -> bool:
        return any(_near(image.pixelColor(x, y), accent) for y in range(4, image.height() - 2))

    assert inked(4) and inked(image.width() // 3) and inked(image.width() - 6)


def _near(a: QColor, b: QColor) -> bool:
    return abs(a.red() - b.red()) + abs(a.green() - b.green()) + abs(a.blue() - b.blue()) < 60


def test_sparkline_keeps_only_the_recent_points(qtbot: QtBot) -> None:
    spark = Sparkline()
    qtbot.addWidget(spark)
    for value in range(SPARK_POINTS + 30):
        spark.add_point(float(value))
    assert len(spark.values) == SPARK_POINTS and spark.values[-1] == SPARK_POINTS + 29
    assert spark.accessibleDescription().startswith(f"Latest {SPARK_POINTS + 29:.1f} tokens per second")
    spark.clear()
    assert spark.values == () and spark.accessibleDescription() == "No tokens generated yet"


def test_unchanged_figures_do_not_touch_the_labels(
    panel: StatsPanel, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    stats = new_stats(clock)
    generate(panel, clock, stats, PATTERN)
    snapshot = stats.snapshot()
    panel.update_stats(snapshot)
    calls: list[str] = []
    monkeypatch.setattr(panel.acceptance_value, "setText", calls.append)
    monkeypatch.setattr(panel.drafted_value, "setText", calls.append)
    panel.update_stats(snapshot)
    assert calls == []


# Depth and MTP off ------------------------------------------------------------------------------


def test_heads_past_the_depth_are_greyed(panel: StatsPanel, clock: Clock) -> None:
    final = generate(panel, clock, new_stats(clock, depth=2, requested=2), [2, 1, 0, 2])
    panel.update_stats(final)
    assert head_texts(panel) == ["75% · 3/4", "50% · 2/4", "not used"]
    rows = panel.head_bars._rows
    assert rows[0].isEnabled() and not rows[2].isEnabled() and rows[2].bar.fraction is None
    assert panel.depth_value.text() == "2"


def test_auto_shows_what_it_does_now_and_what_drafting_is_worth() -> None:
    snapshot = StatsSnapshot(
        n_predicted=10, mtp_depth=3, mtp_depth_requested="auto", auto_mode="drafting", estimated_speedup_vs_plain=1.4234
    )
    assert "MTP depth Auto: drafting, ×1.42 vs plain" in reply_summary(snapshot)
    assert reply_summary(replace(snapshot, auto_mode="off")).endswith("MTP depth Auto: Off")


def test_clamped_depth_says_what_was_asked(panel: StatsPanel, clock: Clock) -> None:
    final = generate(panel, clock, new_stats(clock, depth=3, requested=5, note="depth_clamped"), PATTERN)
    panel.update_stats(final)
    assert panel.depth_value.text() == "3 (asked 5)"
    assert panel.mtp_banner.isHidden()
    assert not panel.depth_note.isHidden()
    assert panel.depth_note.text().startswith("The requested depth is more than the model's MTP heads")
    assert reply_summary(final).startswith("27 tokens · ")
    assert "MTP depth 3 (asked 5) · 57% accepted (17/30)" in reply_summary(final)


@pytest.mark.parametrize(
    ("note", "heads", "requested"),
    [("no_heads", 0, 0), ("weights_absent", 0, 0), ("depth_zero", 3, 0)],
)
def test_mtp_off_shows_the_reason(panel: StatsPanel, clock: Clock, note: MtpNote, heads: int, requested: int) -> None:
    panel.set_model(heads, None)
    final = generate(panel, clock, new_stats(clock, depth=0, requested=requested, note=note, heads=heads), [0] * 40)
    panel.update_stats(final)
    assert not panel.mtp_banner.isHidden()
    reason = MTP_NOTE_TEXT[note]
    assert "MTP is off" in panel.mtp_banner.text()
    assert panel.mtp_banner.accessibleDescription() == f"MTP is off: {reason[0].upper()}{reason[1:]}."
    assert panel.depth_value.text() == "Off"
    assert panel.drafted_value.text() == "–" and panel.acceptance_value.text() == "–"
    assert panel.mean_value.text() == "– drafts accepted per step"
    assert head_texts(panel) == ["not used"] * heads
    assert panel.generated_value.text() == "40"


def test_model_without_mtp_shows_the_reason_before_any_reply(panel: StatsPanel) -> None:
    panel.set_model(0, MTP_NOTE_TEXT["weights_absent"])
    assert not panel.mtp_banner.isHidden()
    assert "separate MTP file" in panel.mtp_banner.text()
    assert panel.head_bars.head_count() == 0
    panel.set_model(3, None)
    assert panel.mtp_banner.isHidden()
    assert head_texts(panel) == ["–", "–", "–"]


def test_head_bars_follow_the_head_count(qtbot: QtBot) -> None:
    bars = HeadBars()
    qtbot.addWidget(bars)
    bars.set_heads(3)
    bars.set_values([0.9, None], [10, 0], [9, 0], depth=2)
    assert [named_head(bars, n) for n in (1, 2, 3)] == ["90% · 9/10", "–", "not used"]
    bars.set_heads(1)
    assert bars.head_count() == 1


def named_head(bars: HeadBars, number: int) -> str:
    labels = [label for label in bars.findChildren(QLabel) if label.accessibleName() == f"Head {number} acceptance"]
    return labels[0].text()


# Prompt progress and reset ----------------------------------------------------------------------


def test_prompt_progress_shows_only_while_reading(panel: StatsPanel, clock: Clock) -> None:
    assert panel.prompt_progress.isHidden()
    panel.set_prompt_progress(512, 2048)
    assert not panel.prompt_progress.isHidden()
    assert panel.prompt_progress.text() == "Reading prompt 512 / 2,048"
    panel.set_prompt_progress(2048, 2048)
    assert panel.prompt_progress.isHidden()

    panel.set_prompt_progress(100, 2048)
    generate(panel, clock, new_stats(clock), PATTERN)  # first snapshot after the prompt hides it too
    assert panel.prompt_progress.isHidden()


def test_reset_clears_everything(panel: StatsPanel, clock: Clock) -> None:
    generate(panel, clock, new_stats(clock, depth=3, requested=5, note="depth_clamped"), PATTERN * 3)
    assert panel.sparkline.values and panel.acceptance_value.text() != "–"
    panel.set_prompt_progress(1, 10)
    panel.reset(3)
    assert panel.sparkline.values == ()
    for label in (panel.now_value, panel.acceptance_value, panel.generated_value, panel.prompt_value):
        assert label.text() == "–"
    assert head_texts(panel) == ["–", "–", "–"]
    assert panel.depth_note.isHidden() and panel.prompt_progress.isHidden()
    assert panel.last_snapshot is None


# Summary line -----------------------------------------------------------------------------------


def test_reply_summary(clock: Clock, panel: StatsPanel) -> None:
    final = generate(panel, clock, new_stats(clock), PATTERN * 6)
    assert reply_summary(final) == "162 tokens · 67.5 tok/s · MTP depth 3 · 57% accepted (102/180) · first token 160 ms"

    off = generate(panel, clock, new_stats(clock, depth=0, requested=0, note="depth_zero"), [0] * 40)
    # MTP off: the speed panel says so, with the reason; the line under the reply does not repeat it.
    assert reply_summary(off) == "40 tokens · 25.0 tok/s · first token 160 ms"

    no_heads = replace(off, mtp_note="no_heads", ttft_s=1.234)
    assert reply_summary(no_heads) == "40 tokens · 25.0 tok/s · first token 1.23 s"

    one = new_stats(clock)
    clock.advance(0.3)
    one.prompt_done(5, 5)
    one.step(0, 0, 1)  # a single token: no rate, no drafts yet
    assert reply_summary(one.snapshot()) == "1 token · MTP depth 3 · first token 300 ms"


# Screenshots ------------------------------------------------------------------------------------


@pytest.fixture
def themed(request: pytest.FixtureRequest) -> Iterator[str]:
    """The app's own theme, applied as the app applies it (to the QApplication)."""
    app = QApplication.instance()
    assert isinstance(app, QApplication)
    apply_theme(app, request.param)
    yield request.param
    apply_theme(app, "light")


@pytest.mark.parametrize("themed", ["light", "dark"], indirect=True)
def test_screenshot_mid_generation(qtbot: QtBot, clock: Clock, themed: str, screenshot_dir: Path) -> None:
    theme = themed
    panel = StatsPanel()
    qtbot.addWidget(panel)
    panel.set_model(3, None)
    # Runs of easy text (most drafts accepted) and harder text, so the rate now rises and falls.
    accepted = [(3, 3, 2, 3)[i % 4] if (i // 40) % 2 else PATTERN[i % 10] for i in range(240)]
    durations = [0.045 + 0.01 * math.sin(i / 9) for i in range(240)]
    final = generate(panel, clock, new_stats(clock), accepted, step_s=durations)
    panel.resize(PANEL_WIDTH, panel.sizeHint().height())
    panel.show()
    qtbot.waitExposed(panel)

    # Nothing clipped: every figure fits the width its label has.
    for label in panel.findChildren(QLabel):
        if label.isVisible() and not label.wordWrap():
            assert label.width() >= label.sizeHint().width(), label.accessibleName() or label.text()

    screenshot_dir.mkdir(parents=True, exist_ok=True)
    pixmap = QPixmap(panel.size() * 2)  # 2x, so the docs image stays crisp on high-DPI screens
    pixmap.setDevicePixelRatio(2)
    panel.render(pixmap)
    path = screenshot_dir / f"stats-panel-{theme}.png"
    assert pixmap.save(str(path))

    # What the shot shows: the reply's figures as the labels hold them, and in the pixels a drawn
    # panel, the sparkline's accent line and the head bars' accent fill.
    assert panel.last_snapshot == final and panel.is_live()
    shown = panel.displayed_text().splitlines()
    assert f"Generated tokens: {count(final.n_predicted)}" in shown and final.n_predicted > 240
    assert f"Acceptance: {percent(final.acceptance)}" in shown and final.acceptance
    assert panel.now_value.text() == rate(final.window_tokens_per_second) != DASH
    pixels, palette = rgb_pixels(pixmap), panel.palette()
    accent = palette.color(QPalette.ColorRole.Highlight)
    assert drawn_fraction(pixels, palette.color(panel.backgroundRole())) > 0.05
    assert count_colour(region(pixels, panel, panel.sparkline, 2), accent) > 200
    assert count_colour(region(pixels, panel, panel.head_bars, 2), accent) > 2000
