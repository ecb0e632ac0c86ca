"""stride-cli held to what its README and --help promise, on what a new user tried in the first hour:
--ctx (too small, rounded up, too large), a closed pipe, --mtp-model beside embedded heads, --version,
every option's default and range, --depths beyond the heads, notes apart from the answer."""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from engine import about, cli, cli_parser, llama, options
from engine.api import NotEnoughMemory

ROOT = Path(__file__).resolve().parents[2]
PROMPT = "Once upon a time there was a gi"  # 31 tokens for the demo model


def run_cli(*args: str, **kw: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "engine.cli", *args],
        stdout=subprocess.PIPE,
        stderr=kw.pop("stderr", subprocess.PIPE),
        text=True,
        timeout=300,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        **kw,
    )


def generate_json(*args: str) -> dict[str, Any]:
    proc = run_cli("generate", "--model", "demo", "--threads", "1", *args, "--json")
    assert proc.returncode == 0, proc.stderr
    data: dict[str, Any] = json.loads(proc.stdout)
    return data


def one_error_line(proc: subprocess.CompletedProcess[str]) -> str:
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, proc.stderr
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert "Traceback" not in proc.stderr and "internal error" not in proc.stderr
    return lines[0]


# --ctx --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("ctx", [1, 8, 16, 31])
def test_a_ctx_smaller_than_the_prompt_exits_2_naming_both_numbers(ctx: int) -> None:
    n_prompt = generate_json("--prompt", PROMPT, "--max-tokens", "1")["n_prompt"]
    assert n_prompt == 31
    line = one_error_line(run_cli("generate", "--model", "demo", "--prompt", PROMPT, "--ctx", str(ctx)))
    assert f"the prompt is {n_prompt} tokens but --ctx is {ctx}" in line and f"at least {n_prompt + 1}" in line


def test_a_ctx_of_the_prompt_plus_one_runs() -> None:
    """The smallest context that runs: the prompt's positions and one for the reply's first token
    (the last token sampled needs none)."""
    data = generate_json("--prompt", PROMPT, "--ctx", "32", "--max-tokens", "50")
    assert (data["n_predicted"], data["stop_reason"]) == (2, "context_full")
    assert (data["ctx"], data["ctx_allocated"]) == (32, 256)


