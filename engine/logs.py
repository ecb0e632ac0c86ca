"""Stride's and llama.cpp's log: one rotating file in the user log folder."""

from __future__ import annotations

import logging
import logging.handlers
from pathlib import Path

import platformdirs

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def log_dir() -> Path:
    return Path(platformdirs.user_log_dir("Stride", appauthor=False))


LLAMA_CPP_LOGGER = "stride.llama.cpp"  # engine/llama/backend.py routes llama.cpp's own log here


def configure_logging(*, verbose: bool = False) -> Path | None:
    """Stride's log at INFO, and llama.cpp's warnings and errors, to stride.log; with verbose (debug
    logging) everything, llama.cpp's metadata dump on every load included, also on stderr.

    Returns the log file path, or None when the log folder cannot be written
    (a read-only home must not stop the app).
    """
    root = logging.getLogger()
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    # llama.cpp prints hundreds of INFO lines per load (every metadata key, every tensor type): chatter
    # that would fill the 2 MB log in a few loads. Why a load failed comes at ERROR and stays.
    logging.getLogger(LLAMA_CPP_LOGGER).setLevel(logging.NOTSET if verbose else logging.WARNING)
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
