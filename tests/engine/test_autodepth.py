"""Auto depth: picks the fastest depth from measured steps, follows changes, stays lossless."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from engine.autodepth import LOOK_BACK_ROWS, DepthTuner, changed_run
from engine.generate import AUTO, GenerationParams
from engine.mtp import LAG_IN_DRAFT
from engine.runtime import Runtime
from tests.engine.test_lossless import PROMPT


@dataclass(frozen=True)
class Costs:
    """Seconds: verifying n tokens; a head's draft call; each position a head catches up on; each
    further row with logits in a head's call."""

    verify: dict[int, float]
    draft: float
    row: float
    output: float

    def step(self, depth: int) -> float:
        """A step at `depth` by a head that has seen every position before it."""
        return self.verify[depth + 1] + self.draft * depth


# Measured on the benchmark fixture (2 cores, f16): verifying 2-3 tokens costs 1.35x one, 4 tokens
# 1.75x; a draft call 3.8 ms plus 0.24 ms per position the head had not seen (one or two per step
# at a fixed depth; all it missed when auto runs it again), 0.42 ms per further row with logits.
# And a machine where verifying 2-4 tokens is flat.
MEASURED = Costs({1: 0.028, 2: 0.0377, 3: 0.0384, 4: 0.049}, 0.0038, 0.00024, 0.00042)
FLAT = Costs({1: 0.025, 2: 0.044, 3: 0.044, 4: 0.044}, 0.0035, 0.0002, 0.0004)
COSTS = {"measured": MEASURED, "flat": FLAT}
Acceptance = Callable[[int], list[float]]  # step -> each head's acceptance given the ones before


def simulate(
    acceptance: Acceptance,
    steps: int,
    seed: int,
    fixed: int | None = None,
    growth: float = 0.0,
    costs: Costs = MEASURED,
    tuner: DepthTuner | None = None,
) -> list[float]:
    """Tokens per second over each half of the run (one reply), auto depth (fixed=None) or a fixed depth.

    Runs with the same seed see the same text: the same draws decide acceptance and noise.
    growth: how much dearer every step is at the end of the run than at the start (a growing context).
    tuner: auto's, carried over from an earlier reply; a fresh one by default.
    """
    rng = np.random.default_rng(seed)
    draws = rng.random((steps, 4))
    noise = rng.uniform(0.9, 1.15, steps)  # a noisy machine
    looks = rng.random((steps, LOOK_BACK_ROWS))
    tuner = tuner or DepthTuner(3)
    tuner.new_reply()  # as Generator.generate does
    tokens, seconds = [0, 0], [0.0, 0.0]
    position, seen = 0, [0, 0, 0]  # tokens so far; per head, how many of them it has seen
    for step in range(steps):
        depth = tuner.choose() if fixed is None else fixed
        heads = acceptance(step)
        n_accepted = 0
        while n_accepted < depth and draws[step, n_accepted] < heads[n_accepted]:
            n_accepted += 1
        took = costs.step(depth)
        caught_up = 0.0  # far-behind heads catch up in calls of their own, left out of the step's time
        first_head: list[bool] = []
        if fixed is None and tuner.probing:
            # At Off a position is a step: look back at the first head on the latest ones.
            lag, seen[0] = position - seen[0], position
            rows = min(LOOK_BACK_ROWS, lag)
            first_head = [bool(looks[step, i] < acceptance(max(0, step - rows + 1 + i))[0]) for i in range(rows)]
            caught_up += costs.draft + costs.row * lag + costs.output * (rows - 1) if rows else 0.0
        for head in range(depth):
            lag, seen[head] = position - seen[head], position
            if lag > LAG_IN_DRAFT:
                caught_up += costs.row * lag
            else:
                took += costs.row * lag
        slower = noise[step] * (1.0 + growth * step / steps)
        took, caught_up = took * slower, caught_up * slower
        if fixed is None:
            tuner.record(depth, depth, n_accepted, took, first_head)
        half = 2 * step // steps
        position += n_accepted + 1
        tokens[half] += n_accepted + 1
        seconds[half] += took + caught_up
    return [t / s for t, s in zip(tokens, seconds)]


