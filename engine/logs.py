"""Stride's and llama.cpp's log: one rotating file in the user log folder."""

from __future__ import annotations

import logging
import logging.handlers
from pathlib import Path

import platformdirs

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def log_dir() -> Path:
    return Path(platformdirs.user_log_dir("Stride", appauthor=False))


def configure_logging(*, verbose: bool = False) -> Path | None:
    """Send everything (llama.cpp included, at INFO) to stride.log; warnings to stderr when verbose.

    Returns the log file path, or None when the log folder cannot be written
    (a read-only home must not stop the app).
    """
    root = logging.getLogger()
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    for handler in list(root.handlers):
        root.removeHandler(handler)
    path: Path | None = log_dir() / "stride.log"
    try:
        assert path is not None
        path.parent.mkdir(parents=True, exist_ok=True)
        file_handler = logging.handlers.RotatingFileHandler(path, maxBytes=2_000_000, backupCount=3, encoding="utf-8")
        file_handler.setFormatter(logging.Formatter(LOG_FORMAT))
        root.addHandler(file_handler)
    except OSError:
        path = None
    if verbose:
        stream = logging.StreamHandler()
        stream.setLevel(logging.DEBUG)
        stream.setFormatter(logging.Formatter(LOG_FORMAT))
        root.addHandler(stream)
    else:
        root.addHandler(logging.NullHandler())
    return path
