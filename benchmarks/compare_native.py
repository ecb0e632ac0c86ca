"""Stride's MTP driver vs llama.cpp's own, side by side on the same files, threads and prompt.

For each fixture and repeat, each depth runs Stride (`stride-cli bench`) and native llama.cpp
on the same file: `llama-speculative-simple --spec-type draft-mtp --spec-draft-n-max D` for
depths 1-3; for depth 0 (plain decoding), llama.cpp's own decode loop with sampling,
`llama-completion` (its eval plus sampling time), and also `llama-bench -n N`, which times decode
calls alone and samples nothing. Stride runs first in even repeats and last in odd ones, so
neither side always gets the machine first; the ratio reported is the median over repeats of
Stride's rate over native's in the same repeat (seconds apart: the machine's speed drifts by
several % over minutes), with their range. A last table pairs each side at its own best depth
(best median) the same way: the ">= 1.05x at the best depth" target. The JSON keeps every run.

    benchmarks/build_native.sh        # once: builds the native tools into ~/.cache/stride/native
    python -m benchmarks.compare_native --tokens 128 --repeat 3 --threads 2 [--fixtures main,high,low]
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks import fixtures
from engine.llama import cpu_has_amx

ROOT = Path(__file__).resolve().parents[1]
PROMPT = fixtures.PROMPT


@dataclass
class Run:
    tokens_per_second: float
    acceptance: float | None
    # Share of the verification-bound ceiling (tokens per step / verification time) reached:
    # time in the target's verification calls over all decoding time. Measured for Stride only.
    ceiling_share: float | None = None


@dataclass
class Cell:
    stride: list[Run] = field(default_factory=list)
    native: list[Run] = field(default_factory=list)
    bench: list[Run] = field(default_factory=list)  # depth 0 only: llama-bench


def native_tools() -> dict[str, str]:
    out = subprocess.run(
        ["bash", str(ROOT / "benchmarks" / "build_native.sh")], check=True, capture_output=True, text=True
    ).stdout
    return dict(line.split("=", 1) for line in out.strip().splitlines())


def run_stride(model: Path, depth: int, tokens: int, threads: int, draft_length: str = "fixed") -> Run:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "engine.cli",
            "bench",
            "--model",
            str(model),
            "--depths",
            str(depth),
            "--max-tokens",
            str(tokens),
            "--prompt",
            PROMPT,
            "--threads",
            str(threads),
            "--ctx",
            "2048",
            "--draft-length",
            draft_length,
            "--json",
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=True,
    )
    data = json.loads(proc.stdout)[0]
    return Run(data["tokens_per_second"], data["acceptance"], data["verify_seconds"] / data["decode_seconds"])


def llama_args(model: Path, tokens: int, threads: int) -> list[str]:
    """The run both native drivers share: greedy, same prompt, context and seed as Stride's."""
    return [
        *("-m", str(model), "-p", PROMPT, "-n", str(tokens), "-t", str(threads)),
        *("-c", "2048", "--temp", "0", "--seed", "1"),
        *(NO_REPACK if cpu_has_amx() else ()),
    ]


# Stride loads without ggml's extra buffer types where the CPU reports AMX (engine/llama/backend.py: its AMX
# kernels crashed batched quantized decodes here); the native side must run the same way.
NO_REPACK = ("--no-repack",)


def run_native_mtp(tool: str, model: Path, depth: int, tokens: int, threads: int) -> Run:
    proc = subprocess.run(
        [tool, *llama_args(model, tokens, threads), "--spec-type", "draft-mtp", "--spec-draft-n-max", str(depth)],
        capture_output=True,
        text=True,
        errors="replace",
        check=True,
    )
    decoded = re.search(r"decoded\s+(\d+) tokens in\s+([\d.]+) seconds", proc.stderr)
    accept = re.search(r"accept\s+=\s+([\d.]+)%", proc.stderr)
    if not decoded:
        raise RuntimeError(f"no summary from llama-speculative-simple:\n{proc.stderr[-2000:]}")
    n, seconds = int(decoded.group(1)), float(decoded.group(2))
    return Run(n / seconds, float(accept.group(1)) / 100 if accept else None)


def run_native_loop(tool: str, model: Path, tokens: int, threads: int, tries: int = 3) -> Run:
    """llama-completion, greedy: tokens over the time in its decode calls and its sampler.

    Its timings go through common_log's asynchronous writer, which is not flushed at exit (the
    patch build_native.sh applies covers llama-speculative-simple only): a run that lost them is
    run again.
    """
    for _ in range(tries):
        proc = subprocess.run(
            [tool, *llama_args(model, tokens, threads), "--ignore-eos", "-no-cnv"],
            capture_output=True,
            text=True,
            errors="replace",  # the generated text may cut a UTF-8 sequence; only the timings are read
            check=True,
            stdin=subprocess.DEVNULL,
        )
        sampling = re.search(r"sampling time =\s+([\d.]+) ms", proc.stderr)
        evals = re.search(r"\beval time =\s+([\d.]+) ms /\s+(\d+) runs", proc.stderr)
        if sampling and evals:
            seconds = (float(evals.group(1)) + float(sampling.group(1))) / 1000
            return Run(int(evals.group(2)) / seconds, None)
    raise RuntimeError(f"no timings from llama-completion in {tries} runs:\n{proc.stderr[-2000:]}")


