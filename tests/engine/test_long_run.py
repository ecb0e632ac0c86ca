"""A long reply: 10,000 tokens at MTP depth 3 equal plain decoding, and memory stays flat.

Run in a subprocess so that the resident-memory figures are this run's alone. The
fixture is the "live" F32 model: attention and FFN make the text depend on the context
(so a KV-cache rollback bug over thousands of positions changes it), while the best
token still wins by a clear logit margin (so batched and single-token decoding cannot
disagree through rounding).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
N_TOKENS = 10_000
MIB = 1 << 20
# Python objects the reply legitimately grows by: 10,000 token ids, the text, the stats.
RSS_GROWTH_LIMIT = 8 * MIB

LONG_RUN = r"""
import json, sys, time
from pathlib import Path
from engine.generate import GenerationParams
from engine.runtime import LoadOptions, Runtime

def rss() -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmRSS:"))

n_tokens = int(sys.argv[2])
runtime = Runtime.load(Path(sys.argv[1]), None, LoadOptions(n_ctx=n_tokens + 256, n_threads=1))
prompt = runtime.tokenize(" alpha bravo")
samples = {}

def on_delta(_delta, stats):
    # After the first 1,000 tokens every buffer is allocated; from there on memory must stay flat.
    for mark in (1_000, n_tokens // 2):
        if stats.n_predicted >= mark and mark not in samples:
            samples[mark] = rss()

out = {}
for depth in (0, 3):  # plain first: the allocator is warm when MTP runs
    runtime.generator.reset()
    samples.clear()
    started = time.perf_counter()
    reply = runtime.generate(prompt, GenerationParams(max_tokens=n_tokens, mtp_depth=depth), on_delta=on_delta)
    out[depth] = {
        "tokens": reply.token_ids,
        "seconds": time.perf_counter() - started,
        "rss_at_1000": samples[1_000],
        "rss_at_half": samples[n_tokens // 2],
        "rss_at_end": rss(),
        "acceptance": reply.stats.acceptance,
        "stop_reason": reply.stats.stop_reason,
    }
print(json.dumps(out))
"""


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads VmRSS from /proc")
def test_ten_thousand_tokens_at_depth_three_equal_plain_decoding_with_flat_memory(long_live_gguf: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-c", LONG_RUN, str(long_live_gguf), str(N_TOKENS)],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    runs = {int(depth): run for depth, run in json.loads(proc.stdout.strip().splitlines()[-1]).items()}
    mtp, plain = runs[3], runs[0]
    assert len(mtp["tokens"]) == len(plain["tokens"]) == N_TOKENS
    assert mtp["stop_reason"] == plain["stop_reason"] == "max_tokens"
    first_difference = next((i for i, (a, b) in enumerate(zip(mtp["tokens"], plain["tokens"])) if a != b), None)
    assert first_difference is None, f"depth 3 and plain decoding differ from token {first_difference} on"
    assert 0 < mtp["acceptance"] < 1  # drafts were made and some rejected: rollback ran many times
    for depth, run in runs.items():
        growth = run["rss_at_end"] - run["rss_at_1000"]
        print(
            f"\ndepth {depth}: {N_TOKENS:,} tokens in {run['seconds']:.1f} s; RSS {run['rss_at_1000'] / MIB:.1f} MiB "
            f"at 1,000 tokens, {run['rss_at_half'] / MIB:.1f} at {N_TOKENS // 2:,}, {run['rss_at_end'] / MIB:.1f} "
            f"at the end (+{growth / MIB:.2f} MiB)"
        )
        assert growth < RSS_GROWTH_LIMIT, f"depth {depth}: memory grew by {growth / MIB:.1f} MiB"
