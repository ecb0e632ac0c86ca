"""The offline promise: the app opens no network socket, in Python, Qt or llama.cpp.

The GUI self-test (real window, demo model, a click on Send, a streamed reply) runs
under strace, which records every socket() and connect() of every thread and child,
and then in a network namespace with no network at all (`unshare -n`). Local sockets
(AF_UNIX, say to a display server) are allowed; AF_INET and AF_INET6 are not, and with the
Server panel off (the default) nothing listens, not even on a local socket.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.capabilities import require_tool, unavailable

ROOT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "QT_QPA_PLATFORM": "offscreen"}
SELF_TEST = ["-m", "app.main", "--self-test", "--max-tokens", "40", "--threads", "1"]
INSTALL = "install it (apt-get install {0}, dnf install {0})"

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="strace and unshare are Linux tools")


def traced(tmp_path: Path, *python_args: str) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    """Run Python under `strace -f -e trace=socket,connect,listen`; the process and the traced calls."""
    trace = tmp_path / "trace.txt"
    cmd = [
        require_tool("strace", INSTALL.format("strace")),
        "-f",
        "-qq",
        "-e",
        "trace=socket,connect,listen",
        "-o",
        str(trace),
        sys.executable,
        *python_args,
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=ENV, cwd=ROOT)
    if not trace.exists() or ("PTRACE" in proc.stderr and "not permitted" in proc.stderr):
        unavailable(
            f"strace cannot trace here ({proc.stderr.strip()[-200:]})",
            "allow ptrace: give the container CAP_SYS_PTRACE (docker run --cap-add SYS_PTRACE)",
        )
    return proc, trace.read_text().splitlines()


def network_calls(calls: list[str]) -> list[str]:
    return [call for call in calls if "AF_INET" in call]  # AF_INET6 too


def listening(calls: list[str]) -> list[str]:
    return [call for call in calls if re.search(r"\blisten\(", call)]


def test_the_self_test_opens_no_network_socket(tmp_path: Path) -> None:
    # The trace sees sockets: a control process that opens one is caught.
    _, control = traced(tmp_path, "-c", "import socket; socket.socket(socket.AF_INET6).close()")
    assert network_calls(control), control
    listener = "import socket; s = socket.socket(socket.AF_UNIX); s.bind('\\0stride-trace'); s.listen(); s.close()"
    _, control = traced(tmp_path, "-c", listener)
    assert listening(control), control

    proc, calls = traced(tmp_path, *SELF_TEST, "--out", str(tmp_path / "result.json"))
    assert proc.returncode == 0, proc.stdout + proc.stderr[-2000:]
    assert json.loads(proc.stdout.strip().splitlines()[-1])["n_predicted"] == 40
    assert network_calls(calls) == [], calls
    assert listening(calls) == [], calls  # the server is off: no port, no socket waiting for clients


def test_the_self_test_works_without_any_network(tmp_path: Path) -> None:
    unshare = require_tool("unshare", INSTALL.format("util-linux"))
    probe = subprocess.run([unshare, "-n", "true"], capture_output=True, text=True)
    if probe.returncode != 0:
        probe = subprocess.run([unshare, "-r", "-n", "true"], capture_output=True, text=True)
        if probe.returncode != 0:
            unavailable(
                f"cannot make a network namespace here ({probe.stderr.strip()})",
                "allow namespaces: run as root with CAP_SYS_ADMIN (docker run --privileged) "
                "or enable user namespaces (sysctl kernel.unprivileged_userns_clone=1)",
            )
        prefix = [unshare, "-r", "-n"]  # an unprivileged user maps itself to root in a user namespace
    else:
        prefix = [unshare, "-n"]
    cmd = [*prefix, sys.executable, *SELF_TEST, "--out", str(tmp_path / "result.json")]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=ENV, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-2000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["ok"] is True and result["n_predicted"] == 40
