"""stride.log keeps what helps: Stride's own lines and llama.cpp's warnings and errors; llama.cpp's
metadata dump on every load (1.2 MB of a 2 MB log after a few loads) only with debug logging."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def log_after(tmp: Path, *options: str) -> str:
    """stride.log after one `generate` on the demo model, from a log folder of its own."""
    state = tmp / "state"
    command = ["generate", "--model", "demo", "--prompt", "x", "--max-tokens", "2"]
    proc = subprocess.run(
        [sys.executable, "-m", "engine.cli", *options, *command],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), "XDG_STATE_HOME": str(state)},
    )
    assert proc.returncode == 0, proc.stderr
    return (state / "Stride" / "log" / "stride.log").read_text(encoding="utf-8")


def test_llama_cpps_chatter_stays_out_of_the_log_unless_debug_logging_is_on(tmp_path: Path) -> None:
    quiet = log_after(tmp_path / "quiet")
    assert "INFO stride.llama.cpp" not in quiet and "llama_model_loader" not in quiet
    verbose = log_after(tmp_path / "verbose", "--verbose")
    assert "INFO stride.llama.cpp: llama_model_loader" in verbose
    assert len(verbose) > 20 * len(quiet) + 10_000


def test_llama_cpps_warnings_and_errors_stay() -> None:
    """Its warnings, and its errors: why llama.cpp refused a file."""
    import logging

    from engine import logs

    logs.configure_logging()
    assert logging.getLogger(logs.LLAMA_CPP_LOGGER).isEnabledFor(logging.WARNING)
    assert not logging.getLogger(logs.LLAMA_CPP_LOGGER).isEnabledFor(logging.INFO)
    logs.configure_logging(verbose=True)
    assert logging.getLogger(logs.LLAMA_CPP_LOGGER).isEnabledFor(logging.DEBUG)
    logs.configure_logging()
