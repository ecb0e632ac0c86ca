"""Move ggml's backend modules into llama_cpp/lib inside a llama-cpp-python wheel.

    python installer/repack_llama_wheel.py RAW.whl OUT_DIR

With GGML_BACKEND_DL, CMake installs each backend module (libggml-cpu-haswell.so, ...) into the
wheel's top-level bin/, i.e. site-packages/bin/; llama_cpp keeps its libraries in llama_cpp/lib,
which is where engine/llama/backend.py loads backends from and what the PyInstaller spec collects.
Writes OUT_DIR/<same name>.whl with a fresh RECORD.
"""

from __future__ import annotations

import base64
import hashlib
import re
import sys
import zipfile
from pathlib import Path

BACKEND_MODULE = re.compile(r"^bin/((?:lib)?ggml-[\w.-]+\.(?:so|dll|dylib))$")


def record_line(name: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{name},sha256={digest},{len(data)}"


def repack(raw: Path, out_dir: Path) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / raw.name
    partial = target.with_suffix(".partial")
    moved = 0
    with zipfile.ZipFile(raw) as src, zipfile.ZipFile(partial, "w", zipfile.ZIP_DEFLATED) as dst:
        record_name = next(n for n in src.namelist() if n.endswith(".dist-info/RECORD"))
        lines = []
        for info in src.infolist():
            if info.filename == record_name:
                continue
            name = info.filename
            match = BACKEND_MODULE.match(name)
            if match:
                name = f"llama_cpp/lib/{match.group(1)}"
                moved += 1
            data = src.read(info)
            copy = zipfile.ZipInfo(name, info.date_time)
            copy.external_attr = info.external_attr  # keeps the modules executable
            dst.writestr(copy, data, zipfile.ZIP_DEFLATED)
            lines.append(record_line(name, data))
        lines.append(f"{record_name},,")
        dst.writestr(record_name, "\n".join(lines) + "\n")
    if not moved:
        partial.unlink()
        raise SystemExit(f"repack_llama_wheel: no ggml backend module in {raw}'s bin/ (built without GGML_BACKEND_DL?)")
    partial.replace(target)
    print(f"repack_llama_wheel: moved {moved} backend modules into llama_cpp/lib: {target}")
    return target


if __name__ == "__main__":
    repack(Path(sys.argv[1]), Path(sys.argv[2]))
