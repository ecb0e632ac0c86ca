"""Dynamic draft length: draft a token only where its expected saving beats what it costs.

A step verifies `[last, d1..dn]` in one target batch. On a dense model a batch of 2-4 rows
costs little more than one row, so drafting deep pays; on a mixture-of-experts model each
row reads its own experts' weights, so a batch of 4 may cost twice one row, and one
unconfident draft can make a step slower than plain decoding. So each step decides, draft by
draft, with figures measured here, on this model and machine:

- the chance a draft survives: the heads' own probabilities for their tokens, chained (real
  MTP heads are calibrated: a confident head is usually right). Before a head runs, its
  measured acceptance given the chain so far stands in for its probability;
- what an accepted draft is worth: the time a token costs now (a step's time over the tokens
  it yields), since each accepted draft is a token the next steps need not make;
- what it costs: the head's draft call, and verifying one more row (V(n+1) - V(n) from the
  measured cost of verifying n rows).

A head is called only where its expected saving beats the call and the row its draft is likely to
add: a head is called to learn how sure it is, and its draft then goes in only where it is sure
enough, so the saving is counted per call (the share of calls whose draft goes in, times that
draft's acceptance). Counted per kept draft instead, a head sure on one token in five still looked
worth calling every step, and on a model where Off is best its calls made drafting 0.8x plain.
A first head left uncalled is called once every REMEASURE_STEPS steps, so text it suits again is
found. Near break-even the estimate of a head's acceptance decides, so it rests on about the last 100
outcomes: on the last 20, a run of misses left a first head worth calling (dense low: depth 1 is 1.09x
plain) uncalled until that re-measure, and a run of hits had one not worth calling (the MoE fixture
where Off is best) called for dozens of steps; a deeper head, judged on fewer outcomes, must show it
pays by a standard error. A call's cost includes what a step calling a head spends beyond its calls
and verification (calling_overhead). Meanwhile the heads rest (heads_resting, MtpDrafter.rest):
they keep only the last few positions rather than catching up on every one at that call.

A head's own probability is a floor-less guess of its odds only where the head is calibrated. A
head whose distribution is flat over a large vocabulary (a top probability of 0.1 on tokens it gets
right 90 % of the time) would never have a draft kept, and dynamic drafting (and Auto with it) ran
plainly where depth 3 was 1.6x faster. So each head's odds have a floor: its acceptance measured
blind, on the drafts that went in whatever their own probability said (the timing probes, Auto's
trials, and the drafts the floor itself let in). The first head's floor starts from a prior worth
BLIND_PRIOR outcomes, so one or two drafts rejected at a prompt's end do not shut a good head out
(deeper heads borrow its measured figure until measured themselves); and since the drafts it lets
in keep measuring it, a floor too high for the head falls within a few steps. For a calibrated head
those drafts are its least sure ones, so its floor sinks until it lets none in; for a flat head it
settles at the head's real acceptance.

Drafting one more token pays when P(chain survives) x time per token > its marginal cost: a
step's rate (tokens / seconds) then rises (adding c seconds for P expected tokens beats E / T
exactly when P x T / E > c). The verification-cost curve and the head calls are timed online;
a batch size not timed for a while gets a step of its own, so the curve stays current as the
context grows; a deeper size is timed again only where the heads' acceptance could take drafts
that deep. Output is unaffected: verification is exact whatever the length.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

SMOOTHING = 0.2  # weight of a new time in the pace's moving average
OUTLIER_FACTOR = 2.0  # one step slowed by something else on the machine counts as at most 2x the average
# A call's cost is the median of its latest timings: something else on the machine (or pages read in at
# first) only ever adds time, and one such spike taken as a batch size's cost would keep drafts out of it
# until it is timed again. (A lower quartile underrated the MoE fixture's marginal row by 15 %, enough to
# call a head there that did not pay.)
RECENT_TIMINGS = 7
# Before a batch size is timed: each row beyond the first costs this share of a one-row batch (a
# dense model's curve is near 0.1-0.3; MoE far more), so untimed lengths look worth trying.
PRIOR_ROW_COST = 0.2
# A head's acceptance before any outcome: optimistic (published first heads reach 0.7-0.9), so every
# head gets tried and measured; its own confidence then decides which of its drafts go in.
PRIOR_ACCEPTANCE = 0.9
ACCEPTANCE_MEMORY = 0.99  # per outcome: about the last 100 count
BLIND_PRIOR = 2.0  # outcomes the prior of the first head's blind acceptance is worth
BLIND_MIN = 1.0  # decayed blind outcomes a deeper head's floor needs (half an outcome's prior)
REMEASURE_STEPS = 64  # a batch size not timed for this many steps is timed again ...
REMEASURE_SOON = 8  # ... or for this many, while fewer than three timings of it are known
REST_STEPS = 16  # drafting steps without a call of the first head after which the heads rest


@dataclass
class DraftCosts:
    """Measured costs of a step's parts for one model on this machine; decides each draft."""

    max_depth: int
    _verify: list[float | None] = field(init=False)  # index n: seconds to verify n rows (n = 1..max_depth+1)
    _verify_step: list[int] = field(init=False)  # the step it was last timed
    _verify_recent: list[deque[float]] = field(init=False)
    _draft: list[float | None] = field(init=False)  # per head: seconds of its draft call
    _draft_recent: list[deque[float]] = field(init=False)
    _draft_step: list[int] = field(init=False)
    _trials: list[float] = field(init=False)  # per head: decayed outcomes given the chain before it survived
    _accepted: list[float] = field(init=False)
    _calls: list[float] = field(init=False)  # per head: decayed calls given the chain before it survived ...
    _kept: list[float] = field(init=False)  # ... and of those, the calls whose draft went into the batch
    _called_now: int = 0  # heads called in the step being recorded
    _call_seconds_now: float = 0.0  # and their calls' time
    # A step's time beyond its verification and head calls (sampling, bookkeeping, the heads' catch-up of
    # positions before their call, the trunk's hidden rows), averaged over steps that called a head and
    # steps that did not: their difference is part of what calling the first head costs.
    _rest_called: float | None = None
    _rest_uncalled: float | None = None
    _blind_trials: list[float] = field(init=False)  # per head: decayed outcomes of drafts kept whatever their odds
    _blind_hits: list[float] = field(init=False)
    _floored_now: set[int] = field(init=False)  # heads whose draft went in this step on the floor's word
    _unchosen: list[int] = field(init=False)  # per batch size: timings in a row forced, not chosen by the odds
    _seconds_per_token: float | None = None
    _tokens_per_step: float | None = None
    _step: int = 0
    # While set (Auto's trials), the first head always drafts, so its acceptance is measured however
    # low an early run of misses (a prompt's end, say) pushed its estimate.
    exploring: bool = False

    def __post_init__(self) -> None:
        self._verify = [None] * (self.max_depth + 2)
        self._verify_step = [-REMEASURE_STEPS] * (self.max_depth + 2)
        self._unchosen = [0] * (self.max_depth + 2)
        self._verify_recent = [deque(maxlen=RECENT_TIMINGS) for _ in range(self.max_depth + 2)]
        self._draft = [None] * self.max_depth
        self._draft_recent = [deque(maxlen=RECENT_TIMINGS) for _ in range(self.max_depth)]
        self._draft_step = [-REMEASURE_STEPS] * self.max_depth
        self._trials = [2.0] * self.max_depth
        self._accepted = [2.0 * PRIOR_ACCEPTANCE] * self.max_depth
        self._calls = [2.0] * self.max_depth
        self._kept = [2.0] * self.max_depth  # at first every call's draft is taken to go in: all get tried
        self._blind_trials = [0.0] * self.max_depth
        self._blind_hits = [0.0] * self.max_depth
        self._floored_now = set()

    # Figures -------------------------------------------------------------------------

    def verify_seconds(self, rows: int) -> float | None:
        """Seconds to verify `rows` rows: measured, else extrapolated from the nearest timed size below."""
        if (seconds := self._verify[rows]) is not None:
            return seconds
        below = next((n for n in range(rows - 1, 0, -1) if self._verify[n] is not None), None)
        if below is None:
            return None
        base = self._verify[below]
        one = self._verify[1] or base
        assert base is not None and one is not None
        return base + (rows - below) * PRIOR_ROW_COST * one

    def marginal_verify(self, rows: int) -> float:
        """What verifying rows + 1 rows costs over verifying `rows`."""
        now, more = self.verify_seconds(rows), self.verify_seconds(rows + 1)
        if now is None or more is None:
            return 0.0
        return max(more - now, 0.0)

    def head_acceptance(self, head: int) -> float:
        return self._accepted[head] / self._trials[head]

    def blind_acceptance(self, head: int) -> float | None:
        """The head's acceptance measured on drafts that went in whatever their own probability. The first
        head's has a prior worth BLIND_PRIOR outcomes of PRIOR_ACCEPTANCE. A deeper head's has none: until
        measured blind itself it borrows the first head's measured figure, and before that has no floor (an
        optimistic floor let the deeper heads' least sure drafts in, and their misses then kept those heads
        from being called at all)."""
        if head == 0:
            return (self._blind_hits[0] + BLIND_PRIOR * PRIOR_ACCEPTANCE) / (self._blind_trials[0] + BLIND_PRIOR)
        measured = next((h for h in (head, 0) if self._blind_trials[h] >= BLIND_MIN), None)
        if measured is None:
            return None
        return (self._blind_hits[measured] + 0.5) / (self._blind_trials[measured] + 1.0)

    def confidence(self, head: int, probability: float) -> float:
        """The head's probability for its token, at least the head's blind acceptance (the floor). A draft
        taken on the floor's word is itself a blind outcome: it is counted when the step is recorded."""
        floor = self.blind_acceptance(head)
        if floor is None or probability >= floor:
            self._floored_now.discard(head)
            return probability
        self._floored_now.add(head)
        return floor

    def calling_overhead(self) -> float:
        """What a step that calls a head spends beyond the calls and its verification, over a step that does
        not: 0.3-1 ms of a 12.4 ms step on the MoE fixture where Off is best, where a call's draft stood to
        gain about 1 ms more than the call and the row cost."""
        if self._rest_called is None or self._rest_uncalled is None:
            return 0.0
        return max(self._rest_called - self._rest_uncalled, 0.0)

    def kept_share(self, head: int) -> float:
        """The share of this head's calls whose draft went into the batch."""
        return self._kept[head] / self._calls[head]

    def token_value(self) -> float:
        """Seconds an accepted draft saves: what a token costs at the current pace (plain pace at first), never
        more than a plain step: drafts that do not pay slow the pace, and must not make drafts look worth more."""
        plain = self.verify_seconds(1)
        if self._seconds_per_token and plain:
            return min(self._seconds_per_token, plain)
        return self._seconds_per_token or plain or 0.0

    def speedup_vs_plain(self) -> float | None:
        """Tokens/s now over plain decoding's (one row verified per token), from the measured costs."""
        plain = self._verify[1]
        if plain is None or not self._seconds_per_token or not self._tokens_per_step:
            return None
        # A step costs at least one row's time: no more than tokens-per-step faster, whatever the noise.
        return min(plain / self._seconds_per_token, self._tokens_per_step)

    # Decisions -----------------------------------------------------------------------

    def forced_length(self) -> int | None:
        """A draft length to run this step regardless of the odds, to time a batch size; None: decide.

        At first, one row and two (the first draft's marginal cost); deeper sizes are extrapolated
        optimistically, so the first confident drafts try them. A size timed once and then left
        unused for REMEASURE_STEPS steps is timed again, in case its one timing was unlucky; each time
        it is timed so without the odds choosing it in between, the wait doubles (up to 8x): where
        drafts do not pay, those timings were most of what dynamic drafting cost over plain decoding.
        """
        for rows in range(1, self.max_depth + 2):
            if self._verify[rows] is None:
                if rows <= 2:
                    return rows - 1
                continue
            if rows > 2 and not self._could_choose(rows):
                continue  # the odds would not choose it even were its rows cheap: timing it is pure cost
            # A size timed only once or twice may rest on a slow moment: time it again soon.
            stale = REMEASURE_STEPS if len(self._verify_recent[rows]) >= 3 else REMEASURE_SOON
            if self._step - self._verify_step[rows] >= stale << min(self._unchosen[rows], 3):
                return rows - 1
        return None

    def heads_resting(self) -> bool:
        """The first head has not been called for REST_STEPS drafting steps: drafts do not pay here now, so
        the heads need not keep up with every position (MtpDrafter.rest)."""
        return not self.exploring and self._step - self._draft_step[0] > REST_STEPS

    def _could_choose(self, rows: int) -> bool:
        """Whether the heads' measured acceptance could make drafts reach a batch of `rows` rows were each row
        beyond the first as cheap as a dense model's (PRIOR_ROW_COST): where even then they could not (a
        mixture-of-experts model, heads agreeing one time in two), re-timing that size only costs steps."""
        one = self.verify_seconds(1) or 0.0
        chain = 1.0
        for head in range(rows - 1):  # a deeper head, seldom measured, is taken as no better than the first
            chain *= min(self.head_acceptance(head), self.head_acceptance(0))
        return chain * self.token_value() > PRIOR_ROW_COST * one

    def wants_head(self, head: int, chain: float, rows: int) -> bool:
        """Whether to run head `head`: the chain so far survives with probability `chain` and the batch
        has `rows` rows; its draft must be worth its call and one more verified row."""
        if head == 0 and (self.exploring or self._step - self._draft_step[0] >= REMEASURE_STEPS):
            return True
        call = (self._draft[head] or 0.0) + (self.calling_overhead() if head == 0 else 0.0)
        kept = self.kept_share(head)
        acceptance = self.head_acceptance(head)
        if head > 0:
            # A deeper head is judged on few outcomes (only where the drafts before it passed): it must show it
            # pays by one standard error. Taken at face value, deeper heads whose few outcomes looked just worth
            # it drafted 2-3 deep on 60 % of the steps on dense low, where fixed depth 1 is best (0.92x it).
            acceptance -= (acceptance * (1.0 - acceptance) / self._trials[head]) ** 0.5
        gain = chain * kept * acceptance * self.token_value()
        return gain > call + kept * self.marginal_verify(rows)

    def keeps(self, chain: float, rows: int) -> bool:
        """Whether a drafted token (the chain up to it survives with probability `chain`) goes into a
        batch of `rows` rows: its call is spent, one more verified row is not."""
        return (self.exploring and rows == 1) or chain * self.token_value() > self.marginal_verify(rows)

    # Measurements --------------------------------------------------------------------

    def record_draft_call(self, head: int, seconds: float) -> None:
        self._draft[head] = _median_with(self._draft_recent[head], seconds)
        self._draft_step[head] = self._step
        self._called_now = max(self._called_now, head + 1)
        self._call_seconds_now += seconds

    def record_step(
        self,
        rows: int,
        verify_seconds: float,
        step_seconds: float,
        n_emitted: int,
        accepted: int,
        *,
        probe: bool = False,
    ) -> None:
        """One step: `rows` rows verified in verify_seconds, the whole step in step_seconds; drafts
        rows - 1 offered, `accepted` of them kept, n_emitted tokens out. probe: the length was set to
        time a batch size (forced_length), so its drafts went in whatever the heads' odds."""
        self._step += 1
        called, self._called_now = self._called_now, 0
        rest, self._call_seconds_now = max(step_seconds - verify_seconds - self._call_seconds_now, 0.0), 0.0
        if called:
            self._rest_called = _smoothed(self._rest_called, rest)
        else:
            self._rest_uncalled = _smoothed(self._rest_uncalled, rest)
        drafted = range(min(rows - 1, self.max_depth))
        # Blind: a probe's drafts, a trial's first, and those the floor let in (only heads whose drafts went in).
        blind = set(drafted) if probe else {h for h in drafted if h in self._floored_now or (self.exploring and h == 0)}
        self._floored_now = set()
        _count_outcomes(self._blind_trials, self._blind_hits, blind, accepted, accepted)
        _count_outcomes(self._calls, self._kept, range(0 if probe else min(called, self.max_depth)), accepted, rows - 1)
        self._verify[rows] = _median_with(self._verify_recent[rows], verify_seconds)
        self._verify_step[rows] = self._step
        self._unchosen[rows] = self._unchosen[rows] + 1 if probe else 0
        if n_emitted:
            per_token = step_seconds / n_emitted
            self._seconds_per_token = _smoothed(self._seconds_per_token, per_token)
            self._tokens_per_step = (
                n_emitted
                if self._tokens_per_step is None
                else self._tokens_per_step + SMOOTHING * (n_emitted - self._tokens_per_step)
            )
        _count_outcomes(self._trials, self._accepted, drafted, accepted, accepted)

    # Memory --------------------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        """The timed costs and head acceptance, as JSON-ready data."""
        return {
            "max_depth": self.max_depth,
            "verify": self._verify[1:],
            "draft": self._draft,
            "acceptance": [self.head_acceptance(h) for h in range(self.max_depth)],
            "seconds_per_token": self._seconds_per_token,
        }

    def restore(self, data: dict[str, Any]) -> bool:
        """Take up costs timed at an earlier load; False (nothing taken) if they do not fit this model."""
        verify, draft, acceptance = data.get("verify"), data.get("draft"), data.get("acceptance")
        fits = _numbers(verify, self.max_depth + 1) and _numbers(draft, self.max_depth)
        if data.get("max_depth") != self.max_depth or not fits or not _numbers(acceptance, self.max_depth, 1.0):
            return False
        assert isinstance(verify, list) and isinstance(draft, list) and isinstance(acceptance, list)
        self._verify = [None, *verify]
        self._draft = list(draft)
        for recent, value in [*zip(self._verify_recent, self._verify), *zip(self._draft_recent, self._draft)]:
            if value is not None:  # one timing's worth: the first new one moves it halfway
                recent.append(value)
        self._accepted = [a * t for a, t in zip(acceptance, self._trials)]
        per_token = data.get("seconds_per_token")
        self._seconds_per_token = per_token if isinstance(per_token, float) else None
        # Timed at another load: worth time again soon, but not all at once at the start.
        self._verify_step = [self._step - REMEASURE_STEPS // 2] * (self.max_depth + 2)
        return True


def _count_outcomes(totals: list[float], hits: list[float], heads: Iterable[int], accepted: int, n_hits: int) -> None:
    """One decayed outcome for each of `heads` whose chain before it survived (head k is judged only when
    the `accepted` drafts before it passed); the first n_hits heads count a hit."""
    for head in heads:
        if head > accepted:
            continue
        totals[head] = totals[head] * ACCEPTANCE_MEMORY + 1.0
        hits[head] = hits[head] * ACCEPTANCE_MEMORY + (1.0 if head < n_hits else 0.0)


def _numbers(values: object, n: int, required_max: float | None = None) -> bool:
    """A list of n non-negative numbers (None allowed unless a maximum is required)."""
    if not isinstance(values, list) or len(values) != n:
        return False
    if required_max is not None:
        return all(isinstance(v, int | float) and 0 <= v <= required_max for v in values)
    return all(v is None or (isinstance(v, int | float) and 0 <= v < 1e6) for v in values)


def _median_with(recent: deque[float], sample: float) -> float:
    """The median of the latest timings with `sample` (the lower of two middle ones: the least of one or two)."""
    recent.append(sample)
    return sorted(recent)[(len(recent) - 1) // 2]


def _smoothed(average: float | None, sample: float) -> float:
    if average is None:
        return sample
    return average + SMOOTHING * (min(sample, OUTLIER_FACTOR * average) - average)
