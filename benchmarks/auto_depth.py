"""Auto depth and dynamic drafting vs every fixed depth, side by side in one process, per part of the reply.

For each fixture the model is loaded once; each repeat runs depths 0-3 and auto in turn on the
same prompt from an empty cache (in reverse order every other repeat), auto twice: with a fresh
tuner (the first reply after loading, its worst case) and with the tuner an unmeasured reply
before it left (any later reply in a chat, as in the app, where the tuner outlives a reply).
Tokens/s is measured from per-token timestamps, over the whole reply and, on the "shift"
fixtures, over each part (before and after reply token fixtures.SHIFT_AT, where head agreement
changes). Medians of the repeats per depth; the best fixed depth is the one with the best median,
and auto / best is the median over repeats of auto's rate over that depth's rate in the same
repeat (under a minute apart, so slow drift of the machine's speed, often +-10 % over a few
minutes here, cancels), with the range over repeats in brackets. "dynamic" is depth 3 with dynamic
draft length, costs measured afresh (a first reply); "settles Off at" is the step of Auto's first
reply at which it settled on Off (its median and range; "never" where it kept drafting).

    benchmarks/build_native.sh   # once: llama-quantize for the q8 fixture
    python -m benchmarks.auto_depth --fixtures main,high,low,off,q8,shift-down,shift-up --repeat 3
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import time
from pathlib import Path

from benchmarks import fixtures
from benchmarks.compare_native import native_tools, paired_ratio
from engine.api import AUTO, Delta, GenerationParams, LoadOptions
from engine.runtime import Runtime
from engine.stats import ReplyStats

AUTO_LATER = "auto-later"  # auto on a reply after another one: the tuner already has measurements
DYNAMIC = "dynamic"  # depth 3, dynamic draft length
DEPTHS: tuple[int | str, ...] = (0, 1, 2, 3, DYNAMIC, AUTO, AUTO_LATER)


def run_once(
    runtime: Runtime,
    prompt: list[int],
    depth: int | str,
    tokens: int,
    split: int | None,
    settled_off_at: list[int] | None = None,
) -> list[float]:
    """Tokens/s over the reply, or over its two parts when split is set. settled_off_at: gets the step
    at which Auto settled on Off, or -1 if it never did."""
    marks: list[tuple[int, float]] = []  # (tokens so far, when)
    settled: list[int] = []

    def on_delta(delta: Delta, stats: ReplyStats) -> None:
        marks.append((len(delta.token_ids) + (marks[-1][0] if marks else 0), time.perf_counter()))
        if not settled and stats.mtp_note == "auto_off":
            settled.append(stats.n_steps)

    runtime.generator.forget_auto()  # auto starts from nothing, as on the first reply after loading
    if depth == AUTO_LATER:
        depth = AUTO
        runtime.generator.reset()
        runtime.generate(prompt, GenerationParams(max_tokens=tokens, mtp_depth=AUTO))
    params = GenerationParams(max_tokens=tokens, mtp_depth=depth)
    if depth == DYNAMIC:
        params = GenerationParams(max_tokens=tokens, mtp_depth=3, draft_length="dynamic")
    runtime.generator.reset()  # the KV caches, not what Auto learned
    reply = runtime.generate(prompt, params, on_delta=on_delta)
    if settled_off_at is not None:
        settled_off_at.append(settled[0] if settled else -1)
    t0 = reply.stats.t_prompt_done or marks[0][1]
    bounds = [0, split, marks[-1][0]] if split else [0, marks[-1][0]]
    rates = []
    for lo, hi in itertools.pairwise(bounds):
        t_lo = t0 if lo == 0 else next(t for n, t in marks if n >= lo)
        n_lo = 0 if lo == 0 else next(n for n, _ in marks if n >= lo)
        n_hi, t_hi = next((n, t) for n, t in marks if n >= hi)
        rates.append((n_hi - n_lo) / (t_hi - t_lo))
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fixtures", default="main,high,low,off,q8,shift-down,shift-up")
    parser.add_argument("--tokens", type=int, default=384, help="reply length (shift fixtures: twice SHIFT_AT)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=fixtures.CACHE / "auto_depth.json")
    args = parser.parse_args()
    quantize = native_tools()["LLAMA_QUANTIZE"]
    summary: dict[str, dict[str, object]] = {}
    print(f"tokens={args.tokens} repeat={args.repeat} threads={args.threads} prompt={fixtures.PROMPT!r}")
    header = (
        "dynamic | auto, first reply | later reply | dynamic / best fixed | first / best fixed | later / best fixed "
        "| dynamic / plain | auto settles Off at step"
    )
    print(f"| fixture | part | depth 0 | 1 | 2 | 3 | {header} |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for name in args.fixtures.split(","):
        split = fixtures.SHIFT_AT if fixtures.CATALOGUE[name].shift is not None else None
        tokens = 2 * fixtures.SHIFT_AT if split else args.tokens
        runtime = Runtime.load(fixtures.fixture_path(name, quantize), options=LoadOptions(n_threads=args.threads))
        try:
            prompt = runtime.tokenize(fixtures.PROMPT)
            runs: dict[str, list[list[float]]] = {str(d): [] for d in DEPTHS}
            settled_at: list[int] = []
            for repeat in range(args.repeat):
                # Reversed every other repeat: a drift of the machine's speed within a repeat favours no depth.
                for depth in DEPTHS if repeat % 2 == 0 else DEPTHS[::-1]:
                    settle = settled_at if depth == AUTO else None
                    runs[str(depth)].append(run_once(runtime, prompt, depth, tokens, split, settle))
        finally:
            runtime.close()
        summary[name] = {"runs": runs, "auto_settled_off_at": settled_at}
        for part in range(len(runs["0"][0])):
            part_rates = {d: [r[part] for r in rs] for d, rs in runs.items()}
            medians = {d: statistics.median(rates) for d, rates in part_rates.items()}
            fixed = [medians[str(d)] for d in DEPTHS if isinstance(d, int)]
            best = str(max((d for d in DEPTHS if isinstance(d, int)), key=lambda d: medians[str(d)]))
            label = ("whole", "first", "second")[part + 1 if split else 0]
            cells = " | ".join(f"{v:.2f}" for v in fixed)
            paired = [paired_ratio(part_rates[a], part_rates[best]) for a in (DYNAMIC, AUTO, AUTO_LATER)]
            paired.append(paired_ratio(part_rates[DYNAMIC], part_rates["0"]))
            ratios = " | ".join(f"{ratio:.3f} {spread}" for ratio, spread in paired)
            auto_cells = f"{medians[DYNAMIC]:.2f} | {medians[AUTO]:.2f} | {medians[AUTO_LATER]:.2f}"
            print(f"| {name} | {label} | {cells} | {auto_cells} | {ratios} | {_settled(settled_at)} |", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(summary, indent=2))


def _settled(steps: list[int]) -> str:
    """The median step and range over repeats where Auto settled on Off, and how many repeats never did."""
    settled = sorted(s for s in steps if s >= 0)
    never = len(steps) - len(settled)
    if not settled:
        return "never"
    text = f"{statistics.median(settled):.0f} ({settled[0]}-{settled[-1]})"
    return text + (f", never in {never} of {len(steps)}" if never else "")


if __name__ == "__main__":
    main()
