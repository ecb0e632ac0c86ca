"""Where a draft step's time goes: one head's decoder block vs the full-vocabulary output head.

The verification-bound ceiling (tokens per step / verification time) is out of reach while each
draft call costs a sizeable part of a verification. This times, on one loaded fixture, the calls
a depth-3 step makes: the verification of 4 tokens (target context, logits for every row) and a
head's draft call over 2 rows (its catch-up row and the draft row), with logits for the last row
as drafting needs, and without logits, which is what the call would cost if llama.cpp could give
a head's hidden state without projecting it onto the whole vocabulary. Each figure is the median
of interleaved repeats, at a context already holding `--past` positions.

    python -m benchmarks.draft_cost [--fixture main] [--repeat 30] [--threads 2]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import numpy as np

from benchmarks import fixtures
from engine.api import LoadOptions
from engine.runtime import Runtime

DEPTH = 3


def timed(call: Callable[[], None]) -> float:
    started = time.perf_counter()
    call()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fixture", default="main")
    parser.add_argument("--repeat", type=int, default=30)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--past", type=int, default=200, help="positions already in the KV caches")
    args = parser.parse_args()
    runtime = Runtime.load(fixtures.fixture_path(args.fixture), options=LoadOptions(n_threads=args.threads))
    try:
        target, draft = runtime.target, runtime.draft
        assert draft is not None, "the fixture has MTP heads"
        rng = np.random.default_rng(0)
        tokens = [int(t) for t in rng.integers(300, 30_000, args.past + DEPTH + 1)]
        hidden = rng.standard_normal((len(tokens), draft.n_embd)).astype(np.float32)
        past = args.past
        target.decode(tokens[:past], 0, outputs="none")
        draft.decode(tokens[:past], 0, outputs="none", hidden=hidden[:past])

        def verify() -> None:
            target.remove_from(past)
            target.decode(tokens[past : past + DEPTH + 1], past, outputs="all")

        def head_call(outputs: str) -> Callable[[], None]:
            def call() -> None:
                draft.remove_from(past)
                draft.decode(tokens[past : past + 2], past, outputs=outputs, hidden=hidden[past : past + 2])

            return call

        calls: dict[str, Callable[[], None]] = {
            "verify": verify,
            "draft": head_call("last"),
            "block": head_call("none"),
        }
        times: dict[str, list[float]] = {name: [] for name in calls}
        for _ in range(args.repeat):
            for name, call in calls.items():
                times[name].append(timed(call))
        ms = {name: 1000 * statistics.median(values) for name, values in times.items()}
    finally:
        runtime.close()
    report(args.fixture, ms)


def report(fixture: str, ms: dict[str, float]) -> None:
    verify, draft, block = ms["verify"], ms["draft"], ms["block"]
    print(f"fixture={fixture} depth={DEPTH}")
    print("| call | ms |")
    print("|---|---|")
    print(f"| verification of {DEPTH + 1} tokens | {verify:.2f} |")
    print(f"| one head's draft call (2 rows, logits for the last) | {draft:.2f} |")
    print(f"| the same call without logits (decoder block only) | {block:.2f} |")
    print(f"\noutput head share of a draft call: {(draft - block) / draft:.2f}")
    # Calls only: Python, sampling and catch-up rows beyond one lower the measured share a little more.
    print(f"ceiling share at depth {DEPTH} from these calls, drafting as now: {verify / (verify + DEPTH * draft):.2f}")
    # An upper bound: a draft token would still have to be picked, from a vocabulary subset say.
    share = verify / (verify + DEPTH * block)
    print(f"ceiling share at depth {DEPTH} if a draft call cost only its decoder block: {share:.2f}")


if __name__ == "__main__":
    main()
