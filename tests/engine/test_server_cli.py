"""`stride-cli serve` as a user runs it: it says where it listens, serves, and Ctrl+C ends it cleanly."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx2
import openai

ROOT = Path(__file__).resolve().parents[2]


@contextmanager
def serve(*args: str) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """stride-cli serve in a child process; yields it and its URL once it says it listens."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "engine.cli", "serve", "--threads", "1", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        match = re.search(r"at (http://127\.0\.0\.1:\d+)/v1 \(Ctrl\+C stops\)", line)
        assert match, f"no address in {line!r}; stderr: {proc.stderr.read() if proc.stderr else ''}"
        yield proc, match.group(1)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(30)


def test_serve_answers_and_ctrl_c_stops_it_mid_reply(long_live_gguf: Path) -> None:
    with serve("--model", str(long_live_gguf), "--port", "0", "--ctx", "65536", "--mtp-depth", "3") as (proc, url):
        client = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0)
        reply = client.chat.completions.create(
            model="m", messages=[{"role": "user", "content": "alpha"}], max_tokens=8, temperature=0
        )
        assert reply.usage is not None and reply.usage.completion_tokens == 8
        body = {"prompt": "alpha bravo", "max_tokens": 30000, "stream": True}
        with httpx2.Client(timeout=60) as http, http.stream("POST", url + "/v1/completions", json=body) as r:
            lines = r.iter_lines()
            next(lines)
            proc.send_signal(signal.SIGINT)  # what Ctrl+C sends
            assert proc.wait(20) == 0
            rest = list(lines)  # the stream ends rather than hangs
        assert "data: [DONE]" in rest
        assert proc.stderr is not None and "stopping" in proc.stderr.read()


def test_another_address_needs_an_api_key(oracle_gguf: Path) -> None:
    run = subprocess.run(
        [sys.executable, "-m", "engine.cli", "serve", "--model", str(oracle_gguf), "--host", "0.0.0.0"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), "STRIDE_API_KEY": ""},
        timeout=120,
    )
    assert run.returncode == 2 and run.stdout == ""
    assert run.stderr.count("\n") == 1 and run.stderr.startswith("error: --host 0.0.0.0")
    assert "--api-key" in run.stderr


def test_a_busy_port_is_said_before_loading(oracle_gguf: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        run = subprocess.run(
            [sys.executable, "-m", "engine.cli", "serve", "--model", str(oracle_gguf), "--port", str(port)],
            capture_output=True,
            text=True,
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            timeout=120,
        )
    assert run.returncode == 2
    assert run.stderr.startswith(f"error: cannot listen on 127.0.0.1:{port}") and "another --port" in run.stderr


def test_only_serve_loads_starlette_and_uvicorn() -> None:
    """Every stride-cli command parses its arguments; only serve pays for the HTTP stack (~0.2 s)."""
    code = (
        "import sys\n"
        "from engine import cli\n"
        "cli.build_parser().parse_args(['serve', '--model', 'x.gguf'])\n"
        "loaded = lambda: sorted({m.split('.')[0] for m in sys.modules} & {'starlette', 'uvicorn'})\n"
        "print(loaded())\n"
        "from engine.server import StrideServer\n"
        "print(loaded())\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ["[]", "['starlette', 'uvicorn']"]
