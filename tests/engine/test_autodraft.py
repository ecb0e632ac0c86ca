"""Auto: plain decoding or dynamic drafting, whichever is faster, found quickly and cheaply; text unchanged."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from engine import automemory
from engine.api import AUTO, GenerationParams, LoadOptions
from engine.autodraft import RETRY_MIN, TRIAL_MIN_DRAFTS, AutoDraft, StepPlan
from engine.draftcost import DraftCosts
from engine.generate import Reply
from engine.llama import Context
from engine.runtime import Runtime
from tests.engine.test_lossless import PROMPT
from tests.fixtures import builders
from tests.fixtures.calibrated import build_calibrated

WINDOW = 16


def simulate(auto: AutoDraft, steps: int, pace: Callable[[int, StepPlan], float]) -> tuple[float, list[StepPlan]]:
    """Run `steps` one-token steps whose time per token `pace(step, plan)` gives; (total time, plans)."""
    total, plans = 0.0, []
    for step in range(steps):
        plan = auto.plan()
        seconds = pace(step, plan)
        auto.record(plan, seconds, 1)
        total += seconds
        plans.append(plan)
    return total, plans


def paces(off: float, rows: float, drafting: float) -> Callable[[int, StepPlan], float]:
    """Off steps at `off`, plain steps keeping rows at `rows`, drafting steps at `drafting` (per token)."""
    return lambda _step, plan: drafting if plan.draft else rows if plan.rows else off


def test_settles_on_off_within_32_steps_where_drafting_cannot_pay() -> None:
    """Drafting steps where drafts cannot pay run at 1.1: dynamic drafting mostly drafts nothing there
    (its deeper timing steps and a few confident drafts cost the rest), with the rows kept (1.03)."""
    auto = AutoDraft(3, WINDOW)
    total, plans = simulate(auto, 256, paces(off=1.0, rows=1.03, drafting=1.1))
    first_off = next(i for i, p in enumerate(plans) if not p.rows)
    assert first_off < 32 and auto.mode == "off"
    assert total <= 1.02 * 256  # against plain decoding throughout, over a 256-token reply


def test_keeps_drafting_where_it_pays_and_looks_at_off_ever_less_often() -> None:
    auto = AutoDraft(3, WINDOW)
    total, plans = simulate(auto, 2048, paces(off=1.0, rows=1.03, drafting=0.6))
    assert auto.mode == "draft"
    assert total <= 1.03 * 0.6 * 2048
    late_plain = sum(1 for p in plans[1024:] if not p.draft)
    assert late_plain <= 12  # a look at Off every RETRY_MAX steps at most, once settled


def test_follows_the_text_both_ways() -> None:
    auto = AutoDraft(3, WINDOW)

    # Heads suit the text for 400 steps, then not for 600, then again.
    def pace(step: int, plan: StepPlan) -> float:
        drafting = 0.6 if step < 400 or step >= 1000 else 1.4
        return drafting if plan.draft else 1.03 if plan.rows else 1.0

    _, plans = simulate(auto, 1600, pace)
    assert all(p.draft for p in plans[300:400])
    switched_off = next(i for i in range(400, 1000) if not plans[i].rows)
    assert switched_off < 400 + 40  # drafting slower than Off's last pace: Off is timed at once
    # Back at Off, retries come at intervals that double while drafting loses, then find the change.
    back = next(i for i in range(1000, 1600) if all(p.draft for p in plans[i : i + 50]))
    assert back < 1000 + 2 * 1024


@pytest.mark.parametrize(("drafting", "mode"), [(1.01, "draft"), (0.99, "draft"), (1.05, "off")])
def test_drafting_is_left_only_when_clearly_slower(drafting: float, mode: str) -> None:
    """A near tie keeps drafting (a wrong Off idles the heads until the next look); a clear loss does not."""
    auto = AutoDraft(3, WINDOW)
    simulate(auto, 40, paces(off=1.0, rows=1.0, drafting=drafting))
    assert auto.mode == mode


def test_a_run_of_misses_does_not_make_drafting_look_slower_than_off() -> None:
    """Drafting yields two tokens a step except for a run of six misses every 50 steps: 0.75 s a token against
    Off's 1.0. Averaged over the last few steps, each run read drafting 1.2 s a token and had Off chosen."""
    auto = AutoDraft(3, WINDOW)
    plans: list[StepPlan] = []
    for step in range(1500):
        plan = auto.plan()
        tokens = (1 if step % 50 >= 44 else 2) if plan.draft else 1
        auto.record(plan, 1.4 if plan.draft else 1.0, tokens)
        plans.append(plan)
    assert all(p.rows for p in plans)  # never settled on Off
    assert sum(1 for p in plans if p.draft) > 0.97 * len(plans)


