"""The cost of verifying k tokens, k = 1..5, over verifying one: the curve that decides what MTP is worth.

On a dense model a batch of 2-4 rows reads the weights once, so it costs little more than one row;
on a mixture-of-experts model each row reads the experts its router picks, so the cost grows with k.
For each fixture this times target decodes of k rows with the trunk's hidden rows kept (as a step
that drafts does), at a context already holding `--past` positions, each figure the median of
interleaved repeats, and one head's draft call (2 rows, logits on the last) against one row.

    python -m benchmarks.verify_cost [--fixtures main,q8,moe-q8,moe-q4km] [--repeat 30] [--threads 2] [--json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from benchmarks import fixtures
from engine.api import LoadOptions
from engine.runtime import Runtime

ROOT = Path(__file__).resolve().parents[1]
ROWS = (1, 2, 3, 4, 5)


def timed(call: Callable[[], None]) -> float:
    started = time.perf_counter()
    call()
    return time.perf_counter() - started


def quantize_tool() -> str:
    out = subprocess.run(["bash", str(ROOT / "benchmarks" / "build_native.sh")], capture_output=True, text=True)
    return dict(line.split("=", 1) for line in out.stdout.splitlines() if "=" in line)["LLAMA_QUANTIZE"]


def curve(name: str, repeat: int, threads: int, past: int) -> dict[str, object]:
    path = fixtures.fixture_path(name, quantize_tool())
    runtime = Runtime.load(path, options=LoadOptions(n_threads=threads, n_ctx=4096))
    try:
        target, draft = runtime.target, runtime.draft
        assert draft is not None, "the fixture has MTP heads"
        rng = np.random.default_rng(0)
        tokens = [int(t) for t in rng.integers(300, runtime.model.n_vocab, past + max(ROWS))]
        hidden = rng.standard_normal((len(tokens), draft.n_embd)).astype(np.float32)
        target.keep_hidden_rows(True)
        target.decode(tokens[:past], 0, outputs="none")
        draft.decode(tokens[:past], 0, outputs="none", hidden=hidden[:past])

        def verify(k: int) -> Callable[[], None]:
            def call() -> None:
                target.remove_from(past)
                target.decode(tokens[past : past + k], past, outputs="all" if k > 1 else "last")

            return call

        def head_call() -> None:
            draft.remove_from(past)
            draft.decode(tokens[past : past + 2], past, outputs="last", hidden=hidden[past : past + 2])

        calls = {**{f"verify{k}": verify(k) for k in ROWS}, "head": head_call}
        times: dict[str, list[float]] = {key: [] for key in calls}
        for call in calls.values():  # page weights in
            call()
        for i in range(repeat):
            order = list(calls) if i % 2 == 0 else list(reversed(calls))
            for key in order:
                times[key].append(timed(calls[key]))
        median = {key: statistics.median(values) for key, values in times.items()}
        one = median["verify1"]
        return {
            "fixture": name,
            "verify_ms": [round(median[f"verify{k}"] * 1000, 3) for k in ROWS],
            "verify_ratio": [round(median[f"verify{k}"] / one, 3) for k in ROWS],
            "head_call_ratio": round(median["head"] / one, 3),
        }
    finally:
        runtime.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fixtures", default="main,q8,moe-q8,moe-q4km")
    parser.add_argument("--repeat", type=int, default=30)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--past", type=int, default=200, help="positions already in the KV caches")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    results = [curve(name, args.repeat, args.threads, args.past) for name in args.fixtures.split(",")]
    if args.json:
        print(json.dumps(results))
        return
    print(f"{'fixture':<14} " + " ".join(f"{f'V({k})/V(1)':>10}" for k in ROWS) + f" {'V(1) ms':>8} {'head/V(1)':>10}")
    for r in results:
        ratios = " ".join(f"{x:>10.2f}" for x in r["verify_ratio"])  # type: ignore[attr-defined]
        print(f"{r['fixture']:<14} {ratios} {r['verify_ms'][0]:>8.2f} {r['head_call_ratio']:>10.2f}")  # type: ignore[index]


if __name__ == "__main__":
    main()
