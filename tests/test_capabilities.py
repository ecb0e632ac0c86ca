"""The helper that keeps tests from passing in CI by skipping: what it does locally, under CI, and as root."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.capabilities import as_unprivileged_user, require_tool

ROOT = Path(__file__).resolve().parents[1]
INSTALL = "install strace (apt-get install strace)"


def test_a_missing_tool_skips_locally_with_what_to_install(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # a PATH with no strace on it
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match=r"^strace is not on PATH; install strace \(apt-get"):
        require_tool("strace", INSTALL)


@pytest.mark.parametrize("ci", ["true", "1"])
def test_a_missing_tool_fails_under_ci(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, ci: str) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setenv("CI", ci)
    with pytest.raises(pytest.fail.Exception, match=r"^CI=true, so this test must run: strace is not on PATH; install"):
        require_tool("strace", INSTALL)


def test_a_present_tool_is_found(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    tool = tmp_path / "strace"
    tool.write_text("#!/bin/sh\n")
    tool.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setenv("CI", "true")
    assert require_tool("strace", INSTALL) == str(tool)


@pytest.mark.skipif(sys.platform == "win32", reason="needs POSIX permissions")
def test_the_unprivileged_check_runs_without_root_and_reports_its_failures() -> None:
    seen: list[int] = []

    def who(folder: Path) -> None:
        # The folder is the check's own; a read-only file refuses writing even to its owner.
        assert folder.stat().st_uid == os.geteuid()
        locked = folder / "locked"
        locked.write_text("x")
        locked.chmod(0o444)
        with pytest.raises(PermissionError):
            locked.write_text("y")
        seen.append(os.geteuid())
        assert os.geteuid() != 0, "still root"

    as_unprivileged_user(who)
    if os.geteuid() != 0:
        assert seen == [os.geteuid()]  # in this process
    else:
        assert seen == [] and os.geteuid() == 0  # in a child; this process keeps root

    def fails(_folder: Path) -> None:
        raise AssertionError("the check's own words")

    with pytest.raises(pytest.fail.Exception, match="the check's own words"):
        as_unprivileged_user(fails)


def test_ci_fails_the_offline_test_without_strace(tmp_path: Path) -> None:
    """The real offline test, run as CI runs it but with a PATH holding no strace: it fails, saying so."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    env = {**os.environ, "CI": "true", "PATH": str(bin_dir)}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-rs",
            "tests/app/test_offline.py::test_the_self_test_opens_no_network_socket",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        cwd=ROOT,
    )
    assert proc.returncode == 1, proc.stdout[-2000:]
    assert "1 failed" in proc.stdout and "CI=true, so this test must run: strace is not on PATH" in proc.stdout
