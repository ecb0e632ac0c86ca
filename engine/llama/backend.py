"""llama.cpp's process-wide side: its log routed to `logging`, the CPU backend chosen and loaded, init.

Why a load failed comes from what llama.cpp logged meanwhile: `load_logged` catches it.
"""

from __future__ import annotations

import ctypes
import functools
import logging
import os
import re
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import llama_cpp
from llama_cpp import mtmd_cpp

LLAMA_CPP_PYTHON_VERSION: str = llama_cpp.__version__
T = TypeVar("T")
log = logging.getLogger("stride.llama")
llama_log = logging.getLogger("stride.llama.cpp")

_init_lock = threading.Lock()
_initialised = False
# The first error llama.cpp logs on this thread since the last reset: why a load failed, for the message.
_errors = threading.local()
# ggml_log_level: 1 debug, 2 info, 3 warn, 4 error (5 continues the previous line; logged as debug)
_LOG_LEVELS = {1: logging.DEBUG, 2: logging.INFO, 3: logging.WARNING, 4: logging.ERROR}


@llama_cpp.llama_log_callback  # type: ignore[untyped-decorator]
def _log_callback(level: int, text: bytes, _user: ctypes.c_void_p) -> None:
    message = text.decode("utf-8", "replace").rstrip()
    if message:
        llama_log.log(_LOG_LEVELS.get(level, logging.DEBUG), message)
        if level == 4 and getattr(_errors, "first", "") is None:
            _errors.first = message


def _lib_dir() -> Path:
    # llama_cpp/lib, in a venv and in the frozen bundle alike (the spec keeps that layout).
    return Path(llama_cpp.__file__).resolve().parent / "lib"


def _ggml_library() -> ctypes.CDLL:
    """libggml, the very instance libllama is linked against.

    The wheel ships libggml.so, .so.0 and .so.0.x as separate copies; opening another copy
    than the soname libllama resolved would load a second ggml with its own, empty backend
    registry. The soname file in llama_cpp/lib is the one libllama's $ORIGIN rpath found.
    """
    lib_dir = _lib_dir()
    if sys.platform == "win32":
        return ctypes.CDLL(str(lib_dir / "ggml.dll"))
    pattern = "libggml.[0-9]*.dylib" if sys.platform == "darwin" else "libggml.so.[0-9]*"
    candidates = sorted(lib_dir.glob(pattern), key=lambda p: len(p.name))
    if not candidates:
        raise LlamaError(f"libggml is missing from {lib_dir}")
    return ctypes.CDLL(str(candidates[0]))


def _load_backends() -> None:
    """Load ggml's backends when they are built as modules (GGML_BACKEND_DL: the portable build).

    ggml itself looks for libggml-cpu-*.so next to the executable and in the current folder,
    neither of which is llama_cpp/lib in a venv or in the bundle. A plain build links its CPU
    backend in, so the registry is already populated and this does nothing.
    """
    ggml = _ggml_library()
    ggml.ggml_backend_reg_count.restype = ctypes.c_size_t
    if ggml.ggml_backend_reg_count():
        return
    ggml.ggml_backend_load_all_from_path.argtypes = [ctypes.c_char_p]
    ggml.ggml_backend_load_all_from_path(str(_lib_dir()).encode())
    if not ggml.ggml_backend_reg_count():
        raise LlamaError(f"no ggml backend could be loaded from {_lib_dir()}; see the log for the reason")


class _DlInfo(ctypes.Structure):
    _fields_ = [
        ("dli_fname", ctypes.c_char_p),
        ("dli_fbase", ctypes.c_void_p),
        ("dli_sname", ctypes.c_char_p),
        ("dli_saddr", ctypes.c_void_p),
    ]


def cpu_variant() -> str | None:
    """Which build of ggml's CPU backend runs: "haswell", "sse42", "x64", ... when llama.cpp
    picked one of its per-CPU modules at start-up (the portable build), "native" for the single
    CPU backend of a plain build (pip's default, tuned with -march=native). None where it cannot
    be told (Windows) or the CPU backend is not loaded.

    The file that holds the CPU backend's registry object names the variant: libggml-cpu-<v>.so.
    """
    if sys.platform == "win32":
        return None
    init_backend()
    ggml = _ggml_library()
    ggml.ggml_backend_reg_by_name.argtypes = [ctypes.c_char_p]
    ggml.ggml_backend_reg_by_name.restype = ctypes.c_void_p
    reg = ggml.ggml_backend_reg_by_name(b"CPU")
    if not reg:
        return None
    dladdr = ctypes.CDLL(None).dladdr
    dladdr.argtypes = [ctypes.c_void_p, ctypes.POINTER(_DlInfo)]
    info = _DlInfo()
    if not dladdr(reg, ctypes.byref(info)) or not info.dli_fname:
        return None
    match = re.match(r"libggml-cpu(?:-(.+?))?\.(?:so|dylib)", Path(os.fsdecode(info.dli_fname)).name)
    if not match:
        return None
    return match.group(1) or "native"


@functools.cache
def cpu_has_amx() -> bool:
    """Whether the CPU reports Intel AMX tiles (Linux; False where that cannot be read).

    ggml then moves quantized weights into AMX buffers, and on such a machine here (a VM reporting
    AMX) its AMX matrix multiply killed the process (SIGSEGV/SIGILL) at the first batch of two or
    more tokens of any Q8_0 or K-quant model: every MTP verification. Loading without llama.cpp's
    extra buffer types avoids it, at the price of its CPU weight repacking on these CPUs only.
    """
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            return any(line.startswith("flags") and " amx_tile" in line for line in f)
    except OSError:
        return False


def init_backend() -> None:
    """Initialise llama.cpp once per process and route its log through `logging`."""
    global _initialised
    with _init_lock:
        if not _initialised:
            llama_cpp.llama_log_set(_log_callback, ctypes.c_void_p(0))
            mtmd_cpp.mtmd_log_set(_log_callback, ctypes.c_void_p(0))  # the vision projector's too
            mtmd_cpp.mtmd_helper_log_set(_log_callback, ctypes.c_void_p(0))
            _load_backends()
            llama_cpp.llama_backend_init()
            _initialised = True


def _load_reason(logged: str | None) -> str:
    """llama.cpp's own words for a failed load, without its function-name prefixes."""
    if not logged:
        return "no reason given; see the log"
    reason = logged.split("error loading model: ", 1)[-1]
    return " ".join(reason.split())


def load_logged(load: Callable[[], T]) -> tuple[T, str]:
    """Run a llama.cpp load; return what it returned and, in llama.cpp's words, the first error it logged."""
    _errors.first = None
    try:
        result = load()
    finally:
        reason, _errors.first = _errors.first, ""
    return result, _load_reason(reason)


class LlamaError(RuntimeError):
    """llama.cpp refused an operation; the message says which and why."""
