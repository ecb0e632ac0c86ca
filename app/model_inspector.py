"""Reading a model before it loads (what it is, what it needs, what memory is free) off the GUI
thread. The controller owns a ModelInspector and hands it to the model picker, which asks and
shows the answer.

Inspection reads only the files' metadata and tensor directories, but on a slow disk even that
takes a moment for a 100 GB model, so it runs on the thread pool; every request carries an id,
a queued request that was superseded never starts, and only the latest request is answered.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from PySide6.QtCore import QObject, QRunnable, QThreadPool, Signal, Slot

from app.engine_calls import (
    MemoryEstimate,
    ModelInfo,
    ProjectorInfo,
    ensure_demo_model,
    estimate_memory,
    free_memory_bytes,
    inspect_model,
    inspect_projector,
    projector_beside,
    projector_memory,
)
from app.model_files import ModelChoice, engine_paths
from engine.api import DEMO_NAME, ErrorKind, ModelFileError


def context_size(n_ctx: int, info: ModelInfo) -> int:
    """The context the runtime will create: 0 means the trained size, and the runtime caps it there."""
    if n_ctx <= 0:
        return info.context_length
    return min(n_ctx, info.context_length) if info.context_length > 0 else n_ctx


@dataclass(frozen=True)
class Inspection:
    """What a model is, what it needs and what is free; or why it could not be read."""

    request: int
    info: ModelInfo | None = None
    estimate: MemoryEstimate | None = None
    free: int = 0
    projector: ProjectorInfo | None = None
    projector_bytes: int = 0  # what the projector adds to the estimate, when it is paired (it will load)
    error: str = ""
    kind: ErrorKind | None = None


class _Relay(QObject):
    """Carries a task's outcome to the GUI thread (a QRunnable cannot have signals).

    Unparented and owned by its task, so a dialog closed mid-read leaves nothing dangling:
    Qt drops the connection when the dialog is destroyed.
    """

    done = Signal(object)  # Inspection


class _Latest:
    """The newest request id, shared with the pool threads so queued stale tasks skip their read."""

    def __init__(self) -> None:
        self.value = 0


def _demo_model() -> Path:
    try:
        return ensure_demo_model()
    except OSError as e:  # a read-only or full data folder
        raise ModelFileError(
            f"The demo model could not be created ({e.strerror or e}); check that the user data folder "
            "is writable and has 50 MB free",
            "unreadable",
        ) from None


def paired(projector: ProjectorInfo, info: ModelInfo) -> bool:
    """Whether a projector's picture tokens are as wide as this model's (else it is for another model)."""
    return projector.n_embd_out is None or projector.n_embd_out == info.n_embd


def _projector_for(info: ModelInfo) -> ProjectorInfo | None:
    found = projector_beside(info.path)
    if found is None:
        return None
    try:
        return inspect_projector(found)
    except ModelFileError:  # an unreadable projector must not stop the model from loading
        return None


class _InspectTask(QRunnable):
    def __init__(self, request: int, latest: _Latest, path: ModelChoice, mtp_path: ModelChoice, n_ctx: int) -> None:
        super().__init__()
        self.relay = _Relay()
        self._request = request
        self._latest = latest
        self._path = path
        self._mtp_path = mtp_path
        self._n_ctx = n_ctx

    def run(self) -> None:
        if self._latest.value != self._request:
            return  # superseded while it waited for a thread: nobody wants the answer
        self.relay.done.emit(self._inspect())

    def _inspect(self) -> Inspection:
        try:
            path = _demo_model() if self._path == DEMO_NAME else engine_paths(self._path)
            info = inspect_model(path, engine_paths(self._mtp_path) if self._mtp_path else None)
            estimate = estimate_memory(info, context_size(self._n_ctx, info))
            free = free_memory_bytes()  # here, not in the GUI: on macOS it runs vm_stat
            projector = _projector_for(info)  # reads the headers of mmproj files beside it
            projector_bytes = projector_memory(projector, info.n_embd) if projector and paired(projector, info) else 0
        except ModelFileError as e:
            return Inspection(self._request, error=str(e), kind=e.kind)
        except Exception as e:  # never leave the dialog stuck on "Reading…"
            return Inspection(self._request, error=f"The file could not be inspected ({type(e).__name__}: {e})")
        return Inspection(self._request, info, estimate, free, projector, projector_bytes)


class ModelInspector(QObject):
    """Reads models on the thread pool and answers the latest request only."""

    sig_inspected = Signal(object)  # Inspection, for the latest request

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._latest = _Latest()

    def inspect(self, model: ModelChoice, mtp: ModelChoice, n_ctx: int) -> int:
        """Start reading this model (and MTP file) for a context of n_ctx; returns the request id
        its Inspection will carry."""
        self._latest.value += 1
        task = _InspectTask(self._latest.value, self._latest, model, mtp, n_ctx)
        task.relay.done.connect(self._on_done)
        QThreadPool.globalInstance().start(task)
        return self._latest.value

    @Slot(object)
    def _on_done(self, inspection: Inspection) -> None:
        if inspection.request == self._latest.value:
            self.sig_inspected.emit(inspection)