@pytest.mark.parametrize(("ctx", "depth"), [(40, "0"), (40, "3"), (300, "auto"), (300, "2")])
def test_context_full_fires_at_the_requested_ctx_not_at_llama_cpps_rounded_one(
    live_gguf: Path, ctx: int, depth: str
) -> None:
    """llama.cpp rounds the cache up to 256 (--ctx 10 ran 103 tokens, --ctx 300 about 512): the reply
    fills exactly --ctx positions, at every depth."""
    proc = run_cli(
        "generate", "--model", str(live_gguf), "--prompt", "alpha bravo charlie", "--ctx", str(ctx),
        "--max-tokens", "1000", "--mtp-depth", depth, "--threads", "1", "--json",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["stop_reason"] == "context_full"
    assert data["n_prompt"] + data["n_predicted"] == ctx + 1
    assert data["ctx"] == ctx and data["ctx_allocated"] == -(-ctx // 256) * 256


def test_inspect_and_generate_use_one_context_capped_at_the_trained_one() -> None:
    """`inspect demo --ctx 99999999` said 190 GiB were needed while generate quietly ran at 4,096."""
    proc = run_cli("inspect", "demo", "--ctx", "99999999", "--json")
    assert proc.returncode == 0, proc.stderr
    capped = json.loads(proc.stdout)
    at_trained = json.loads(run_cli("inspect", "demo", "--ctx", "4096", "--json").stdout)
    assert capped["ctx"] == capped["context_length"] == 4096
    assert capped["estimated_memory_bytes"] == at_trained["estimated_memory_bytes"]
    note = "note: --ctx 99,999,999 is more than the model was trained for; using its 4,096 tokens\n"
    assert proc.stderr == note
    gen = run_cli("generate", "--model", "demo", "--prompt", "hi", "--max-tokens", "2", "--ctx", "99999999", "--json")
    assert gen.returncode == 0 and json.loads(gen.stdout)["ctx"] == 4096
    assert note in gen.stderr
    text = run_cli("inspect", "demo", "--ctx", "99999999")
    assert "at a context of 4,096 tokens" in text.stdout and "GiB" not in text.stdout


# A closed pipe -------------------------------------------------------------------------------------


def test_a_closed_stdout_ends_quietly_with_sigpipes_status() -> None:
    """`stride-cli generate ... | head -c 20`: no `unexpected internal error: BrokenPipeError`."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "engine.cli", "generate", "--model", "demo", "--prompt", "hi", "--threads", "1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # the reader is gone before the first token is written
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=300) == cli.EXIT_BROKEN_PIPE == 141
    assert err == ""  # nothing, not even Python's "Exception ignored ... BrokenPipeError" at exit


def test_a_pipe_closed_mid_answer_ends_quietly(monkeypatch: pytest.MonkeyPatch) -> None:
    class Closing(io.StringIO):
        def write(self, text: str) -> int:
            if self.tell() > 20:
                raise BrokenPipeError(32, "Broken pipe")
            return super().write(text)

    monkeypatch.setattr(sys, "stdout", Closing())
    stderr = io.StringIO()
    monkeypatch.setattr(sys, "stderr", stderr)
    argv = ["generate", "--model", "demo", "--prompt", "hi", "--threads", "1", "--max-tokens", "100"]
    assert cli.main(argv) == 141
    assert stderr.getvalue() == ""


# --mtp-model beside embedded heads -----------------------------------------------------------------


def test_a_wrong_mtp_model_is_refused_even_when_the_model_has_its_heads(
    tmp_path: Path, noheads_gguf: Path, split_pair: tuple[Path, Path]
) -> None:
    """`generate --model demo --mtp-model <SmolLM2>` used to ignore the file without a word."""
    not_gguf = tmp_path / "notes.gguf"
    not_gguf.write_text("not a model")
    for mtp, why in [(noheads_gguf, "does not match"), (split_pair[1], "does not match"), (not_gguf, "GGUF")]:
        for args in (["generate", "--model", "demo", "--prompt", "x", "--max-tokens", "2"], ["inspect", "demo"]):
            line = one_error_line(run_cli(*args, "--mtp-model", str(mtp)))
            assert why in line, line


def test_a_matching_mtp_model_beside_embedded_heads_is_checked_and_said_to_be_unneeded(
    oracle_gguf: Path, split_pair: tuple[Path, Path]
) -> None:
    heads = split_pair[1]
    note = f"note: --mtp-model {heads.name} is not needed: {oracle_gguf.name} has its MTP heads inside"
    gen = run_cli(
        "generate", "--model", str(oracle_gguf), "--mtp-model", str(heads), "--prompt", "x", "--max-tokens", "3",
        "--threads", "1", "--json",
    )  # fmt: skip
    assert gen.returncode == 0 and note in gen.stderr
    assert json.loads(gen.stdout)["n_predicted"] == 3
    info = run_cli("inspect", str(oracle_gguf), "--mtp-model", str(heads), "--json")
    data = json.loads(info.stdout)
    assert note in info.stderr and data["mtp_weights"] == "embedded" and data["mtp_unused"] == str(heads)


# --version and --help ------------------------------------------------------------------------------


def test_version_names_stride_llama_cpp_and_the_cpu_backend() -> None:
    proc = run_cli("--version")
    assert proc.returncode == 0 and proc.stderr == ""
    name, binding, backend = proc.stdout.splitlines()
    assert re.fullmatch(r"stride-cli \S+", name)
    assert binding == "llama-cpp-python 0.3.36 (llama.cpp 0c1e57098)"
    assert backend == f"CPU backend: {llama.cpu_variant()}"  # the self-test's cpu_variant
    build_script = (ROOT / "benchmarks" / "build_native.sh").read_text()
    assert f'LLAMA_CPP_COMMIT="{about.LLAMA_CPP_COMMIT}"' in build_script


def _options_of(parser: argparse.ArgumentParser) -> list[tuple[str, argparse.Action]]:
    """Options that take a value and may be left out, in the parser and its subcommands."""
    found: list[tuple[str, argparse.Action]] = []
    one_required = {id(a) for g in parser._mutually_exclusive_groups if g.required for a in g._group_actions}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found += [(f"{name} {opt}", a) for opt, a in _options_of(sub)]
        elif action.option_strings and action.nargs != 0 and not action.required and id(action) not in one_required:
            found.append((action.option_strings[0], action))
    return found


NUMBERS = {options.positive_int, options.non_negative_int, options.seed}


def every_option_says_its_default_and_range(parser: argparse.ArgumentParser) -> None:
    takes_values = _options_of(parser)
    assert len(takes_values) > 5
    for name, action in takes_values:
        text = action.help or ""
        assert "default" in text, f"{name}: {text!r} does not say its default"
        numeric = action.type in NUMBERS or getattr(action.type, "__qualname__", "").startswith("ranged_float")
        if numeric:
            assert re.search(r"\d+ or more|\d+(\.\d+)? to \d+", text), f"{name}: {text!r} does not say its range"


def test_every_cli_option_says_its_default_and_range() -> None:
    every_option_says_its_default_and_range(cli_parser.build_parser())


def test_the_help_says_what_raw_mode_is() -> None:
    """Without --chat the raw text shows a stray </think>: --help says why, and what --chat does."""
    text = run_cli("generate", "--help").stdout
    assert "Raw mode" in text and "</think>" in text and "--chat" in text


def test_depths_beyond_the_heads_exit_2_naming_the_head_count(oracle_gguf: Path, absent_gguf: Path) -> None:
    line = one_error_line(run_cli("bench", "--model", str(oracle_gguf), "--depths", "0,7", "--max-tokens", "4"))
    assert "--depths 7" in line and "3 MTP heads" in line and "0 to 3 or auto" in line
    proc = run_cli("bench", "--model", str(absent_gguf), "--max-tokens", "4", "--json")  # default: what it has
    assert proc.returncode == 0, proc.stderr
    assert [run["mtp_depth_requested"] for run in json.loads(proc.stdout)] == [0]


@pytest.mark.parametrize(
    ("option", "value"),
    [("--seed", str(2**32)), ("--max-tokens", "-5"), ("--threads", "-2"), ("--temperature", "nan")],
)
def test_out_of_range_values_exit_2(option: str, value: str) -> None:
    line = one_error_line(run_cli("generate", "--model", "demo", "--prompt", "x", option, value))
    assert option in line


# Output ---------------------------------------------------------------------------------------------


def test_notes_never_glue_onto_the_answer() -> None:
    """stdout and stderr on one terminal: every note starts a line, and the answer ends with a newline."""
    args = ["generate", "--model", "demo", "--prompt", "hi", "--max-tokens", "20", "--mtp-depth", "9", "--threads", "1"]
    both = run_cli(*args, stderr=subprocess.STDOUT)
    assert both.returncode == 0
    lines = both.stdout.splitlines()
    assert any(line.startswith("note: the requested depth") for line in lines), both.stdout
    assert all(line.startswith(("note:", "-- ")) for line in lines if "note:" in line or " tok/s" in line)
    answer = run_cli(*args).stdout
    assert answer.endswith("\n") and not answer.endswith("\n\n")


def test_sizes_read_as_in_the_window() -> None:
    """Binary units with one decimal, MiB below a GiB: not "0.0 GiB" for a small model."""
    message = str(NotEnoughMemory(Path("m.gguf"), 33 * 2**20, 5 * 2**20, 4096))
    assert message == "m.gguf needs about 33.0 MiB at a context of 4,096 tokens but only 5.0 MiB of memory is free"