def test_a_new_reply_at_off_gets_a_trial_a_few_tokens_in() -> None:
    auto = AutoDraft(3, WINDOW)
    plans: list[StepPlan] = []
    while len(plans) < RETRY_MIN or any(p.rows for p in plans[-RETRY_MIN:]):  # Off, no trial lately
        plans += simulate(auto, 1, paces(off=1.0, rows=1.03, drafting=1.4))[1]
    assert auto.mode == "off"
    auto.new_reply()
    _, plans = simulate(auto, 30, paces(off=1.0, rows=1.03, drafting=1.4))
    assert not plans[0].restart_heads and plans[0].rows  # the prompt gave the heads their window
    assert any(p.draft for p in plans[:20])
    auto.new_reply()  # right after a trial: no other
    _, plans = simulate(auto, 30, paces(off=1.0, rows=1.03, drafting=1.4))
    assert not any(p.draft for p in plans)


def test_a_trial_after_off_refills_the_heads_window_first() -> None:
    auto = AutoDraft(3, WINDOW)
    _, plans = simulate(auto, RETRY_MIN * 8, paces(off=1.0, rows=1.03, drafting=1.4))
    restarts = [i for i, p in enumerate(plans) if p.restart_heads]
    assert restarts
    for i in restarts:
        assert all(p.rows and not p.draft for p in plans[i : i + WINDOW + 1]) and plans[i + WINDOW + 1].draft


def test_a_new_reply_ends_a_window_refill_in_progress() -> None:
    """The prompt fills the heads' window: a refill begun in the last reply must not run on through
    this one with rows kept and nothing drafted (with n_swa 512, it used to last a whole reply)."""
    auto = AutoDraft(3, 512)
    simulate(auto, 1, paces(off=1.0, rows=1.03, drafting=1.4))
    while auto.phase != "fill":
        simulate(auto, 1, paces(off=1.0, rows=1.03, drafting=1.4))
    auto.new_reply()
    _, plans = simulate(auto, 30, paces(off=1.0, rows=1.03, drafting=1.4))
    assert not plans[0].restart_heads and any(p.draft for p in plans[:10])


def test_drafting_pace_is_time_over_tokens_and_leaves_out_timing_probes() -> None:
    """Steps alternating one token in 1.0 s and four in 2.0 s run at 0.6 s a token (an average of each
    step's own pace says 0.75, slower than Off's 0.7); a probe timing a batch size at any cost does not count."""
    auto = AutoDraft(3, WINDOW)
    auto.plain_pace = 0.7
    draft = StepPlan(rows=True, draft=True, restart_heads=False)
    for i in range(40):
        auto.record(draft, *((1.0, 1) if i % 2 else (2.0, 4)))
        auto.record(draft, 50.0, 1, probe=True)
    assert auto.draft_pace is not None and 0.55 < auto.draft_pace < 0.65
    assert auto.mode == "draft"


def test_a_trial_that_plainly_loses_ends_early() -> None:
    """Where Off is best, each new reply's trial stops once drafting is clearly slower than Off's known pace."""
    auto = AutoDraft(3, WINDOW)
    simulate(auto, 2 * RETRY_MIN, paces(off=1.0, rows=1.03, drafting=1.4))
    assert auto.settled_off
    auto._since_trial = RETRY_MIN  # a while since the last trial
    auto.new_reply()
    _, plans = simulate(auto, 40, paces(off=1.0, rows=1.03, drafting=1.4))
    assert 0 < sum(p.draft for p in plans) <= TRIAL_MIN_DRAFTS


def test_heads_without_a_window_are_never_let_fall_behind() -> None:
    auto = AutoDraft(3, None)
    _, plans = simulate(auto, 600, paces(off=1.0, rows=1.03, drafting=1.4))
    assert auto.mode == "off" and all(p.rows for p in plans)


