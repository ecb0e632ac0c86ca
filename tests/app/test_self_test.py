"""`stride --self-test`: the real window, the demo model, a click on Send, one JSON line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_self_test_prints_one_json_line_and_writes_out(tmp_path: Path) -> None:
    out = tmp_path / "result.json"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "QT_QPA_PLATFORM": "offscreen"}
    proc = subprocess.run(
        [sys.executable, "-m", "app.main", "--self-test", "--mtp-depth", "2", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 1
    data = json.loads(lines[0])
    assert json.loads(out.read_text()) == data
    assert data["ok"] is True and data["n_predicted"] > 50
    assert data["mtp_depth"] == 2 and 0 < data["acceptance"] < 1
    assert data["tokens_per_second"] > 0 and data["max_ui_stall_ms"] is not None
    assert data["cpu_variant"]  # "native" for pip's default build, e.g. "haswell" for the portable one
    shot = Path(data["screenshot"])
    assert shot.exists() and shot.stat().st_size > 10_000


def test_a_file_manager_opens_a_model_by_its_path() -> None:
    """The .desktop entry runs `stride %f`: a bare path is the model; with no file, no model is forced."""
    from app.main import parse_args

    assert parse_args(["/models/x.gguf"]).model == "/models/x.gguf"
    assert parse_args(["--model", "demo"]).model == "demo"
    assert parse_args([]).model is None
