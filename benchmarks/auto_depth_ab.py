"""Auto depth of this checkout against another revision's, paired run by run, in alternating order.

A change to the tuner moves auto / best fixed depth by a few %, while two runs of the same code on
this machine differ by as much (benchmarks/RESULTS.md). This runs both versions on the same
fixture one after the other, each in its own process (its own engine), swapping which goes first
every repeat, and reports the median over repeats of this checkout's rate over the other's:
drift of the machine's speed then cancels within a pair. Each run warms the heads up at depth 3,
then times Off, auto on a first reply and auto on a later reply (`benchmarks.auto_depth.run_once`,
which the other revision must have too), per part on the shift fixtures.

    python -m benchmarks.auto_depth_ab --baseline acb45fb --fixtures low,shift-up --repeat 4
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from benchmarks import fixtures
from benchmarks.compare_native import native_tools, paired_ratio

ROOT = Path(__file__).resolve().parent.parent
KINDS = ("off", "first", "later")

# Runs in a child process with a checkout's root first on sys.path, so it uses that checkout's engine.
CHILD = """
import json, sys
sys.path.insert(0, sys.argv[1])
from benchmarks import fixtures
from benchmarks.auto_depth import AUTO, AUTO_LATER, run_once
from engine.runtime import LoadOptions, Runtime
name, tokens, threads, quantize = sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
split = fixtures.SHIFT_AT if fixtures.CATALOGUE[name].shift is not None else None
runtime = Runtime.load(fixtures.fixture_path(name, quantize), options=LoadOptions(n_threads=threads))
prompt = runtime.tokenize(fixtures.PROMPT)
run_once(runtime, prompt, 3, tokens, split)  # pages every head's weights in
rates = {kind: run_once(runtime, prompt, depth, tokens, split) for kind, depth in
         (("off", 0), ("first", AUTO), ("later", AUTO_LATER))}
runtime.close()
print(json.dumps(rates))
"""


def checkout(revision: str) -> Path:
    """A worktree of `revision` in the benchmark cache (made once)."""
    path = fixtures.CACHE / f"ab-{revision}"
    if not path.exists():
        # git's progress goes to stderr: stdout is the table, ready to paste into RESULTS.md.
        git = ["git", "worktree", "add", "--detach", str(path), revision]
        subprocess.run(git, cwd=ROOT, check=True, stdout=sys.stderr)
    return path


def run(root: Path, name: str, tokens: int, threads: int, quantize: str) -> dict[str, list[float]]:
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, str(root), name, str(tokens), str(threads), quantize],
        cwd=root,
        capture_output=True,
        text=True,
        check=True,
    )
    rates: dict[str, list[float]] = json.loads(proc.stdout.strip().splitlines()[-1])
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baseline", required=True, help="git revision to compare with")
    parser.add_argument("--fixtures", default="low,shift-up")
    parser.add_argument("--tokens", type=int, default=384, help="reply length (shift fixtures: twice SHIFT_AT)")
    parser.add_argument("--repeat", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    quantize = native_tools()["LLAMA_QUANTIZE"]
    versions = {"this": ROOT, "baseline": checkout(args.baseline)}
    print(f"baseline={args.baseline} tokens={args.tokens} repeat={args.repeat} threads={args.threads}")
    print("| fixture | part | reply | this / baseline | this: auto / Off, same run | baseline: auto / Off, same run |")
    print("|---|---|---|---|---|---|")
    for name in args.fixtures.split(","):
        split = fixtures.CATALOGUE[name].shift is not None
        tokens = 2 * fixtures.SHIFT_AT if split else args.tokens
        runs: dict[str, list[dict[str, list[float]]]] = {version: [] for version in versions}
        for repeat in range(args.repeat):
            order = list(versions) if repeat % 2 == 0 else list(versions)[::-1]
            for version in order:
                runs[version].append(run(versions[version], name, tokens, args.threads, quantize))
        for part in range(2 if split else 1):
            label = ("first", "second")[part] if split else "whole"
            # rates[version][kind]: that version's tokens/s over this part, one per repeat
            rates = {v: {k: [r[k][part] for r in version_runs] for k in KINDS} for v, version_runs in runs.items()}
            for kind in ("first", "later"):
                this, baseline = rates["this"], rates["baseline"]
                cells = [
                    paired_ratio(this[kind], baseline[kind]),
                    paired_ratio(this[kind], this["off"]),
                    paired_ratio(baseline[kind], baseline["off"]),
                ]
                text = " | ".join(f"{ratio:.3f} {spread}" for ratio, spread in cells)
                print(f"| {name} | {label} | {kind} | {text} |", flush=True)


if __name__ == "__main__":
    main()
