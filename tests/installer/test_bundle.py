"""The frozen bundle: built by installer/build.sh, run as a user would, with no Python around.

Slow: building takes a few minutes. `.ci/run` builds once and points STRIDE_BUNDLE_DIST at the
result (the folder holding Stride/ and the packages); without it these tests build into dist/.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import sysconfig
import tarfile
import urllib.request
from collections.abc import Sequence
from pathlib import Path

import pytest

from tests.app.pixels import load, speed_panel_accent
from tests.capabilities import require_tool

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(3600),  # the first test may build the bundle (several minutes)
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the packages built and run here are Linux ones"),
]
# Libraries that must come with the bundle (the rest, glibc, OpenGL, libxcb, are the system's).
BUNDLED_LIBRARY = re.compile(r"lib(Qt6|pyside6|shiboken6|icu|ggml|llama|mtmd|python3)")
VARIANT = re.compile(r"^[a-z0-9_.]+$")  # "native", "haswell", "sse42", "x64", "armv8.2_1" ...


@pytest.fixture(scope="module")
def dist() -> Path:
    prebuilt = os.environ.get("STRIDE_BUNDLE_DIST")
    if prebuilt:
        return Path(prebuilt).resolve()
    subprocess.run([str(ROOT / "installer" / "build.sh")], check=True, timeout=3600)
    return ROOT / "dist"


def user_env(home: Path) -> dict[str, str]:
    """A user's environment: no display, fresh folders, and a PYTHONPATH the bundle must ignore."""
    env = {key: value for key, value in os.environ.items() if not key.startswith(("PYTHON", "VIRTUAL_ENV"))}
    env["PATH"] = "/usr/bin:/bin"
    env["QT_QPA_PLATFORM"] = "offscreen"
    env["PYTHONPATH"] = sysconfig.get_paths()["purelib"]
    for var in ("XDG_DATA_HOME", "XDG_CONFIG_HOME", "XDG_STATE_HOME", "XDG_CACHE_HOME"):
        env[var] = str(home / var.lower())
    return env


def run_as_user(command: Sequence[str], tmp_path: Path, timeout: int) -> str:
    """Run a frozen executable from `/` (not the bundle's folder) as a user would; its stdout."""
    proc = subprocess.run(
        command, capture_output=True, text=True, timeout=timeout, env=user_env(tmp_path / "home"), cwd="/"
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def run_self_test(command: Sequence[str], tmp_path: Path) -> dict[str, object]:
    """Run a frozen `stride --self-test` and return its JSON."""
    out = tmp_path / "result.json"
    stdout = run_as_user([*command, "--self-test", "--out", str(out)], tmp_path, timeout=900)
    data: dict[str, object] = json.loads(stdout.strip().splitlines()[-1])
    assert json.loads(out.read_text()) == data
    assert data["ok"] is True
    assert isinstance(data["n_predicted"], int) and data["n_predicted"] > 50
    assert isinstance(data["cpu_variant"], str) and VARIANT.match(data["cpu_variant"])
    assert speed_panel_accent(load(str(data["screenshot"]))) > 100  # the window after a reply: a drawn sparkline
    return data


def run_cli(command: Sequence[str], tmp_path: Path) -> dict[str, object]:
    args = ["generate", "--model", "demo", "--prompt", "Hi", "--max-tokens", "16", "--json"]
    data: dict[str, object] = json.loads(run_as_user([*command, *args], tmp_path, timeout=600))
    assert data["n_predicted"] == 16
    return data


def elf_files(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file() and not p.is_symlink() and p.read_bytes()[:4] == b"\x7fELF"]


def test_bundle_self_test_and_cli(dist: Path, tmp_path: Path) -> None:
    bundle = dist / "Stride"
    run_self_test([str(bundle / "stride")], tmp_path)
    run_cli([str(bundle / "stride-cli")], tmp_path)


def test_bundle_serves_the_openai_api(dist: Path, tmp_path: Path) -> None:
    """The frozen stride-cli serve: Starlette and uvicorn came along, a chat request gets its reply,
    and Ctrl+C stops it cleanly."""
    command = [str(dist / "Stride" / "stride-cli"), "serve", "--model", "demo", "--port", "0", "--threads", "1"]
    proc = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=user_env(tmp_path / "home"), cwd="/"
    )
    try:
        assert proc.stdout is not None and proc.stderr is not None
        line = proc.stdout.readline()
        match = re.search(r"at (http://127\.0\.0\.1:\d+)/v1 ", line)
        assert match, f"no address in {line!r}: {proc.stderr.read() if proc.poll() is not None else ''}"
        body = {"model": "any", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 8, "temperature": 0}
        request = urllib.request.Request(
            match.group(1) + "/v1/chat/completions",
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=120) as response:
            reply = json.loads(response.read())
        assert reply["usage"]["completion_tokens"] == 8 and reply["choices"][0]["message"]["content"] is not None
        proc.send_signal(signal.SIGINT)  # Ctrl+C
        assert proc.wait(30) == 0, proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)


