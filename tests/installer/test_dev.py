"""`./dev`'s set-up as a new user sees it, with a stand-in venv whose pip takes a few seconds: it says
what the set-up will take, shows that it is alive while pip works, and says "compiles" only when it will."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="./dev is a bash script")

# A venv's python that answers what ./dev asks of it: the installed llama-cpp-python version, pip's
# wheel cache, and pip install (which takes FAKE_PIP_SECONDS and fails with FAKE_PIP_FAILS set).
FAKE_PYTHON = """#!/usr/bin/env bash
case "$*" in
    -c*) [ -n "${FAKE_HAS_LLAMA:-}" ]; exit $? ;;
    "-m pip cache list"*)
        [ -n "${FAKE_WHEEL_CACHED:-}" ] && echo " - llama_cpp_python-0.3.36-py3-none-linux_x86_64.whl"
        exit 0 ;;
    "-m pip install"*)
        echo "Building wheel for llama-cpp-python (pyproject.toml): started"
        sleep "${FAKE_PIP_SECONDS:-0}"
        if [ -n "${FAKE_PIP_FAILS:-}" ]; then echo "error: cmake failed"; exit 1; fi
        exit 0 ;;
esac
exit 0
"""


def fake_venv(tmp: Path) -> Path:
    venv = tmp / "venv"
    (venv / "bin").mkdir(parents=True)
    for name, text in {"python": FAKE_PYTHON, "stride": "#!/bin/sh\necho stride ran\n", "ruff": "#!/bin/sh\n"}.items():
        script = venv / "bin" / name
        script.write_text(text)
        script.chmod(script.stat().st_mode | stat.S_IXUSR)
    (venv / "bin" / "mypy").symlink_to(venv / "bin" / "ruff")
    return venv


def dev(venv: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(ROOT / "dev"), *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "STRIDE_VENV": str(venv), "STRIDE_SETUP_TICK": "1", **env},
    )


def test_the_first_setup_says_it_compiles_and_how_long_and_shows_it_is_alive(tmp_path: Path) -> None:
    venv = fake_venv(tmp_path)
    proc = dev(venv, "run", FAKE_PIP_SECONDS="3")
    assert proc.returncode == 0, proc.stderr
    assert "compiles llama-cpp-python 0.3.36" in proc.stderr and "5-10 minutes" in proc.stderr
    ticks = [line for line in proc.stderr.splitlines() if line.startswith("  ... setting up: 0 min")]
    assert len(ticks) >= 2, proc.stderr  # a line a tick while pip works (a minute outside this test)
    assert "Building wheel for llama-cpp-python" in ticks[-1]  # what pip is doing, from its log
    assert "Set up in 0 min" in proc.stderr and proc.stdout == "stride ran\n"
    assert "Building wheel" in (venv / "setup.log").read_text()


def test_installing_test_extras_does_not_claim_a_compile(tmp_path: Path) -> None:
    venv = fake_venv(tmp_path)
    proc = dev(venv, "lint", FAKE_HAS_LLAMA="1")
    assert proc.returncode == 0, proc.stderr
    assert "compile" not in proc.stderr
    assert "Installing Stride's test dependencies" in proc.stderr and "already there" in proc.stderr


def test_a_cached_wheel_is_a_quick_setup(tmp_path: Path) -> None:
    proc = dev(fake_venv(tmp_path), "run", FAKE_WHEEL_CACHED="1")
    assert proc.returncode == 0, proc.stderr
    assert "from pip's cache" in proc.stderr and "compile" not in proc.stderr


def test_a_failed_setup_shows_the_end_of_pips_log(tmp_path: Path) -> None:
    venv = fake_venv(tmp_path)
    proc = dev(venv, "run", FAKE_PIP_FAILS="1")
    assert proc.returncode == 1 and "stride ran" not in proc.stdout
    assert "Setup failed (pip exit 1)" in proc.stderr and "error: cmake failed" in proc.stderr
    assert not (venv / ".installed-app").exists()  # the next ./dev tries again