def auto_vs_best(
    acceptance: Acceptance,
    steps: int = 400,
    seeds: int = 12,
    growth: float = 0.0,
    costs: Costs = MEASURED,
    before: Acceptance | None = None,
) -> list[float]:
    """Auto's tokens/s over the best fixed depth's, per half, averaged over seeds.

    before: the text of an unmeasured reply auto ran first (a later reply in a chat).
    """
    ratios = []
    for seed in range(seeds):
        tuner = DepthTuner(3)
        if before is not None:
            simulate(before, steps, seed + 1000, costs=costs, tuner=tuner)
        auto = simulate(acceptance, steps, seed, growth=growth, costs=costs, tuner=tuner)
        fixed = [simulate(acceptance, steps, seed, fixed=d, growth=growth, costs=costs) for d in range(4)]
        ratios.append([auto[h] / max(f[h] for f in fixed) for h in range(2)])
    return [float(np.mean([r[h] for r in ratios])) for h in range(2)]


def test_expected_tokens_follow_the_chain_of_head_acceptances() -> None:
    tuner = DepthTuner(3)
    for _ in range(200):
        tuner.record(3, 3, 1, 0.05)  # head 1 always accepted, head 2 always rejected
    assert tuner.head_acceptance(0) > 0.99 and tuner.head_acceptance(1) < 0.01
    assert tuner.expected_tokens(0) == 1.0
    assert 1.99 < tuner.expected_tokens(1) < 2.0
    assert abs(tuner.expected_tokens(3) - tuner.expected_tokens(1)) < 0.02
    assert tuner.head_acceptance(2) == 0.5  # never put to the test: still the prior


@pytest.mark.parametrize("costs", COSTS)
@pytest.mark.parametrize(
    ("name", "heads"),
    [
        ("deep drafts pay", [0.985, 0.99, 0.97]),
        ("benchmark main", [0.925, 0.87, 0.95]),
        ("middling", [0.55, 0.75, 0.75]),
        # The benchmark's low fixture: Off, depth 1 and 2 within 10 % of each other.
        ("benchmark low", [0.55, 0.49, 0.35]),
        ("best is Off", [0.2, 0.3, 0.3]),
        ("Off by a little", [0.35, 0.5, 0.5]),
    ],
)
def test_auto_is_close_to_the_best_fixed_depth(name: str, heads: list[float], costs: str) -> None:
    # The Performance issue's target, 0.95, is checked by benchmarks/auto_depth.py on real decoding.
    # This simulation charges what switching depths costs (a head catches up on every position it
    # missed), which a fixed depth never pays: auto reaches 0.943-0.993 here. Without Thompson
    # sampling it ran Off on "benchmark low" while depth 1 was faster (0.929 here).
    ratios = auto_vs_best(lambda _step: heads, costs=COSTS[costs])
    assert min(ratios) >= 0.94, (name, ratios)


@pytest.mark.parametrize("costs", COSTS)
@pytest.mark.parametrize("heads", [[0.2, 0.3, 0.3], [0.4, 0.5, 0.5]])
def test_auto_keeps_its_choice_as_every_step_grows_dearer(heads: list[float], costs: str) -> None:
    # Depths not being run keep old step times; unless they move with the one being run, a
    # growing context makes them look cheaper and lures auto away from the best depth (0.923-0.942
    # here when they stay put, 0.949-0.976 when they move along).
    assert min(auto_vs_best(lambda _step: heads, growth=1.0, costs=COSTS[costs])) >= 0.945


@pytest.mark.parametrize("costs", COSTS)
def test_auto_follows_the_text_when_head_agreement_drops_mid_reply(costs: str) -> None:
    assert min(auto_vs_best(lambda step: [0.98] * 3 if step < 200 else [0.2] * 3, costs=COSTS[costs])) >= 0.94


@pytest.mark.parametrize("costs", COSTS)
def test_auto_recovers_when_head_agreement_rises_mid_reply(costs: str) -> None:
    # From Off only probes watch the first head (and a surprising one is followed up), so
    # recovery is slower than the drop above (0.955-0.969 here, about 0.82 before the follow-ups).
    first, second = auto_vs_best(lambda step: [0.2] * 3 if step < 200 else [0.98] * 3, costs=COSTS[costs])
    assert first >= 0.95
    assert second >= 0.90


@pytest.mark.parametrize("costs", COSTS)
def test_a_later_reply_leaves_off_soon_when_its_text_suits_the_heads(costs: str) -> None:
    # The benchmark's shift-down fixture, a reply after another one: the last reply ended at Off
    # with probes backed off, and this one starts with text the heads suit (about 100 steps, as
    # for its 384 tokens). With the probes' back-off kept over the reply's start, 0.962-0.965 here.
    drop = lambda step: [0.98] * 3 if step < 100 else [0.2] * 3  # noqa: E731
    first, _ = auto_vs_best(drop, steps=200, costs=COSTS[costs], before=drop)
    assert first >= 0.968


