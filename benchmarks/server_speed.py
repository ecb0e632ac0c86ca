"""Tokens/s streamed through `stride-cli serve` over tokens/s of `stride-cli generate`, and time to
first token over HTTP, on the same prompt, greedy, the same depth and threads.

Each repeat is a pair: one `generate --json` run and one streamed /v1/completions request to a
running `serve`, in alternating order; both get a prompt that differs from the last repeat's so
neither reuses a KV cache. The CLI's rate is its own figure (tokens over the time from the end of
the prompt to the last token). The server's is what the client sees: tokens over the time from
sending the request to the last streamed chunk, less the server's prompt time (timings.prompt_ms),
so HTTP, queueing and every chunk's delivery count against it.

    python -m benchmarks.server_speed [--model demo|FILE] [--depth auto] [--tokens 256] [--repeat 8] [--threads 2]

The model is loaded twice (the server's and each CLI run's): use a model that fits twice.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx2

ROOT = Path(__file__).resolve().parents[1]
PROMPT = "Once upon a time"
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}


def prompt_of(repeat: int) -> str:
    return f"Story {repeat + 1}: {PROMPT}"


def run_cli(model: str, depth: str, tokens: int, threads: int, prompt: str) -> dict[str, float]:
    command = [sys.executable, "-m", "engine.cli", "generate", "--model", model, "--prompt", prompt]
    command += ["--mtp-depth", depth, "--max-tokens", str(tokens), "--threads", str(threads), "--json"]
    data = json.loads(subprocess.run(command, capture_output=True, text=True, cwd=ROOT, env=ENV, check=True).stdout)
    return {"tps": data["tokens_per_second"], "ttft": data["ttft_s"], "n": data["n_predicted"]}


def run_server(url: str, tokens: int, prompt: str) -> dict[str, float]:
    body = {"prompt": prompt, "max_tokens": tokens, "temperature": 0, "stream": True}
    body["stream_options"] = {"include_usage": True}
    first = last = None
    usage: dict[str, Any] = {}
    timings: dict[str, Any] = {}
    sent = time.perf_counter()
    with httpx2.Client(timeout=600) as http, http.stream("POST", url + "/v1/completions", json=body) as response:
        response.raise_for_status()
        for line in response.iter_lines():
            if not line.startswith("data: {"):
                continue
            chunk = json.loads(line[len("data: ") :])
            if any(choice.get("text") for choice in chunk["choices"]):
                last = time.perf_counter()
                first = first or last
            usage = chunk.get("usage") or usage
            timings = chunk.get("timings") or timings
    assert first is not None and last is not None, "the server streamed no text"
    n = usage["completion_tokens"]
    client_tps = n / (last - sent - timings["prompt_ms"] / 1000)
    return {"tps": client_tps, "engine_tps": timings["predicted_per_second"], "ttft": first - sent, "n": n}


def start_server(model: str, depth: str, threads: int) -> tuple[subprocess.Popen[str], str]:
    command = [sys.executable, "-m", "engine.cli", "serve", "--model", model, "--port", "0"]
    command += ["--mtp-depth", depth, "--threads", str(threads)]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, cwd=ROOT, env=ENV)
    assert proc.stdout is not None
    match = re.search(r"(http://\S+?)/v1 ", proc.stdout.readline())
    if match is None:
        proc.kill()
        raise SystemExit("stride-cli serve did not say where it listens")
    return proc, match.group(1)


def spread(values: list[float]) -> str:
    return f"{statistics.median(values):.3f} ({min(values):.3f}-{max(values):.3f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="demo")
    parser.add_argument("--depth", default="auto")
    parser.add_argument("--tokens", type=int, default=256)
    parser.add_argument("--repeat", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    server, url = start_server(args.model, args.depth, args.threads)
    try:
        run_server(url, args.tokens, "Warm-up: " + PROMPT)
        pairs: list[tuple[dict[str, float], dict[str, float]]] = []
        for i in range(args.repeat):
            prompt = prompt_of(i)
            if i % 2 == 0:
                cli = run_cli(args.model, args.depth, args.tokens, args.threads, prompt)
                served = run_server(url, args.tokens, prompt)
            else:
                served = run_server(url, args.tokens, prompt)
                cli = run_cli(args.model, args.depth, args.tokens, args.threads, prompt)
            if served["n"] != cli["n"]:
                raise SystemExit(f"repeat {i}: the server gave {served['n']} tokens, the CLI {cli['n']}")
            pairs.append((cli, served))
            print(
                f"repeat {i + 1}: CLI {cli['tps']:.1f} tok/s, server {served['tps']:.1f} tok/s "
                f"({served['tps'] / cli['tps']:.3f}x; its engine {served['engine_tps']:.1f}), "
                f"TTFT CLI {cli['ttft'] * 1000:.0f} ms, "
                f"HTTP {served['ttft'] * 1000:.0f} ms",
                flush=True,
            )
    finally:
        server.terminate()
        server.wait(30)
    ratios = [s["tps"] / c["tps"] for c, s in pairs]
    print(f"\nmodel {args.model}, depth {args.depth}, {pairs[0][0]['n']:.0f} tokens, {args.threads} threads")
    print(f"server / CLI tok/s, median (range) of {len(pairs)} pairs: {spread(ratios)}")
    print(f"CLI tok/s: {spread([c['tps'] for c, _ in pairs])}; server tok/s: {spread([s['tps'] for _, s in pairs])}")
    engine = [s["engine_tps"] / c["tps"] for c, s in pairs]
    print(f"the server's engine (timings.predicted_per_second) / CLI: {spread(engine)}")
    print(
        f"time to first token, s: CLI {spread([c['ttft'] for c, _ in pairs])}, "
        f"over HTTP {spread([s['ttft'] for _, s in pairs])}"
    )


if __name__ == "__main__":
    main()
