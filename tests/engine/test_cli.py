"""stride-cli as a script would use it: JSON out, exit code 2 and one `error:` line for bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from engine import cli

ROOT = Path(__file__).resolve().parents[2]


def run_cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "engine.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


def run_json(*args: str) -> Any:
    proc = run_cli(*args, "--json")
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_inspect_json_reports_every_field(
    oracle_gguf: Path, split_pair: tuple[Path, Path], absent_gguf: Path, noheads_gguf: Path
) -> None:
    data = run_json("inspect", str(oracle_gguf), "--ctx", "1024")
    assert data["architecture"] == "step35"
    assert data["n_mtp_heads"] == 3 and data["mtp_weights"] == "embedded"
    assert data["quantization"] == "F32" and data["has_chat_template"] is True
    assert data["file_bytes"] == oracle_gguf.stat().st_size
    assert data["n_params"] > 0 and data["estimated_memory_bytes"] > data["file_bytes"] // 2
    assert data["context_length"] == 4096 and data["name"] == "oracle"
    trunk, heads = split_pair
    assert run_json("inspect", str(trunk), "--mtp-model", str(heads))["mtp_weights"] == "separate"
    assert run_json("inspect", str(trunk))["mtp_weights"] == "absent"
    assert run_json("inspect", str(absent_gguf))["mtp_weights"] == "absent"
    assert run_json("inspect", str(noheads_gguf))["mtp_weights"] == "none"


def test_generate_json_has_the_documented_fields(live_gguf: Path) -> None:
    data = run_json(
        "generate", "--model", str(live_gguf), "--prompt", "alpha bravo charlie", "--max-tokens", "40", "--threads", "1"
    )
    expected = {
        "text",
        "token_ids",
        "n_prompt",
        "n_predicted",
        "n_drafted",
        "n_accepted",
        "acceptance",
        "drafted_per_position",
        "accepted_per_position",
        "mean_accepted_length",
        "tokens_per_second",
        "ttft_s",
        "prompt_tokens_per_second",
        "mtp_depth",
        "mtp_depth_requested",
        "mtp_note",
        "stop_reason",
    }
    assert expected <= data.keys()
    assert data["mtp_depth"] == 3 and data["mtp_note"] is None and data["stop_reason"] == "max_tokens"
    assert len(data["token_ids"]) == data["n_predicted"] == 40
    assert data["acceptance"] == pytest.approx(data["n_accepted"] / data["n_drafted"])
    plain = run_json(
        "generate",
        "--model",
        str(live_gguf),
        "--prompt",
        "alpha bravo charlie",
        "--max-tokens",
        "40",
        "--threads",
        "1",
        "--mtp-depth",
        "0",
    )
    assert plain["token_ids"] == data["token_ids"] and plain["acceptance"] is None
    assert plain["mtp_note"] == "depth_zero"


def test_demo_chat_separates_reasoning_from_the_answer() -> None:
    data = run_json(
        "generate", "--model", "demo", "--chat", "--prompt", "Hello!", "--max-tokens", "400", "--threads", "1"
    )
    assert data["reasoning"].startswith("The user wrote to me.")
    assert data["text"].startswith("Hello! I am Stride's built-in demo model")
    assert "</think>" not in data["text"] and data["stop_reason"] == "eog"
    assert data["acceptance"] is not None and 0 < data["acceptance"] < 1


def test_depth_above_heads_is_clamped_with_a_note(oracle_gguf: Path) -> None:
    proc = run_cli(
        "generate", "--model", str(oracle_gguf), "--prompt", "x", "--max-tokens", "5", "--mtp-depth", "5", "--json"
    )
    assert proc.returncode == 0
    data = json.loads(proc.stdout)
    assert (data["mtp_depth"], data["mtp_depth_requested"], data["mtp_note"]) == (3, 5, "depth_clamped")
    assert "note:" in proc.stderr


def test_weights_absent_runs_and_says_why(absent_gguf: Path) -> None:
    proc = run_cli("generate", "--model", str(absent_gguf), "--prompt", "x", "--max-tokens", "5", "--json")
    assert proc.returncode == 0
    assert json.loads(proc.stdout)["mtp_note"] == "weights_absent"
    assert "MTP" in proc.stderr


def test_bench_json_is_a_list_per_depth_and_repeat(oracle_gguf: Path) -> None:
    data = run_json(
        "bench", "--model", str(oracle_gguf), "--depths", "0,2", "--max-tokens", "16", "--repeat", "2", "--threads", "1"
    )
    assert [d["mtp_depth"] for d in data] == [0, 2, 0, 2]
    assert all(d["n_predicted"] == 16 for d in data)


def _bad_files(tmp: Path, oracle: Path, split: tuple[Path, Path]) -> dict[str, list[str]]:
    text = tmp / "notes.gguf"
    text.write_text("just some text, not a model\n")
    empty = tmp / "empty.gguf"
    empty.write_bytes(b"")
    truncated = tmp / "truncated.gguf"
    truncated.write_bytes(oracle.read_bytes()[: oracle.stat().st_size // 2])
    header_cut = tmp / "header.gguf"
    header_cut.write_bytes(oracle.read_bytes()[:200])
    random = tmp / "random.gguf"
    random.write_bytes(os.urandom(4096))
    base = ["generate", "--prompt", "x", "--max-tokens", "3"]
    return {
        "missing": [*base, "--model", str(tmp / "nope.gguf")],
        "text": [*base, "--model", str(text)],
        "empty": [*base, "--model", str(empty)],
        "truncated": [*base, "--model", str(truncated)],
        "header-cut": [*base, "--model", str(header_cut)],
        "random": [*base, "--model", str(random)],
        "directory": [*base, "--model", str(tmp)],
        "mtp-only-as-main": [*base, "--model", str(split[1])],
        "inspect-truncated": ["inspect", str(truncated)],
        "bad-depth": [*base, "--model", str(oracle), "--mtp-depth", "-1"],
        "bad-temperature": [*base, "--model", str(oracle), "--temperature", "hot"],
        "bad-top-p": [*base, "--model", str(oracle), "--top-p", "1.5"],
        "bad-ctx": [*base, "--model", str(oracle), "--ctx", "0"],
        "missing-prompt": ["generate", "--model", str(oracle)],
        "prompt-file-missing": ["generate", "--model", str(oracle), "--prompt-file", str(tmp / "none.txt")],
        "system-without-chat": [*base, "--model", str(oracle), "--system", "be brief"],
        "unknown-command": ["frobnicate"],
    }


def test_every_bad_input_exits_2_with_one_error_line(
    tmp_path: Path, oracle_gguf: Path, split_pair: tuple[Path, Path]
) -> None:
    for name, args in _bad_files(tmp_path, oracle_gguf, split_pair).items():
        proc = run_cli(*args)
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 2, (name, proc.stderr)
        assert len(lines) == 1 and lines[0].startswith("error: "), (name, proc.stderr)
        assert "Traceback" not in proc.stderr and proc.stdout == "", name


def test_model_bigger_than_free_memory_is_refused(
    oracle_gguf: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(cli, "free_memory_bytes", lambda: 1024)
    args = ["generate", "--model", str(oracle_gguf), "--prompt", "x", "--max-tokens", "2", "--threads", "1", "--json"]
    assert cli.main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "--ignore-memory-check" in err
    assert cli.main([*args, "--ignore-memory-check"]) == 0
    assert json.loads(capsys.readouterr().out)["n_predicted"] == 2
