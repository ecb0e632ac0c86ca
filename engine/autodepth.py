"""Auto depth: pick the MTP depth that gives the most tokens per second here, on this text.

The best depth depends on the machine, the quantization and the text (PR 20981 saw depth 3 lose
to plain decoding on one quant). Raw tokens-per-step at one depth is a noisy count, so the tuner
splits the rate into two things it can estimate well:

- how many tokens a step yields at depth d: 1 + a1 + a1*a2 + ..., where a_j is head j's
  acceptance given that the heads before it were accepted. Every step at depth >= j observes
  head j, so a step at the deepest depth measures every head at once;
- how long a step takes at depth d (drafting plus verification): a property of the machine
  and model, measured per depth; as the context grows or the machine gets busy, every depth's
  time moves with the one being run, keeping the ratios measured between them.

Both are exponentially decaying estimates, so they follow the text as it changes; when a run of
a head's latest outcomes is too unlikely under its long-run estimate (a binomial test), the
history is dropped. Start-up runs every depth once, deepest first, and the deepest twice (its
first step pages the heads' weights in).

Steps then run at the depth that wins with each head's acceptance drawn from its posterior
(Thompson sampling), not at the one that wins on the estimates: a depth not being run gets few
observations, so an estimate that a few unlucky outcomes pushed down would otherwise keep a good
depth out of use for long (on the benchmark's low fixture, Off was run while depth 1 was 10 %
faster). Close depths share the steps by their odds of being the best; clearly slower ones
rarely get one.

Besides, only depths that could still win get a turn: a step at the best depth observes every
head up to it, so a deeper depth is explored when its rate, with the heads the best depth does
not run at an optimistic bound, beats the best. The bound widens while a head goes unobserved,
so a depth ruled out by solid evidence comes back into question after a while, and a barely
known one is tried soon. A depth's step time is measured again, when a drift of that time could
make it win, if it rests on one step (which something else on the machine may have slowed) or is
TIME_REFRESH_STEPS old.
Exploration backs off: a turn after `explore_min` steps, then after twice as many each time
exploring changed nothing, up to `explore_max`; a change of best, or an outcome the estimates
made unlikely (the text has changed under a depth not being run), resets it. Off (depth 0) is a
candidate like any other; while Off is best, exploring is a *probe*: the first head catches up on
the positions it missed with logits on the last few, which are the drafts it would have made
there, compared with the tokens the trunk produced: several observations for the price of the
catch-up (which any later use of the head pays anyway) and a few output rows. Probes back off
too, except while the first head might yet make depth 1 pay (its optimistic bound says so);
surprisingly many matches are followed up two steps later, so Off is left quickly when the text
changes. A new reply is new text too: while Off is best, its first probe comes a few tokens in.
Output is lossless whatever it picks: verification is exact.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass, field

CHANGE_WINDOW = 10  # a head's last outcomes, tested against its long-run acceptance
CHANGE_ODDS = 0.01  # a run of recent outcomes this unlikely under the long-run estimate: the text changed
PRIOR_TRIALS = 2.0  # a head starts at 50 % acceptance worth two observations
TIME_SMOOTHING = 0.25  # weight of a new step time in its depth's moving average
OUTLIER_FACTOR = 2.0  # one step slowed by something else on the machine counts as at most 2x
TIME_REFRESH_STEPS = 256  # a depth's step time is re-measured after this many steps without one
# ... if it could then win: it would, at its estimated acceptance, with a step time this much lower
# (how far the ratio between two depths' step times drifts in that long).
TIME_DRIFT = 0.15
SURPRISE = 0.05  # an explored step or probe whose outcome was this unlikely means the estimates are stale
LOOK_BACK_ROWS = 4  # a probe sees what the first head would have drafted after this many latest positions
PROBE_FOLLOW_UP = 2  # steps until the next probe after surprisingly many matches
OPTIMISM_Z = 1.5  # width of the optimistic bound on a hidden head's acceptance (Wilson score)
UNSEEN_DECAY = 0.98  # per step a head goes unobserved, its evidence counts this much less in the bound
# Thompson sampling draws each head's acceptance from a beta posterior on this many times its
# evidence: half the spread, so depths that are almost surely slower rarely get a step.
SAMPLING_WEIGHT = 4.0


@dataclass
class DepthTuner:
    max_depth: int
    memory: float = 0.96  # per observation of a head: about the last 25 count
    explore_min: int = 8
    explore_max: int = 16
    _trials: list[float] = field(init=False)  # per head j = index: decayed observations
    _accepted: list[float] = field(init=False)
    _recent: list[list[bool]] = field(init=False)  # per head: its last CHANGE_WINDOW outcomes, newest last
    _step_seconds: list[float | None] = field(init=False)  # per depth
    _last_tried: list[int] = field(init=False)
    _timed: list[int] = field(init=False)  # per depth: steps timed
    _last_seen: list[int] = field(init=False)  # per head: the step that last put it to the test
    _step: int = 0
    _interval: int = 0
    _next_explore: int = 0
    _exploring: bool = False
    _rng: random.Random = field(default_factory=lambda: random.Random(0))  # seeded: runs can be replayed
    probing: bool = False  # this step runs at Off but the first head drafts one token to compare

    def __post_init__(self) -> None:
        self._trials = [PRIOR_TRIALS] * self.max_depth
        self._accepted = [PRIOR_TRIALS / 2] * self.max_depth
        self._recent = [[] for _ in range(self.max_depth)]
        self._step_seconds = [None] * (self.max_depth + 1)
        self._last_tried = [-1] * (self.max_depth + 1)
        self._timed = [0] * (self.max_depth + 1)
        self._last_seen = [0] * self.max_depth
        self._interval = self.explore_min
        self._next_explore = self.explore_min

    def new_reply(self) -> None:
        """A reply starts: new text, which the heads may suit better than the end of the last one.

        At a depth, every step observes the heads; at Off only probes do, and a long stretch of Off
        has backed them off to one every explore_max steps. So probe soon: as soon as the look-back
        sees only this reply's tokens (the prompt's are not text the model wrote).
        """
        if self._step_seconds[0] is not None and self.best() == 0:
            self._interval = self.explore_min
            self._next_explore = min(self._next_explore, self._step + LOOK_BACK_ROWS + 1)

    def head_acceptance(self, head: int) -> float:
        """Head `head` (0-based)'s acceptance given that every head before it was accepted."""
        return self._accepted[head] / self._trials[head]

    def optimistic_acceptance(self, head: int) -> float:
        """An upper bound on head `head`'s acceptance: the Wilson score bound on evidence that fades unobserved."""
        n = self._trials[head] * UNSEEN_DECAY ** (self._step - self._last_seen[head])
        a, z2 = self.head_acceptance(head), OPTIMISM_Z**2
        spread = OPTIMISM_Z * math.sqrt(a * (1.0 - a) / n + z2 / (4.0 * n * n))
        return min(1.0, (a + z2 / (2.0 * n) + spread) / (1.0 + z2 / n))

    def expected_tokens(self, depth: int, optimistic_from: int | None = None) -> float:
        """Tokens one step at this depth yields on average: the sampled one plus accepted drafts.

        Heads from `optimistic_from` on count at their optimistic bound.
        """
        hidden = range(depth if optimistic_from is None else optimistic_from, depth)
        return tokens_per_step(
            [self.optimistic_acceptance(h) if h in hidden else self.head_acceptance(h) for h in range(depth)]
        )

    def outcome_probability(self, n_drafted: int, n_accepted: int) -> float:
        """How likely the estimates made it that exactly n_accepted of n_drafted drafts pass."""
        p = 1.0
        for head in range(n_accepted):
            p *= self.head_acceptance(head)
        if n_accepted < n_drafted:
            p *= 1.0 - self.head_acceptance(n_accepted)
        return p

    def rate(self, depth: int) -> float | None:
        """Estimated tokens per second at this depth (None until a step there was timed)."""
        seconds = self._step_seconds[depth]
        return self.expected_tokens(depth) / seconds if seconds else None

    def could_beat(self, depth: int, best: int, optimistic_from: int | None = None, time_factor: float = 1.0) -> bool:
        """Whether `depth` might be faster than `best`, optimistic about the heads from `optimistic_from` on.

        By default those are the heads `best` does not run: heads below it are observed by every
        step at it, and while Off is best, the first head by probes. time_factor scales the step
        time of `depth`.
        """
        seconds, best_rate = self._step_seconds[depth], self.rate(best)
        if not seconds or best_rate is None:
            return True
        optimistic = max(best, 1) if optimistic_from is None else optimistic_from
        return self.expected_tokens(depth, optimistic_from=optimistic) / (seconds * time_factor) > best_rate

    def best(self) -> int:
        return max(range(self.max_depth + 1), key=lambda d: self.rate(d) or 0.0)

    def sampled_best(self) -> int:
        """The best depth with each head's acceptance drawn from its posterior (Thompson sampling)."""
        draws = []
        for head in range(self.max_depth):
            n, a = SAMPLING_WEIGHT * self._trials[head], self.head_acceptance(head)
            draws.append(self._rng.betavariate(a * n + 0.5, (1.0 - a) * n + 0.5))

        def sampled_rate(depth: int) -> float:
            seconds = self._step_seconds[depth]
            return tokens_per_step(draws[:depth]) / seconds if seconds else 0.0

        return max(range(self.max_depth + 1), key=sampled_rate)

    def choose(self) -> int:
        self._step += 1
        # Start-up: every depth once, deepest first (one step there measures every head's
        # acceptance) and twice (the first step pages the heads' weights in).
        if self._timed[self.max_depth] < 2:
            return self.max_depth
        untried = [d for d in range(self.max_depth, -1, -1) if self._step_seconds[d] is None]
        if untried:
            return untried[0]
        best = self.sampled_best()
        self._exploring = self._step >= self._next_explore
        self.probing = False
        if not self._exploring:
            return best
        # Running at `best` observes every head up to it, so shallower depths need no visit to know
        # their acceptance. Deeper depths hide heads the current depth does not run: explore those
        # that could win. Refresh the others' step times only rarely (they belong to the machine),
        # and only where a drift could change the choice: a visit after a long absence costs the
        # heads' catch-up on every position they missed.
        hopeful = [d for d in range(self.max_depth + 1) if d != best and self.could_beat(d, best)]
        stale = [
            d
            for d in range(self.max_depth + 1)
            if (self._timed[d] < 2 or self._step - self._last_tried[d] > TIME_REFRESH_STEPS)
            and self.could_beat(d, best, optimistic_from=d, time_factor=1.0 - TIME_DRIFT)
        ]
        candidates = sorted({*hopeful, *stale} - {best})
        if candidates:
            return min(candidates, key=lambda d: self._last_tried[d])
        if best == 0:
            self.probing = True  # keep an eye on the first head: look back at what it would have drafted
        else:
            self._exploring = False  # nothing worth a turn yet: look again next step
        return best

    def record(
        self, depth: int, n_drafted: int, n_accepted: int, seconds: float, first_head: Sequence[bool] = ()
    ) -> None:
        """One step ran at `depth`: drafted n_drafted tokens, the target accepted n_accepted of them.

        On a probe step (Off), first_head says for each position looked back at whether the first
        head's draft would have matched the token produced; seconds leaves the look-back out.
        """
        best_before = self.best()
        promising = False  # a probe found surprisingly many matches
        if self.probing:
            p, matches = self.head_acceptance(0), sum(first_head)
            surprise = bool(first_head) and _binomial_tail(len(first_head), matches, p) < SURPRISE
            promising = surprise and matches > p * len(first_head)
            for passed in first_head:
                self._observe(0, passed)
        else:
            surprise = self.outcome_probability(n_drafted, n_accepted) < SURPRISE
            # Head j was put to the test when every head before it was accepted.
            for head in range(min(n_drafted, n_accepted + 1)):
                self._observe(head, head < n_accepted)
        self._time_step(depth, seconds)
        self._last_tried[depth] = self._step
        if self._exploring:
            # While the first head might yet make depth 1 pay, probes keep coming often, and
            # surprisingly many matches are followed up at once: the text has changed, leave Off.
            hopeful = self.probing and self.could_beat(1, 0, optimistic_from=0)
            stale = surprise or hopeful or self.best() != best_before
            self._interval = self.explore_min if stale else min(2 * self._interval, self.explore_max)
            self._next_explore = self._step + (PROBE_FOLLOW_UP if promising else self._interval)
            self._exploring = self.probing = False

    def _observe(self, head: int, passed: bool) -> None:
        recent = self._recent[head]
        recent.append(passed)
        del recent[:-CHANGE_WINDOW]
        changed = changed_run(recent, self.head_acceptance(head))
        if changed:
            # The text changed: the long-run history describes other text, start again from the recent run.
            self._trials[head] = PRIOR_TRIALS + changed - 1
            self._accepted[head] = PRIOR_TRIALS / 2 + sum(recent[-changed:-1])
            del recent[:-changed]
        self._trials[head] = self.memory * self._trials[head] + 1.0
        self._accepted[head] = self.memory * self._accepted[head] + passed
        self._last_seen[head] = self._step

    def _time_step(self, depth: int, seconds: float) -> None:
        previous = self._step_seconds[depth]
        self._timed[depth] += 1
        if previous is None:
            self._step_seconds[depth] = seconds
            return
        if self._timed[depth] == 2:
            self._step_seconds[depth] = min(previous, seconds)  # a first step may have paged weights in
            return
        updated = previous + TIME_SMOOTHING * (min(seconds, OUTLIER_FACTOR * previous) - previous)
        self._step_seconds[depth] = updated
        if not self._exploring:
            # Every step costs more as the context grows, and all of them slow down when the
            # machine is busy: what the depth being run sees, the others would too. They keep
            # the ratios their own steps measured, refreshed when they are explored.
            scale = updated / previous
            self._step_seconds = [
                other if other is None or d == depth else other * scale for d, other in enumerate(self._step_seconds)
            ]


def tokens_per_step(acceptances: Sequence[float]) -> float:
    """The sampled token plus the accepted drafts: 1 + a1 + a1*a2 + ... for heads' acceptances a_j."""
    total, chain = 1.0, 1.0
    for acceptance in acceptances:
        chain *= acceptance
        total += chain
    return total


def changed_run(outcomes: Sequence[bool], p: float) -> int:
    """The length of the shortest run of latest outcomes too unlikely under acceptance p, or 0.

    Runs ending now are scanned from the shortest: a sharp change (two misses at p = 0.98) is
    caught at once, a mild one after more outcomes, while a streak that chance explains (four
    misses in a row at p = 0.55 turn up every few dozen outcomes) changes nothing.
    """
    passed = 0
    for k in range(1, len(outcomes) + 1):
        passed += outcomes[-k]
        if k >= 2 and _binomial_tail(k, passed, p) < CHANGE_ODDS:
            return k
    return 0


def _binomial_tail(n: int, s: int, p: float) -> float:
    """The odds that a binomial(n, p) count lies at least as far from n*p as s, on the same side."""
    counts = range(s, n + 1) if s >= n * p else range(0, s + 1)
    return sum(math.comb(n, x) * p**x * (1.0 - p) ** (n - x) for x in counts)
