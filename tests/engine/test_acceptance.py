"""Acceptance matches what the fixture's head tables say it must be."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pytest

from engine.api import GenerationParams
from engine.mtp import greedy_draft
from engine.runtime import Runtime
from tests.fixtures import builders

N_TOKENS = 240


def simulate(o: builders.Oracle, last: int, depth: int, n_tokens: int) -> tuple[list[int], list[int]]:
    """Run the chained-head algorithm on the tables: (drafted, accepted) per draft position."""
    drafted, accepted = [0] * depth, [0] * depth
    produced = 0
    while produced < n_tokens:
        n_draft = min(depth, n_tokens - produced - 1)
        draft: list[int] = []
        for k in range(n_draft):
            draft.append(o.head_maps[k][draft[-1] if draft else last])
        out, prev = [], last
        for k in range(len(draft)):
            drafted[k] += 1  # every drafted token counts, as in llama.cpp, even after a rejection
        for k, token in enumerate(draft):
            if o.succ[prev] != token:
                break
            accepted[k] += 1
            out.append(token)
            prev = token
        out.append(o.succ[prev])
        produced += len(out)
        last = out[-1]
    return drafted, accepted


@pytest.mark.parametrize(
    ("wrong", "expected"),
    [((0.0, 0.0, 0.0), 1.0), ((1.0, 1.0, 1.0), 0.0), ((0.15, 0.3, 0.5), None)],
    ids=["heads-always-right", "heads-always-wrong", "designed-middle"],
)
def test_acceptance_matches_the_fixture_design(
    load: Callable[..., Runtime], fixture_dir: Path, wrong: Sequence[float], expected: float | None
) -> None:
    o = builders.oracle(wrong)
    runtime = load(builders.build(fixture_dir / f"acc-{'-'.join(map(str, wrong))}.gguf", o))
    prompt = runtime.tokenize(" alpha bravo charlie")
    for depth in (1, 2, 3):
        runtime.generator.reset()
        stats = runtime.generate(prompt, GenerationParams(max_tokens=N_TOKENS, mtp_depth=depth)).stats
        drafted, accepted = simulate(o, prompt[-1], depth, N_TOKENS)
        assert stats.drafted_per_position[:depth] == drafted
        assert stats.accepted_per_position[:depth] == accepted
        assert stats.acceptance == pytest.approx(sum(accepted) / sum(drafted))
        if expected is not None:
            assert stats.acceptance == expected
        else:
            assert stats.acceptance is not None and 0.3 < stats.acceptance < 0.95
        assert stats.mean_accepted_length == pytest.approx(stats.n_accepted / stats.n_steps)


def test_p_min_keeps_drafts_whose_probability_among_the_top_ten_reaches_it() -> None:
    logits = np.full(1000, -30.0, dtype=np.float32)
    logits[7] = 1.0
    logits[100:999] = 0.0  # nine of these make the top ten: 7 holds e / (e + 9) = 0.23 there
    assert greedy_draft(logits, 0.0) == 7
    assert greedy_draft(logits, 0.2) == 7
    assert greedy_draft(logits, 0.25) is None  # over the whole vocabulary it would hold 0.003