def test_probes_watch_the_heads_while_off_is_best() -> None:
    tuner = DepthTuner(3)
    probes = visits = 0
    for step in range(300):
        depth = tuner.choose()
        if tuner.probing:
            probes += 1
            tuner.record(0, 0, 0, 0.03, [False] * 4)
        else:
            visits += step >= 4 and depth > 0  # after the start-up trials: a step time refreshed
            tuner.record(depth, depth, 0, MEASURED.step(depth))
    assert tuner.best() == 0
    assert visits <= 3  # heads that never agree are not worth a verification
    assert 300 / 17 < probes + visits < 300 / 7  # a turn every 8-16 steps: cheap enough, often enough


def test_auto_depth_is_lossless(load: Callable[..., Runtime], live_gguf: Path) -> None:
    runtime = load(live_gguf)
    prompt = runtime.tokenize(PROMPT)
    plain = runtime.generate(prompt, GenerationParams(max_tokens=300, mtp_depth=0))
    runtime.generator.reset()
    auto = runtime.generate(prompt, GenerationParams(max_tokens=300, mtp_depth=AUTO))
    assert auto.token_ids == plain.token_ids
    snap = auto.stats.snapshot()
    assert snap["mtp_depth_requested"] == AUTO and snap["mtp_depth"] == 3
    assert snap["mtp_depth_now"] in (0, 1, 2, 3)


def off_best_tuner() -> DepthTuner:
    """A tuner that has settled on Off (heads never agree) and has just probed: the next probe is far off."""
    tuner = DepthTuner(3)
    for step in range(400):
        depth, probing = tuner.choose(), tuner.probing
        tuner.record(depth, depth, 0, MEASURED.step(depth), [False] * LOOK_BACK_ROWS if probing else ())
        if step >= 300 and probing:
            return tuner
    raise AssertionError("no probe in 100 steps at Off")


def test_a_new_reply_at_off_is_probed_once_the_look_back_sees_only_its_tokens(
    load: Callable[..., Runtime], live_gguf: Path
) -> None:
    runtime = load(live_gguf)
    tuner = off_best_tuner()
    assert tuner.best() == 0
    probed: list[bool] = []
    choose = tuner.choose

    def watched_choose() -> int:
        depth = choose()
        probed.append(tuner.probing)
        return depth

    tuner.choose = watched_choose  # type: ignore[method-assign]
    runtime.generator._tuner = tuner
    runtime.generate(runtime.tokenize(PROMPT), GenerationParams(max_tokens=12, mtp_depth=AUTO))
    assert probed.index(True) == LOOK_BACK_ROWS  # steps 1-4 produce the tokens the probe judges


class ScriptedTuner(DepthTuner):
    """Cycles through probe, Off and every depth, whatever the measurements say."""

    SCRIPT = ((0, True), (3, False), (0, False), (1, False), (0, True), (2, False))

    def choose(self) -> int:
        self._step += 1
        depth, self.probing = self.SCRIPT[self._step % len(self.SCRIPT)]
        return depth


def test_probes_and_depth_changes_are_lossless(load: Callable[..., Runtime], live_gguf: Path) -> None:
    runtime = load(live_gguf)
    prompt = runtime.tokenize(PROMPT)
    plain = runtime.generate(prompt, GenerationParams(max_tokens=200, mtp_depth=0))
    runtime.generator.reset()
    runtime.generator._tuner = ScriptedTuner(3)
    auto = runtime.generate(prompt, GenerationParams(max_tokens=200, mtp_depth=AUTO))
    assert auto.token_ids == plain.token_ids
    # Probes draft but never verify: only the verified depths count as drafted.
    steps = auto.stats.n_steps
    assert auto.stats.n_drafted <= 6 * steps // len(ScriptedTuner.SCRIPT) + 6


def test_a_change_is_a_run_of_outcomes_that_chance_does_not_explain() -> None:
    assert changed_run([True] * 8 + [False, False], 0.98) == 2  # two misses from a head that never misses
    assert changed_run([True, True, False, False, False, False], 0.55) == 0  # happens every few dozen outcomes
    assert changed_run([False] * 7, 0.55) == 6  # the shortest run that is unlikely enough
    assert changed_run([False, True, True, True], 0.2) == 3  # a rise is caught the same way
