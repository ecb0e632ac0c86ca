"""Auto: plain decoding or dynamic drafting, whichever runs faster on this model, machine and text.

Dynamic drafting (draftcost.py) already drafts only where a draft pays for itself; what it cannot
see is the price of keeping MTP running at all. To draft, the trunk must hand every position's
hidden row to the heads and the heads must keep up: work plain decoding does not do. Where drafts
rarely pay (large mixture-of-experts models on a CPU often), that keep-up makes a reply slower
than plain decoding. So Auto times both, side by side on the same text:

- **Off**: plain steps, no hidden rows, no heads: llama.cpp's own pace;
- **Drafting**: rows on, heads kept up, each step drafting as far as it pays.

It starts with a trial of drafting, then a few plain steps (unless drafting already beat a bound
below plain decoding's pace: verifying one row), and keeps the faster (drafting is left only
when it is MARGIN slower). Drafting's pace counts only the steps that draft as far as it pays,
not those dynamic drafting spends timing a batch size: those probe lengths the odds would not
choose, and on a model where drafting wins by a few % they made a trial read as a tie and choose
Off. Each look that confirms the mode puts the next one twice as far off (RETRY_MIN..RETRY_MAX
steps); at Off a new reply, being new text, gets a trial soon. A trial after Off first turns rows
on for the heads' sliding window: a head attends only its last n_swa positions, so once it has
seen that many it drafts exactly as if it had never stopped. While drafting, a few plain steps
every interval keep the Off pace current as the context grows; they keep the rows on (the heads
must not fall behind), so they time Off a little slow, which the steps at Off itself then correct.

What it learned (paces, the cost curve, the heads' acceptance) is plain data: `state()` and
`restore()` let the caller keep it across replies and loads of the same model on this machine.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from engine.draftcost import DraftCosts

Mode = Literal["off", "draft"]
Phase = Literal["settled", "fill", "trial", "plain"]
SMOOTHING = 0.2  # weight of a new step in Off's pace (its steps vary little)
# Drafting's pace is the mean of a trial's steps and those after it, then a moving average over about
# the last 25: drafting steps vary 1-4 tokens, and misses come in runs; averaged over about the last 5,
# a run of misses just before a look had Auto choose Off where drafting ran 1.09x plain (dense low,
# later replies: 0.91x the best fixed depth).
DRAFT_MEMORY = 25
TRIAL_STEPS = 12  # drafting steps in a trial (the first trial also times every batch size once)
# A trial ends early once this many of its steps ran drafting LOSING slower than Off's known pace: where
# Off is best, a full trial at each new reply cost a few % of a short reply.
TRIAL_MIN_DRAFTS = 4
LOSING = 0.10
PLAIN_STEPS = 6  # plain steps that time Off
# A pace must differ by this share to act on before the next look: drafting this much slower than Off's
# last pace has Off timed at once (within it, drafting runs on to the look: one slow step in a near tie had
# Off timed and often chosen, and leaving Off costs a refill of the heads' window), and a trial this much
# faster than one row's verification skips timing Off.
MARGIN = 0.02
RETRY_MIN = 96  # steps before the other mode is timed again ...
RETRY_MAX = 1024  # ... doubling each time the look confirms the mode, up to this
NEW_REPLY_RETRY = 4  # at Off, a new reply's trial starts this many steps in
STATE_VERSION = 1


@dataclass(frozen=True)
class StepPlan:
    rows: bool  # the trunk keeps hidden rows and the heads see this step's positions
    draft: bool  # the step drafts (dynamically, up to the depth cap)
    restart_heads: bool  # the heads missed positions: start them afresh here (their window fills from now)


@dataclass
class AutoDraft:
    max_depth: int
    window: int | None  # positions the heads need before drafting exactly (n_swa); None: every position
    costs: DraftCosts = field(init=False)
    mode: Mode = "draft"
    phase: Phase = "trial"
    plain_pace: float | None = None  # seconds per token at Off
    draft_yield: float | None = None  # tokens per drafting step: the most drafting can be faster by
    _draft_seconds: float | None = None  # seconds per drafting step
    _draft_steps: int = 0  # drafting steps averaged since the last trial began
    _phase_left: int = TRIAL_STEPS
    _trial_drafts: int = 0  # steps of the current trial that drafted by the odds (not timing probes)
    _retry_interval: int = RETRY_MIN
    _since_trial: int = 0  # steps since drafting was last tried
    _rows_on: bool = True  # the heads have seen every position so far (prompt evaluation feeds them)

    def __post_init__(self) -> None:
        self.costs = DraftCosts(self.max_depth)

    # Reading ---------------------------------------------------------------------------

    @property
    def draft_pace(self) -> float | None:
        """Seconds per token while drafting."""
        return self._draft_seconds / max(self.draft_yield or 1.0, 1.0) if self._draft_seconds else None

    @property
    def settled_off(self) -> bool:
        """Running plainly because drafting was timed slower, not for a while of timing."""
        return self.mode == "off" and self.phase == "settled"

    def speedup_vs_plain(self) -> float | None:
        """How much faster than plain decoding drafting runs here (below 1: slower)."""
        plain = self.plain_pace or self.costs.verify_seconds(1)  # before Off is timed: a bound below it
        if plain is None or not self.draft_pace:
            return None
        return _at_most_yield(plain / self.draft_pace, self.draft_yield)

    # Deciding ------------------------------------------------------------------------

    def new_reply(self) -> None:
        """The prompt has just been evaluated, the heads given (at least) their window of it. New text,
        which the heads may suit better: at Off, try drafting a few tokens in, unless a trial was lately.
        A fill under way is complete: the prompt filled the heads' window (a fill of n_swa steps
        carried into the next reply would otherwise keep rows on, drafting nothing, for all of it)."""
        self._rows_on = True
        if self.phase == "fill" or (self.settled_off and self._since_trial >= RETRY_MIN):
            self.phase, self._phase_left = "fill", NEW_REPLY_RETRY

    def plan(self) -> StepPlan:
        self.costs.exploring = self.phase == "trial"  # a trial measures the first head whatever its estimate
        drafting = self.phase == "trial" or (self.phase == "settled" and self.mode == "draft")
        # Only settled Off lets the heads fall behind, and only heads with a window to refill.
        rows = not (self.settled_off and self.window is not None)
        restart = rows and not self._rows_on
        self._rows_on = rows
        return StepPlan(rows=rows, draft=drafting, restart_heads=restart)

    def record(self, plan: StepPlan, step_seconds: float, n_tokens: int, *, probe: bool = False) -> None:
        """One step ran as planned, yielding n_tokens in step_seconds (drafting's parts go to `costs`).
        probe: a drafting step of a length set to time a batch size, not by the odds (DraftCosts.forced_length)."""
        self._since_trial = 0 if self.phase == "trial" else self._since_trial + 1
        if plan.draft and not probe:
            self._record_drafting(step_seconds, n_tokens)
            self._trial_drafts += 1
        elif not plan.draft and self.phase != "fill":
            self.plain_pace = _smoothed(self.plain_pace, step_seconds / max(n_tokens, 1))
        self._phase_left -= 1
        slower = bool(self.plain_pace and self.draft_pace and self.draft_pace > self.plain_pace * (1.0 + MARGIN))
        if self.phase == "settled" and self.mode == "draft" and slower:
            self._phase_left = 0  # the text no longer suits the heads: time Off now
        if self.phase == "trial" and self._trial_drafts >= TRIAL_MIN_DRAFTS and self._losing():
            self._phase_left = 0  # no need to see the rest of the trial: decide now
        if self._phase_left > 0:
            return
        if self.settled_off:
            self._begin("fill" if self.window is not None else "trial")
        elif self.phase == "settled" or self.phase == "fill":  # drafting ran its interval / heads caught up
            self._begin("plain" if self.phase == "settled" else "trial")
        elif self.phase == "trial" and self.plain_pace is None and not self._clearly_faster():
            self._begin("plain")
        else:  # a trial or Off's timing ended: which is faster now?
            self._decide()

    def _record_drafting(self, step_seconds: float, n_tokens: int) -> None:
        """Seconds per step over tokens per step, each averaged: an average of each step's own pace would
        weigh a one-token step (a draft rejected at once) like a four-token one, and read drafting slow."""
        bound = 2.0 * self.draft_pace * n_tokens if self.draft_pace else step_seconds  # a step slowed by another load
        self._draft_steps += 1
        weight = max(1.0 / self._draft_steps, 1.0 / DRAFT_MEMORY)
        self._draft_seconds = _averaged(self._draft_seconds, min(step_seconds, bound), weight)
        self.draft_yield = _averaged(self.draft_yield, float(n_tokens), weight)

    def _losing(self) -> bool:
        return bool(self.plain_pace and self.draft_pace and self.draft_pace > self.plain_pace * (1.0 + LOSING))

    def _begin(self, phase: Phase) -> None:
        self.phase = phase
        self._trial_drafts = 0
        if phase == "trial":  # the text may have changed since drafting was last timed: a trial's own mean
            self._draft_steps = 0
        self._phase_left = {
            "fill": (self.window or 0) + 1,
            "trial": TRIAL_STEPS,
            "plain": PLAIN_STEPS,
            "settled": self._retry_interval,
        }[phase]

    def _clearly_faster(self) -> bool:
        """Drafting beats even a bound below plain decoding's pace (a step cannot be quicker than verifying
        its one row): no need to spend steps timing Off before drafting; they come at the first look."""
        one_row = self.costs.verify_seconds(1)
        return bool(one_row and self.draft_pace and self.draft_pace < one_row * (1.0 - MARGIN))

    def _decide(self) -> None:
        """Keep the faster; the next look comes later each time it confirms the mode, soon after a change.
        Drafting is left only when it is MARGIN slower: a wrong Off keeps the heads idle until the next look
        and a refill of their window, and a trial's dozen steps (its first deep drafts, a prompt's end)
        read drafting a few % slow; on the MoE fixture where drafting runs 1.09x plain, 2 first replies
        in 8 chose Off that way."""
        plain, drafting = self.plain_pace or self.costs.verify_seconds(1), self.draft_pace
        bound = plain * (1.0 + MARGIN) if plain and self.mode == "draft" else plain
        mode: Mode = "draft" if bound and drafting and drafting < bound else "off"
        if mode == self.mode:
            self._retry_interval = min(self._retry_interval * 2, RETRY_MAX)
        else:
            self._retry_interval = RETRY_MIN
        self.mode = mode
        self._begin("settled")

    # Memory --------------------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        """What was learned, as JSON-ready data."""
        return {
            "version": STATE_VERSION,
            "mode": self.mode,
            "plain_pace": self.plain_pace,
            "draft_pace": self.draft_pace,
            "draft_yield": self.draft_yield,
            "retry_interval": self._retry_interval,
            "costs": self.costs.state(),
        }

    def restore(self, data: dict[str, Any]) -> bool:
        """Take up what an earlier load learned; False (nothing taken) if it does not fit."""
        costs = data.get("costs")
        if data.get("version") != STATE_VERSION or data.get("mode") not in ("off", "draft"):
            return False
        if not isinstance(costs, dict) or not self.costs.restore(costs):
            return False
        self.mode = data["mode"]
        self.plain_pace = _number(data.get("plain_pace"))
        self.draft_yield = _number(data.get("draft_yield"))
        draft_pace = _number(data.get("draft_pace"))
        self._draft_seconds = draft_pace * max(self.draft_yield or 1.0, 1.0) if draft_pace else None
        self._retry_interval = min(max(int(data.get("retry_interval", RETRY_MIN)), RETRY_MIN), RETRY_MAX)
        self._since_trial = RETRY_MIN  # a new load is new text: its first reply may try drafting
        self._draft_steps = 1  # the pace taken up counts as one step: this load's own steps soon outweigh it
        self._begin("settled")
        return True


def _number(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) and value > 0 else None


def _smoothed(average: float | None, sample: float) -> float:
    return sample if average is None else average + SMOOTHING * (min(sample, 2.0 * average) - average)


def _at_most_yield(speedup: float, tokens_per_step: float | None) -> float:
    """A step verifying k rows costs at least one row's time, so drafting is at most tokens-per-step
    times faster than plain decoding: a larger figure compares paces timed under different loads
    (a plain pace remembered from a busier moment) and is cut to that bound."""
    return min(speedup, tokens_per_step) if tokens_per_step else speedup


def _averaged(average: float | None, sample: float, weight: float) -> float:
    """A moving average without the pace's cut of slow outliers: a long accepted run is no outlier."""
    return sample if average is None else average + weight * (sample - average)
