"""Auto depth: picks the fastest depth from measured steps, follows changes, stays lossless."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from pathlib import Path

from engine.autodepth import DepthTuner
from engine.generate import AUTO, GenerationParams
from engine.runtime import Runtime
from tests.engine.test_lossless import PROMPT


def simulate(tuner: DepthTuner, rate_of: Callable[[int, int], float], steps: int) -> Counter[int]:
    """Drive the tuner with a known tokens/s per depth (which may change with the step)."""
    picked: Counter[int] = Counter()
    for step in range(steps):
        depth = tuner.choose()
        picked[depth] += 1
        tokens = depth + 1
        tuner.record(depth, tokens, tokens / rate_of(step, depth))
    return picked


def test_tuner_settles_on_the_fastest_depth_and_keeps_exploring() -> None:
    rates = {0: 30.0, 1: 36.0, 2: 48.0, 3: 46.0}
    picked = simulate(DepthTuner(3), lambda _step, d: rates[d], 600)
    assert picked.most_common(1)[0][0] == 2
    assert picked[2] > 0.8 * 600
    assert all(picked[d] > 0 for d in rates)  # every depth, Off included, is still tried now and then


def test_tuner_picks_off_when_drafting_does_not_pay() -> None:
    rates = {0: 30.0, 1: 24.0, 2: 20.0, 3: 18.0}
    picked = simulate(DepthTuner(3), lambda _step, d: rates[d], 300)
    assert picked.most_common(1)[0][0] == 0


def test_tuner_follows_the_text_when_head_agreement_changes() -> None:
    def rate(step: int, depth: int) -> float:
        easy = {0: 30.0, 1: 40.0, 2: 48.0, 3: 55.0}  # heads agree: deep drafts pay
        hard = {0: 30.0, 1: 28.0, 2: 24.0, 3: 20.0}  # heads disagree: drafting costs
        return (easy if step < 300 else hard)[depth]

    tuner = DepthTuner(3)
    first = simulate(tuner, rate, 300)
    assert first.most_common(1)[0][0] == 3
    second: Counter[int] = Counter()
    for step in range(300, 600):
        depth = tuner.choose()
        second[depth] += 1
        tuner.record(depth, depth + 1, (depth + 1) / rate(step, depth))
    assert second.most_common(1)[0][0] == 0


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
