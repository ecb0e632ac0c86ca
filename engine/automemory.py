"""What Auto learned about a model on this machine, kept across loads in the settings folder.

Auto's figures (how fast plain decoding and drafting run, the cost of verifying k rows, how
often each head is right) belong to one model's files on one CPU with one thread count, under
one version of Stride: the key is made of exactly those, so a re-quantized file, another
machine or an upgrade starts afresh. One small JSON file per key, written atomically.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import tempfile
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import platformdirs

log = logging.getLogger(__name__)


def folder() -> Path:
    return Path(platformdirs.user_config_dir("Stride", appauthor=False)) / "auto"


def stride_version() -> str:
    try:
        return metadata.version("stride-chat")
    except metadata.PackageNotFoundError:  # running from a source tree that was never installed
        return "source"


def cpu_name() -> str:
    """The CPU's model name (Linux /proc/cpuinfo), else what the platform says."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def memory_key(files: Sequence[Path], threads: int) -> str:
    """A key for these model files (by size and modification time) on this CPU with this many threads."""
    parts = []
    for path in files:
        st = path.stat()
        parts.append(f"{path.name}:{st.st_size}:{st.st_mtime_ns}")
    parts += [cpu_name(), f"threads={threads}", f"stride={stride_version()}"]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:24]


def load(key: str) -> dict[str, Any] | None:
    """What was saved under `key`, or None (nothing saved, or unreadable: Auto then starts afresh)."""
    path = folder() / f"{key}.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        log.warning("ignoring Auto's memory %s: %s", path, exc)
        return None
    return data if isinstance(data, dict) else None


def save(key: str, state: dict[str, Any]) -> None:
    """Write atomically (a crash leaves the old file or the new one); a failure is logged, never raised."""
    target = folder() / f"{key}.json"
    tmp: str | None = None
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".auto-", suffix=".tmp")
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(state, f)
        os.replace(tmp, target)
        tmp = None
    except OSError as exc:
        log.warning("could not save Auto's memory to %s: %s", target, exc)
    finally:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)


def forget(key: str) -> None:
    (folder() / f"{key}.json").unlink(missing_ok=True)


def forget_all() -> int:
    """Delete everything Auto learned, for every model; how many files went."""
    removed = 0
    for path in folder().glob("*.json"):
        try:
            path.unlink()
            removed += 1
        except OSError as exc:
            log.warning("could not delete %s: %s", path, exc)
    return removed