def run_native_bench(tool: str, model: Path, tokens: int, threads: int) -> Run:
    proc = subprocess.run(
        [tool, "-m", str(model), "-p", "0", "-n", str(tokens), "-t", str(threads), "-r", "1", "-o", "json"]
        + (["--repack", "0"] if cpu_has_amx() else []),
        capture_output=True,
        text=True,
        check=True,
    )
    result = next(r for r in json.loads(proc.stdout) if r["n_gen"] > 0)
    return Run(float(result["avg_ts"]), None)


def paired_ratio(rates: Sequence[float], references: Sequence[float]) -> tuple[float, str]:
    """The median over repeats of a rate over its reference in the same repeat, and their range."""
    ratios = sorted(r / ref for r, ref in zip(rates, references))
    return statistics.median(ratios), f"({ratios[0]:.2f}-{ratios[-1]:.2f})"


def tokens_per_second(runs: list[Run]) -> list[float]:
    return [r.tokens_per_second for r in runs]


def _fmt(acceptance: float | None) -> str:
    return "-" if acceptance is None else f"{acceptance:.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--depths", default="0,1,2,3")
    parser.add_argument("--fixtures", default="main")
    parser.add_argument("--draft-length", choices=["fixed", "dynamic"], default="fixed", help="Stride's, at depths 1-3")
    parser.add_argument("--out", type=Path, default=fixtures.CACHE / "compare_native.json")
    args = parser.parse_args()
    tools = native_tools()
    depths = [int(d) for d in args.depths.split(",")]
    results: dict[str, dict[int, Cell]] = {}
    for name in args.fixtures.split(","):
        model = fixtures.fixture_path(name, tools["LLAMA_QUANTIZE"])
        cells = results.setdefault(name, {d: Cell() for d in depths})
        for repeat in range(args.repeat):
            for depth in depths:
                if repeat % 2 == 0:
                    cells[depth].stride.append(run_stride(model, depth, args.tokens, args.threads, args.draft_length))
                if depth == 0:
                    cells[0].native.append(run_native_loop(tools["LLAMA_COMPLETION"], model, args.tokens, args.threads))
                    cells[0].bench.append(run_native_bench(tools["LLAMA_BENCH"], model, args.tokens, args.threads))
                else:
                    cells[depth].native.append(
                        run_native_mtp(tools["LLAMA_SPECULATIVE_SIMPLE"], model, depth, args.tokens, args.threads)
                    )
                if repeat % 2 == 1:
                    cells[depth].stride.append(run_stride(model, depth, args.tokens, args.threads, args.draft_length))
    print(f"tokens={args.tokens} repeat={args.repeat} threads={args.threads} prompt={PROMPT!r}")
    print(
        "| fixture | depth | Stride tok/s | native tok/s | ratio | Stride acceptance | native acceptance "
        "| Stride share of ceiling | native share of ceiling |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    summary = {}
    for name, cells in results.items():
        for depth, cell in cells.items():
            s = statistics.median(r.tokens_per_second for r in cell.stride)
            n = statistics.median(r.tokens_per_second for r in cell.native)
            ratio, spread = paired_ratio(tokens_per_second(cell.stride), tokens_per_second(cell.native))
            sa = cell.stride[0].acceptance
            na = cell.native[0].acceptance
            # Both verify with the same llama.cpp and accept the same drafts, so they share one
            # ceiling: native's share is Stride's scaled by their speed ratio.
            share = statistics.median(r.ceiling_share or 0.0 for r in cell.stride)
            summary[f"{name}/{depth}"] = {
                "stride": s,
                "native": n,
                "stride_runs": tokens_per_second(cell.stride),
                "native_runs": tokens_per_second(cell.native),
                "ratio": ratio,
                "stride_acc": sa,
                "native_acc": na,
                "stride_ceiling_share": share,
                "native_ceiling_share": share * n / s,
            }
            print(
                f"| {name} | {depth} | {s:.2f} | {n:.2f} | {ratio:.3f} {spread} | {_fmt(sa)} | {_fmt(na)} "
                f"| {share:.2f} | {share * n / s:.2f} |"
            )
    if any(cells[0].bench for cells in results.values() if 0 in cells):
        print("\n| fixture | Stride depth 0 tok/s | llama-bench tok/s (decode calls only) | ratio |")
        print("|---|---|---|---|")
        for name, cells in results.items():
            if 0 in cells and cells[0].bench:
                s = statistics.median(r.tokens_per_second for r in cells[0].stride)
                b = statistics.median(r.tokens_per_second for r in cells[0].bench)
                ratio, spread = paired_ratio(tokens_per_second(cells[0].stride), tokens_per_second(cells[0].bench))
                summary[f"{name}/0"]["llama_bench"] = b
                print(f"| {name} | {s:.2f} | {b:.2f} | {ratio:.3f} {spread} |")
    print_best_vs_best(results)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(summary, indent=2))


def print_best_vs_best(results: dict[str, dict[int, Cell]]) -> None:
    """Each side at its own best depth (best median), paired by repeat as in the table above."""
    print("\n| fixture | Stride best depth | native best depth | Stride / native, each at its best |")
    print("|---|---|---|---|")
    for name, cells in results.items():
        mine = max(cells, key=lambda d: statistics.median(tokens_per_second(cells[d].stride)))
        theirs = max(cells, key=lambda d: statistics.median(tokens_per_second(cells[d].native)))
        ratio, spread = paired_ratio(tokens_per_second(cells[mine].stride), tokens_per_second(cells[theirs].native))
        print(f"| {name} | {mine} | {theirs} | {ratio:.3f} {spread} |")


if __name__ == "__main__":
    main()