def test_bundle_is_complete(dist: Path) -> None:
    """Every library the bundle's own libraries link against is in it, and what it needs is there."""
    internal = dist / "Stride" / "_internal"
    present = {p.name for p in internal.rglob("*")}
    missing: set[str] = set()
    for elf in elf_files(internal):
        dynamic = subprocess.run(["readelf", "-d", str(elf)], capture_output=True, text=True, check=True).stdout
        for needed in re.findall(r"\(NEEDED\)\s+Shared library: \[(.+?)\]", dynamic):
            if BUNDLED_LIBRARY.match(needed) and needed not in present:
                missing.add(f"{needed} (for {elf.relative_to(internal)})")
    assert sorted(missing) == []
    assert [str(p) for p in internal.rglob("*") if p.is_symlink() and not p.exists()] == []
    plugins = internal / "PySide6" / "Qt" / "plugins"
    for plugin in (
        "platforms/libqxcb.so",
        "platforms/libqoffscreen.so",
        "platforms/libqwayland.so",
        "iconengines/libqsvgicon.so",
        "imageformats/libqsvg.so",
    ):
        assert (plugins / plugin).is_file(), plugin
    assert (internal / "resources" / "icons" / "stride.svg").is_file()
    for unused in ("libQt6Quick.so.6", "libQt6Qml.so.6", "libQt6Pdf.so.6", "libQt6WebEngineCore.so.6"):
        assert unused not in present


def test_deb_unpacked_runs_through_its_launchers(dist: Path, tmp_path: Path) -> None:
    dpkg_deb = require_tool("dpkg-deb", "install dpkg (apt-get install dpkg; on Fedora, dnf install dpkg)")
    (deb,) = dist.glob("stride_*.deb")
    fields = subprocess.run([dpkg_deb, "-f", str(deb), "Package", "Depends"], capture_output=True, text=True)
    assert "Package: stride" in fields.stdout and "libc6 (>=" in fields.stdout
    root = tmp_path / "root"
    subprocess.run([dpkg_deb, "-x", str(deb), str(root)], check=True)
    assert "Exec=stride" in (root / "usr/share/applications/stride.desktop").read_text()
    assert (root / "usr/share/icons/hicolor/scalable/apps/stride.svg").is_file()
    assert (root / "usr/share/icons/hicolor/256x256/apps/stride.png").is_file()
    run_self_test([str(root / "usr" / "bin" / "stride")], tmp_path)
    run_cli([str(root / "usr" / "bin" / "stride-cli")], tmp_path)


def test_tarball_unpacks_and_runs(dist: Path, tmp_path: Path) -> None:
    (tarball,) = dist.glob("stride-*-linux-*.tar.gz")
    with tarfile.open(tarball) as archive:
        # The extraction filter exists from Python 3.11.4 on (Debian 12 ships 3.11.2).
        safe = {"filter": "tar"} if hasattr(tarfile, "tar_filter") else {}
        archive.extractall(tmp_path / "unpacked", **safe)  # type: ignore[arg-type]
    run_cli([str(tmp_path / "unpacked" / "Stride" / "stride-cli")], tmp_path)


def python_installation_paths() -> list[str]:
    """Where this Python, its venv and a system Python keep their files (not /usr as a whole)."""
    base = [] if sys.base_prefix in ("/usr", "/usr/local") else [sys.base_prefix]  # pyenv, a venv's base
    libdir, libpython = sysconfig.get_config_var("LIBDIR"), sysconfig.get_config_var("LDLIBRARY")
    return [
        sys.prefix,
        *base,
        *(sysconfig.get_path(name) for name in ("stdlib", "platstdlib", "purelib", "platlib")),
        *([str(Path(libdir) / libpython)] if libdir and libpython else []),
        "/usr/lib/python3",
        "/usr/local/lib/python3",
    ]


def test_bundle_opens_nothing_from_a_python_installation(dist: Path, tmp_path: Path) -> None:
    """strace the whole self-test: no file of this Python, its venv or a system Python is touched."""
    log = tmp_path / "strace.log"
    strace = require_tool("strace", "install strace (apt-get install strace)")
    trace = [strace, "-f", "-qq", "-e", "trace=open,openat,openat2,execve", "-o", str(log)]
    run_self_test([*trace, str(dist / "Stride" / "stride")], tmp_path)
    outside = [*python_installation_paths(), str(ROOT / "app"), str(ROOT / "engine")]
    opened = re.findall(r'(?:open|openat|openat2|execve)\((?:[A-Z_]+, )?"([^"]+)"', log.read_text())
    assert len(opened) > 100  # strace saw the run
    offenders = sorted({path for path in opened if any(path.startswith(prefix) for prefix in outside)})
    assert offenders == []