def test_what_it_learned_survives_a_reload() -> None:
    auto = AutoDraft(3, WINDOW)
    simulate(auto, 200, paces(off=1.0, rows=1.03, drafting=1.4))
    again = AutoDraft(3, WINDOW)
    assert again.restore(auto.state())
    assert (again.mode, again.plain_pace, again.draft_pace) == (auto.mode, auto.plain_pace, auto.draft_pace)
    _, plans = simulate(again, 10, paces(off=1.0, rows=1.03, drafting=1.4))
    assert not any(p.draft for p in plans)  # settled at Off from the first step, no trial
    for broken in ({}, {**auto.state(), "version": 0}, {**auto.state(), "mode": "fast"}, {**auto.state(), "costs": []}):
        assert not AutoDraft(3, WINDOW).restore(broken)
    assert not AutoDraft(2, WINDOW).restore(auto.state())  # another model's heads


# --- through the generator ---


@pytest.fixture(scope="module")
def calibrated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_calibrated(tmp_path_factory.mktemp("auto") / "calibrated.gguf")[0]


class DraftAlways(DraftCosts):
    """Costs under which every draft pays: the test is about which positions the heads saw, not timing."""

    def verify_seconds(self, rows: int) -> float:
        return 1.0

    def token_value(self) -> float:
        return 1.0

    def forced_length(self) -> None:
        return None


class Scripted(AutoDraft):
    """Auto made to switch often: Off for 20 steps, a window fill, 10 drafting steps, over and over.
    With rows_at_off, Off keeps the rows and the heads up to date: what the heads would have drafted
    had they never stopped."""

    rows_at_off = False

    def __post_init__(self) -> None:
        super().__post_init__()
        self.costs = DraftAlways(self.max_depth)
        self._n = 0

    def plan(self) -> StepPlan:
        cycle = self._n % (20 + (self.window or 0) + 1 + 10)
        self._n += 1
        if cycle < 20:
            self._rows_on = self.rows_at_off
            return StepPlan(rows=self.rows_at_off, draft=False, restart_heads=False)
        restart = not self._rows_on
        self._rows_on = True
        return StepPlan(rows=True, draft=cycle >= 20 + (self.window or 0) + 1, restart_heads=restart)


class ScriptedKeepingRows(Scripted):
    rows_at_off = True


