"""The installer's scripts, without building anything: wheel repacking, and the untested
Windows/macOS scripts kept in step with the spec and pyproject."""

from __future__ import annotations

import base64
import hashlib
import re
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
INSTALLER = ROOT / "installer"
sys.path.insert(0, str(INSTALLER))

from repack_llama_wheel import repack  # noqa: E402


def fake_wheel(path: Path, files: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as wheel:
        for name, data in files.items():
            wheel.writestr(name, data)
        wheel.writestr("llama_cpp_python-0.3.36.dist-info/RECORD", "stale\n")
    return path


def test_repack_moves_backend_modules_next_to_libggml_with_a_true_record(tmp_path: Path) -> None:
    raw = fake_wheel(
        tmp_path / "llama_cpp_python-0.3.36-py3-none-linux_x86_64.whl",
        {
            "llama_cpp/__init__.py": b"",
            "llama_cpp/lib/libggml.so.0": b"ggml",
            "bin/libggml-cpu-haswell.so": b"haswell",
            "bin/libggml-cpu-sse42.so": b"sse42",
            "include/ggml.h": b"header",
        },
    )
    out = repack(raw, tmp_path / "out")
    with zipfile.ZipFile(out) as wheel:
        names = set(wheel.namelist())
        record = wheel.read("llama_cpp_python-0.3.36.dist-info/RECORD").decode().splitlines()
        assert {"llama_cpp/lib/libggml-cpu-haswell.so", "llama_cpp/lib/libggml-cpu-sse42.so"} <= names
        assert not any(name.startswith("bin/") for name in names)
        for line in record[:-1]:
            name, digest, size = line.split(",")
            data = wheel.read(name)
            expected = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
            assert digest == f"sha256={expected}" and int(size) == len(data)
        assert record[-1] == "llama_cpp_python-0.3.36.dist-info/RECORD,,"
        assert len(record) == len(names)


def test_repack_refuses_a_wheel_built_without_backend_modules(tmp_path: Path) -> None:
    raw = fake_wheel(tmp_path / "plain.whl", {"llama_cpp/lib/libggml-cpu.so": b"cpu"})
    with pytest.raises(SystemExit, match="GGML_BACKEND_DL"):
        repack(raw, tmp_path / "out")
    assert list((tmp_path / "out").iterdir()) == []


def test_windows_and_macos_scripts_follow_the_spec_and_pyproject() -> None:
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    spec = (INSTALLER / "stride.spec").read_text()
    assert 'name="stride"' in spec and 'APP_NAME = "Stride"' in spec and 'name=f"{APP_NAME}.app"' in spec
    iss = (INSTALLER / "stride.iss").read_text()
    default_version = re.search(r'#define AppVersion "(.+?)"', iss)
    assert default_version and default_version[1] == version
    assert r'Source: "..\dist\Stride\*"' in iss and r"{app}\stride.exe" in iss
    assert 'APP="$DIST/Stride.app"' in (INSTALLER / "make_dmg.sh").read_text()


@pytest.mark.parametrize("script", sorted(p.name for p in INSTALLER.glob("*.sh")))
def test_shell_scripts_are_strict_and_parse(script: str) -> None:
    path = INSTALLER / script
    assert "set -euo pipefail" in path.read_text()
    subprocess.run(["bash", "-n", str(path)], check=True)
