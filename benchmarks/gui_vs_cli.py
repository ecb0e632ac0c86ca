"""Tokens/s through the GUI (`stride --self-test`) vs the CLI on the same model, plus GUI responsiveness.

Both sides run the same chat prompt (the fixture's template or ChatML), greedy, the same depth,
thread count and reply length, alternating GUI and CLI runs; the table reports medians and the
ratio, the GUI thread's longest stall and the time from start to the window being shown.

    python -m benchmarks.gui_vs_cli [--model FILE] [--depth 3] [--tokens 256] [--repeat 3] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

from benchmarks.fixtures import fixture_path

ROOT = Path(__file__).resolve().parents[1]
PROMPT = "Once upon a time"


def run_gui(model: Path, depth: int, tokens: int, threads: int) -> dict[str, float]:
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen"}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "app.main",
            "--self-test",
            "--model",
            str(model),
            "--mtp-depth",
            str(depth),
            "--max-tokens",
            str(tokens),
            "--prompt",
            PROMPT,
            "--threads",
            str(threads),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        check=True,
    )
    return json.loads(proc.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def run_cli(model: Path, depth: int, tokens: int, threads: int) -> dict[str, float]:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "engine.cli",
            "generate",
            "--model",
            str(model),
            "--chat",
            "--prompt",
            PROMPT,
            "--mtp-depth",
            str(depth),
            "--max-tokens",
            str(tokens),
            "--threads",
            str(threads),
            "--ctx",
            "8192",
            "--json",
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=True,
    )
    return json.loads(proc.stdout)  # type: ignore[no-any-return]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=None, help="default: the 0.5B benchmark fixture")
    parser.add_argument("--depth", type=int, default=3)
    parser.add_argument("--tokens", type=int, default=256)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    model = args.model or fixture_path("main")
    gui, cli = [], []
    for _ in range(args.repeat):
        gui.append(run_gui(model, args.depth, args.tokens, args.threads))
        cli.append(run_cli(model, args.depth, args.tokens, args.threads))
    g = statistics.median(r["tokens_per_second"] for r in gui)
    c = statistics.median(r["tokens_per_second"] for r in cli)
    print(f"model={model.name} depth={args.depth} tokens={args.tokens} repeat={args.repeat} threads={args.threads}")
    print("| GUI tok/s | CLI tok/s | GUI/CLI | max GUI stall (ms) | window shown (s) |")
    print("|---|---|---|---|---|")
    stall = max(r["max_ui_stall_ms"] for r in gui)
    shown = statistics.median(r["window_shown_s"] for r in gui)
    print(f"| {g:.2f} | {c:.2f} | {g / c:.3f} | {stall:.1f} | {shown:.2f} |")


if __name__ == "__main__":
    main()