@pytest.fixture(scope="module")
def context_heads(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Heads whose drafts depend on what their KV caches hold and on the hidden rows they are given."""
    path = tmp_path_factory.mktemp("auto") / "context-heads.gguf"
    return builders.build_context_heads(path, builders.oracle(), strength=10.0, hidden_mix=0.3)


def auto_reply(runtime: Runtime, auto: AutoDraft, monkeypatch: pytest.MonkeyPatch) -> Reply:
    monkeypatch.setattr(runtime.generator, "auto", lambda _depth: auto)
    runtime.generator.reset()
    return runtime.generate(runtime.tokenize(PROMPT), GenerationParams(max_tokens=300, mtp_depth=AUTO))


@pytest.mark.parametrize("fixture", ["live", "calibrated", "context-heads"])
def test_heads_draft_after_a_window_refill_exactly_as_if_they_had_never_stopped(
    load: Callable[..., Runtime],
    live_gguf: Path,
    calibrated: Path,
    context_heads: Path,
    fixture: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Off drops the rows; a trial refills the heads' 16-position window first. Then every draft, and so
    every acceptance, is what heads kept up to date all along give, and the text is plain decoding's."""
    path = {"live": live_gguf, "calibrated": calibrated, "context-heads": context_heads}[fixture]
    runtime = load(path, n_ctx=4096)
    assert runtime.generator.head_window == 16
    plain = runtime.generate(runtime.tokenize(PROMPT), GenerationParams(max_tokens=300, mtp_depth=0)).token_ids
    dropping = auto_reply(runtime, Scripted(3, 16), monkeypatch)
    keeping = auto_reply(runtime, ScriptedKeepingRows(3, 16), monkeypatch)
    assert dropping.token_ids == keeping.token_ids == plain
    assert dropping.stats.n_drafted > 50 and dropping.stats.n_accepted > 0
    assert dropping.stats.accepted_per_position == keeping.stats.accepted_per_position
    assert dropping.stats.drafted_per_position == keeping.stats.drafted_per_position


def test_off_steps_keep_no_hidden_rows(
    load: Callable[..., Runtime], live_gguf: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    runtime = load(live_gguf)
    calls: list[bool] = []
    real = Context.keep_hidden_rows

    def recording(self: Context, on: bool) -> None:
        calls.append(on)
        real(self, on)

    monkeypatch.setattr(Context, "keep_hidden_rows", recording)
    scripted = Scripted(3, runtime.generator.head_window)
    monkeypatch.setattr(runtime.generator, "auto", lambda _depth: scripted)
    runtime.generate(runtime.tokenize(PROMPT), GenerationParams(max_tokens=120, mtp_depth=AUTO))
    assert calls[0] is True and False in calls and calls.count(True) >= 3  # on for the prompt, off at Off, on again


def test_auto_runs_plainly_on_a_fixture_where_drafting_cannot_pay(
    load: Callable[..., Runtime], live_gguf: Path
) -> None:
    """Through the real loop, without timing assumptions: the reply's stats say what Auto did."""
    runtime = load(live_gguf)
    for _ in range(3):
        runtime.generator.reset()
        reply = runtime.generate(runtime.tokenize(PROMPT), GenerationParams(max_tokens=200, mtp_depth=AUTO))
        assert reply.stats.mtp_depth_requested == AUTO and reply.stats.depth_now is not None
    auto = runtime.generator.auto(3)
    assert auto.plain_pace and auto.draft_pace and auto.speedup_vs_plain() is not None


def test_what_auto_learned_is_kept_across_loads_of_the_same_files_on_this_machine(
    load: Callable[..., Runtime], live_gguf: Path, tmp_path: Path
) -> None:
    first = load(live_gguf)
    first.generate(first.tokenize(PROMPT), GenerationParams(max_tokens=60, mtp_depth=AUTO))
    learned = first.generator.auto(3).state()
    assert automemory.load(automemory.memory_key([live_gguf], 1)) == learned
    again = load(live_gguf)
    assert again.generator.auto(3).state() == learned  # taken up at load, before any reply
    other_threads = Runtime.load(live_gguf, None, LoadOptions(n_ctx=2048, n_threads=2))
    assert other_threads.generator.auto(3).plain_pace is None  # another thread count: its own figures
    other_threads.close()
    again.forget_auto()
    assert automemory.load(automemory.memory_key([live_gguf], 1)) is None
    assert again.generator.auto(3).plain_pace is None
    copy = tmp_path / "copy.gguf"  # other files (another size or time): nothing remembered
    copy.write_bytes(live_gguf.read_bytes())
    assert load(copy).generator.auto(3).plain_pace is None


def test_drafting_that_beats_one_row_of_verification_skips_timing_off_at_first() -> None:
    """A plain step cannot be quicker than verifying its one row: drafting faster than that wins outright."""
    auto = AutoDraft(3, WINDOW)
    auto.costs.record_step(1, 1.0, 1.05, 1, 0)  # one row verified in 1.0
    _, plans = simulate(auto, 40, paces(off=1.0, rows=1.03, drafting=0.5))
    assert all(p.draft for p in plans) and auto.mode == "draft"


class AlwaysOff(AutoDraft):
    def plan(self) -> StepPlan:
        self._rows_on = False
        return StepPlan(rows=False, draft=False, restart_heads=False)


def test_after_a_long_stretch_at_off_the_next_prompt_rereads_only_the_heads_window(
    load: Callable[..., Runtime], live_gguf: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The heads saw nothing of a reply run plainly; the next prompt gives them their window again
    instead of re-reading the whole reply, and drafting at depth 3 is still exact."""
    runtime = load(live_gguf, n_ctx=4096)
    monkeypatch.setattr(runtime.generator, "auto", lambda _depth: AlwaysOff(3, 16))
    prompt = runtime.tokenize(PROMPT)
    first = runtime.generate(prompt, GenerationParams(max_tokens=200, mtp_depth=AUTO))
    follow_up = [*prompt, *first.token_ids, *runtime.tokenize(" again")[1:]]
    new = len(follow_up) - len(runtime.generator.cached)  # tokens the cache lacks
    second = runtime.generate(follow_up, GenerationParams(max_tokens=100, mtp_depth=3))
    assert second.stats.n_prompt_evaluated <= new + 16 + 2
    runtime.generator.reset()
    again = runtime.generate(follow_up, GenerationParams(max_tokens=100, mtp_depth=0))
    assert second.token_ids == again.token_ids and second.stats.n_accepted > 0


def test_a_plain_pace_from_a_busier_moment_cannot_claim_more_than_the_tokens_per_step() -> None:
    auto = AutoDraft(3, WINDOW)
    auto.plain_pace = 0.5  # remembered from a load on a busy machine
    for _ in range(4):
        auto.record(StepPlan(rows=True, draft=True, restart_heads=False), 0.02, 2)
    speedup = auto.speedup_vs_plain()
    assert speedup is not None and speedup <= 2.0
