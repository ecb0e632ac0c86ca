"""Access to the llama-cpp-python sdist, for tests that need files from llama.cpp.

llama.cpp files (chat templates ...) are read from the sdist at test time
rather than copied into this repository.
"""

from __future__ import annotations

import functools
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import platformdirs

SDIST_VERSION = "0.3.36"
SDIST_ROOT = f"llama_cpp_python-{SDIST_VERSION}"
SDIST_NAME = f"{SDIST_ROOT}.tar.gz"
# The user's cache folder for Stride (~/.cache/stride on Linux). conftest.py hides the XDG folders
# from the tests and passes the real one on as STRIDE_USER_CACHE.
CACHE_DIR = Path(os.environ.get("STRIDE_USER_CACHE") or platformdirs.user_cache_dir("stride", appauthor=False))


def _candidates() -> list[Path]:
    override = os.environ.get("STRIDE_SDIST")
    return [*([Path(override)] if override else []), CACHE_DIR / SDIST_NAME]


@functools.cache
def llama_cpp_sdist() -> Path:
    """Path of the sdist: $STRIDE_SDIST, else the user's Stride cache folder, else downloaded there from PyPI."""
    for path in _candidates():
        if path.is_file():
            return path
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--no-binary",
            ":all:",
            f"llama-cpp-python=={SDIST_VERSION}",
            "-d",
            str(CACHE_DIR),
        ],
        check=True,
    )
    path = CACHE_DIR / SDIST_NAME
    if not path.is_file():
        raise FileNotFoundError(f"pip download did not produce {path}")
    return path


@functools.cache
def read_sdist_member(relpath: str) -> str:
    """Text of a file in the sdist, relpath relative to its top folder."""
    with tarfile.open(llama_cpp_sdist()) as tar:
        member = tar.extractfile(f"{SDIST_ROOT}/{relpath}")
        if member is None:
            raise FileNotFoundError(f"{relpath} is not a regular file in {SDIST_NAME}")
        return member.read().decode("utf-8")
