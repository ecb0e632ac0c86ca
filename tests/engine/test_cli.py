"""stride-cli as a script would use it: JSON out, exit code 2 and one `error:` line for bad input."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from engine import cli, runtime
from tests.fixtures import builders
from tests.fixtures.builders import HUGE_SHAPE
from tests.fixtures.malformed import malformed_models

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
    args = ["--prompt", "alpha bravo charlie", "--max-tokens", "40", "--threads", "1", "--mtp-depth", "3"]
    data = run_json("generate", "--model", str(live_gguf), *args)
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
        "generate", "--model", "demo", "--chat", "--prompt", "Hello!", "--max-tokens", "400", "--threads", "1",
        "--mtp-depth", "3",
    )  # fmt: skip
    assert data["reasoning"].startswith("The user wrote to me.")
    assert data["text"].startswith("Hello! I am Stride's built-in demo model")
    assert "</think>" not in data["text"] and data["stop_reason"] == "eog"
    assert data["acceptance"] is not None and 0 < data["acceptance"] < 1


def test_auto_is_the_default_and_says_what_drafting_is_worth(live_gguf: Path) -> None:
    data = run_json("generate", "--model", str(live_gguf), "--prompt", "alpha bravo", "--max-tokens", "60")
    assert data["mtp_depth_requested"] == "auto" and data["mtp_depth"] == 3
    assert data["auto_mode"] in ("drafting", "off") and data["estimated_speedup_vs_plain"] > 0
    assert data["mtp_note"] in (None, "auto_off")


def test_bench_prints_a_table_with_each_depth_against_plain(oracle_gguf: Path) -> None:
    proc = run_cli("bench", "--model", str(oracle_gguf), "--max-tokens", "16", "--threads", "1")
    assert proc.returncode == 0, proc.stderr
    header, *rows = proc.stdout.strip().splitlines()
    assert header.split() == ["depth", "tok/s", "accepted", "x", "plain"]
    assert [row.split()[0] for row in rows] == ["0", "1", "2", "3", "auto"]
    assert rows[0].split()[2:] == ["-", "1.00"] and rows[3].split()[2] == "100%"


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


def _bad_inputs(tmp: Path, oracle: Path) -> dict[str, list[str]]:
    base = ["generate", "--prompt", "x", "--max-tokens", "3"]
    models = malformed_models(tmp / "models")
    cases = {
        name: [*base, "--model", str(model), *(["--mtp-model", str(mtp)] if mtp else [])]
        for name, (model, mtp) in models.items()
    }
    truncated = models["truncated-in-tensor-data"][0]
    return {
        **cases,
        "missing": [*base, "--model", str(tmp / "nope.gguf")],
        "directory": [*base, "--model", str(tmp)],
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


def test_every_bad_input_exits_2_with_one_error_line(tmp_path: Path, oracle_gguf: Path) -> None:
    for name, args in _bad_inputs(tmp_path, oracle_gguf).items():
        proc = run_cli(*args)
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 2, (name, proc.stderr)
        assert len(lines) == 1 and lines[0].startswith("error: "), (name, proc.stderr)
        assert "Traceback" not in proc.stderr and proc.stdout == "", name


def test_model_bigger_than_free_memory_is_refused(
    oracle_gguf: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(runtime, "free_memory_bytes", lambda: 1024)
    args = ["generate", "--model", str(oracle_gguf), "--prompt", "x", "--max-tokens", "2", "--threads", "1", "--json"]
    assert cli.main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "--ignore-memory-check" in err
    assert cli.main([*args, "--ignore-memory-check"]) == 0
    assert json.loads(capsys.readouterr().out)["n_predicted"] == 2


@pytest.mark.skipif(sys.platform == "win32", reason="needs sparse files: the header declares 546 GB")
def test_a_header_declaring_a_huge_model_is_refused_before_loading(tmp_path: Path) -> None:
    huge = builders.declared_only(tmp_path / "huge.gguf", HUGE_SHAPE)
    info = run_json("inspect", str(huge), "--ctx", "8192")
    assert info["estimated_memory_bytes"] > 500 * 1024**3 and info["file_bytes"] > 500 * 1024**3
    proc = run_cli("generate", "--model", str(huge), "--prompt", "x", "--ctx", "8192")
    assert proc.returncode == 2 and proc.stdout == ""
    assert re.fullmatch(
        r"error: huge\.gguf needs about \d+\.\d GiB at a context of 8,192 tokens but only \d+\.\d GiB of memory "
        r"is free; close other programs, lower --ctx, or pass --ignore-memory-check\n",
        proc.stderr,
    ), proc.stderr
