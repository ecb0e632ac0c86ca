"""What MTP costs besides its speed-up: resident memory and prompt-processing speed, on vs off.

Alternates `stride-cli generate` at depth 0 and depth 3 on the same model with a long prompt
(about 1,000 tokens) and reports each side's prompt tokens/s (the heads catch up on the prompt
when MTP is on) and the process's peak resident size (the heads' weights and the draft context
become resident only when MTP runs).

    python -m benchmarks.mtp_cost [--model FILE] [--repeat 3] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

from benchmarks.fixtures import fixture_path

ROOT = Path(__file__).resolve().parents[1]
PROMPT = "Once upon a time " * 60


def cli_args(model: Path, depth: int, threads: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "engine.cli",
        "generate",
        "--model",
        str(model),
        "--prompt",
        PROMPT,
        "--mtp-depth",
        str(depth),
        "--max-tokens",
        "32",
        "--threads",
        str(threads),
        "--ctx",
        "4096",
        "--json",
    ]


def prompt_speed(model: Path, depth: int, threads: int) -> float:
    proc = subprocess.run(cli_args(model, depth, threads), capture_output=True, text=True, cwd=ROOT, check=True)
    return float(json.loads(proc.stdout)["prompt_tokens_per_second"])


def peak_rss(model: Path, depth: int, threads: int) -> int:
    """Peak RSS of one run, read by a wrapper process so that no other run counts."""
    code = (
        "import resource, subprocess, sys; "
        "subprocess.run(sys.argv[1:], check=True, capture_output=True); "
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, *cli_args(model, depth, threads)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=True,
    )
    return int(out.stdout.strip()) * 1024  # Linux reports KiB


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=None, help="default: the 0.5B benchmark fixture")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    model = args.model or fixture_path("main")
    speed: dict[int, list[float]] = {0: [], 3: []}
    for _ in range(args.repeat):
        for depth in (0, 3):
            speed[depth].append(prompt_speed(model, depth, args.threads))
    rss = {depth: peak_rss(model, depth, args.threads) for depth in (0, 3)}
    off, on = statistics.median(speed[0]), statistics.median(speed[3])
    print(f"model={model.name} repeat={args.repeat} threads={args.threads} prompt~1000 tokens")
    print("| | MTP off (depth 0) | MTP on (depth 3) | on/off |")
    print("|---|---|---|---|")
    print(f"| prompt tokens/s | {off:.1f} | {on:.1f} | {on / off:.3f} |")
    print(f"| peak RSS (MiB) | {rss[0] / 2**20:.0f} | {rss[3] / 2**20:.0f} | {rss[3] / rss[0]:.3f} |")


if __name__ == "__main__":
    main()
