"""The one adapter between the Qt-free engine and the GUI: a worker QObject on its own QThread.

The worker owns the loaded model. The GUI sends it requests through queued
signals and gets results back as signals, each tagged with the request id so a
late result from a cancelled or superseded request is recognised and dropped by
the receiver. Stopping is a flag the GUI sets directly (`request_stop`): the
worker is busy inside a decode loop, so a queued call would only arrive after it. The flag
names the newest request it stops, so a request still queued (behind a server request, say)
starts stopped rather than clearing the flag.

The worker is also the server's `ModelHost`: a request from another app is a job queued onto
the engine thread behind the GUI's own replies (one FIFO, one KV cache), run between them.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
import traceback
from collections.abc import Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from PySide6.QtCore import QObject, QThread, Signal, Slot

from engine import automemory, options, vision
from engine.about import version_text
from engine.api import (
    Delta,
    EngineError,
    Failure,
    GenerationParams,
    LoadOptions,
    NotEnoughMemory,
    PromptTooLong,
    StatsSnapshot,
)
from engine.demo import ensure_demo_model
from engine.generate import Reply
from engine.gguf import (
    MemoryEstimate,
    ModelInfo,
    ModelPaths,
    ProjectorInfo,
    Verdict,
    estimate_memory,
    first_part,
    free_memory_bytes,
    inspect_model,
    inspect_projector,
    looks_like_part,
    memory_verdict,
    projector_beside,
)
from engine.llama import cpu_variant
from engine.logs import configure_logging, log_dir
from engine.runtime import Runtime
from engine.server import RequestRecord, ServedModel, ServerConfig, ServerStartError, StrideServer, is_loopback
from engine.server.errors import unavailable
from engine.server.host import Job
from engine.stats import ReplyStats
from engine.vision import ImageInput, image_item, projector_memory

# What the app calls in the engine besides the worker: it imports the engine only here and in engine.api.
__all__ = [
    "EngineClient",
    "EngineWorker",
    "GenerateRequest",
    "ImageInput",
    "LoadRequest",
    "LoadedModel",
    "MemoryEstimate",
    "ModelInfo",
    "ModelPaths",
    "ProjectorInfo",
    "ReplyResult",
    "RequestRecord",
    "ServerConfig",
    "ServerStartError",
    "StrideServer",
    "Verdict",
    "configure_logging",
    "cpu_variant",
    "ensure_demo_model",
    "estimate_memory",
    "first_part",
    "free_memory_bytes",
    "image_item",
    "inspect_model",
    "inspect_projector",
    "is_loopback",
    "log_dir",
    "looks_like_part",
    "memory_verdict",
    "options",
    "projector_beside",
    "projector_memory",
    "stop_served_requests",
    "version_text",
]

log = logging.getLogger("stride.worker")
STATS_INTERVAL_S = 0.1  # live figures at 10 Hz: smooth for the eye, nothing for the decode loop


@dataclass(frozen=True)
class LoadRequest:
    model_path: ModelPaths  # a file, any part of a set, or several parts picked together
    mtp_path: ModelPaths | None
    options: LoadOptions
    check_memory: bool = True  # False once the user chose to load a model too big for free memory
    projector: Path | None = None  # the vision projector (mmproj) for pictures in messages


@dataclass(frozen=True)
class LoadedModel:
    info: ModelInfo
    n_heads: int
    n_ctx: int
    reads_pictures: bool = False  # loaded with a vision projector


@dataclass(frozen=True)
class GenerateRequest:
    messages: Sequence[Mapping[str, Any]]
    params: GenerationParams
    template_vars: Mapping[str, Any] = field(default_factory=dict)
    drop_oldest: bool = False  # when the conversation outgrows the context; else stop with a message


@dataclass(frozen=True)
class ReplyResult:
    text: str
    reasoning: str
    n_tokens: int
    stats: StatsSnapshot
    template_warning: str | None
    n_dropped: int  # oldest messages left out to fit the context


class EngineWorker(QObject):
    """Lives on the engine thread; every slot runs there."""

    sig_load_progress = Signal(int, float, str)
    """request id, fraction loaded 0..1, what is happening"""
    sig_loaded = Signal(int, object)
    """request id, LoadedModel"""
    sig_load_failed = Signal(int, object)
    """request id, api.Failure (kind "cancelled" when the user stopped it)"""
    sig_load_too_big = Signal(int, object)
    """request id, api.NotEnoughMemory: nothing was loaded, the GUI asks whether to load anyway"""
    sig_prompt_progress = Signal(int, int, int)
    """request id, prompt tokens evaluated, prompt tokens to evaluate (encoding a picture counts as its tokens)"""
    sig_delta = Signal(int, object)
    """request id, api.Delta: the text one decode step added"""
    sig_stats = Signal(int, object)
    """request id, api.StatsSnapshot: live at 10 Hz, then once more with the final figures"""
    sig_finished = Signal(int, object)
    """request id, ReplyResult"""
    sig_failed = Signal(int, object)
    """request id, api.Failure"""
    sig_auto_forgotten = Signal(int)
    """how many models' measurements were dropped"""
    sig_serving = Signal(bool)
    """True as a server request starts on the engine thread, False as it ends"""
    _sig_job = Signal(object, object)
    """Future, Job: a server request, queued onto the engine thread behind the GUI's requests"""

    def __init__(self) -> None:
        super().__init__()
        self._runtime: Runtime | None = None
        self._stop = threading.Event()
        self._stopped_up_to = 0  # requests with ids up to this one were stopped, perhaps before they started
        # The server's threads ask what is served and queue jobs; the lock guards what they read.
        self._lock = threading.Lock()
        self._served: ServedModel | None = None
        self._serve_defaults = GenerationParams()
        self._waiting_jobs: set[Future[None]] = set()
        self._sig_job.connect(self._run_job)

    # Called from the GUI thread directly -------------------------------------------

    def request_stop(self, up_to: int) -> None:
        """Stop the request running now and every queued one with an id up to `up_to`."""
        self._stopped_up_to = max(self._stopped_up_to, up_to)
        self._stop.set()

    def _start_request(self, request_id: int) -> None:
        """A new request runs: the flag is down unless the GUI stopped this request already."""
        self._stop.clear()
        if request_id <= self._stopped_up_to:  # read after the clear: a stop arriving meanwhile is kept
            self._stop.set()

    def set_serve_defaults(self, defaults: GenerationParams) -> None:
        """The GUI's MTP settings, which server requests run with (they set sampling themselves)."""
        with self._lock:
            self._serve_defaults = defaults
            if self._served is not None:
                self._served = replace(self._served, defaults=defaults)

    def cancel_waiting_jobs(self) -> None:
        """Server requests not started yet get a 503 (closing); the running one is stopped by its ticket."""
        with self._lock:
            waiting, self._waiting_jobs = self._waiting_jobs, set()
        for future in waiting:
            future.cancel()

    # ModelHost: called from the server's threads -------------------------------------

    def served(self) -> ServedModel | None:
        with self._lock:
            return self._served

    def submit(self, job: Job) -> Future[None]:
        future: Future[None] = Future()
        with self._lock:
            self._waiting_jobs.add(future)
        self._sig_job.emit(future, job)  # queued: the engine thread runs it after what the GUI sent before
        return future

    # Slots (engine thread) -----------------------------------------------------------

    @Slot(object, object)
    def _run_job(self, future: Future[None], job: Job) -> None:
        with self._lock:
            self._waiting_jobs.discard(future)
        if self._runtime is None:  # unloaded while it waited: its request gets a 503
            future.cancel()
            return
        if not future.set_running_or_notify_cancel():
            return
        self.sig_serving.emit(True)
        try:
            job(self._runtime)
            future.set_result(None)
        except BaseException as exc:  # jobs report their own failures; this is a bug, kept for the server's log
            log.exception("a server job failed")
            future.set_exception(exc)
        finally:
            self.sig_serving.emit(False)

    @Slot(int, object)
    def load(self, request_id: int, request: LoadRequest) -> None:
        self._start_request(request_id)
        self._close_runtime()
        what = _files_named(request.model_path, request.mtp_path)
        log.info("loading %s", what)
        try:
            runtime = Runtime.load(
                request.model_path,
                request.mtp_path,
                request.options,
                progress=lambda fraction, stage: self.sig_load_progress.emit(request_id, fraction, stage),
                should_cancel=self._stop.is_set,
                check_memory=request.check_memory,
                projector=request.projector,
            )
        except NotEnoughMemory as exc:
            log.warning("not loaded: %s", exc)
            self.sig_load_too_big.emit(request_id, exc)
            return
        except EngineError as exc:
            if exc.failure_kind == "cancelled":
                log.info("loading %s was cancelled", what)
                failure = Failure("cancelled", "Loading was cancelled.")
            else:  # the dialog goes; the log keeps which file and why
                log.warning("could not load %s: %s", what, exc)
                failure = Failure(exc.failure_kind, str(exc), str(exc))
            self.sig_load_failed.emit(request_id, failure)
            return
        except Exception as exc:  # a bug or an unexpected llama.cpp failure: report, never crash the thread
            log.exception("loading %s failed", what)
            failure = Failure("load_failed", f"Could not load the model: {exc}", traceback.format_exc())
            self.sig_load_failed.emit(request_id, failure)
            return
        self._runtime = runtime
        with self._lock:
            self._served = ServedModel(runtime.info.path.name, runtime.n_ctx, int(time.time()), self._serve_defaults)
        loaded = LoadedModel(runtime.info, runtime.n_heads, runtime.target.n_ctx, runtime.vision is not None)
        self.sig_loaded.emit(request_id, loaded)

    @Slot(int, object)
    def generate(self, request_id: int, request: GenerateRequest) -> None:
        self._start_request(request_id)
        runtime = self._runtime
        if runtime is None:
            self.sig_failed.emit(request_id, Failure("no_model", "No model is loaded."))
            return
        last_stats = 0.0

        def on_delta(delta: Delta, stats: ReplyStats) -> None:
            nonlocal last_stats
            self.sig_delta.emit(request_id, delta)
            now = time.perf_counter()
            if now - last_stats >= STATS_INTERVAL_S:
                last_stats = now
                self.sig_stats.emit(request_id, stats.snapshot())

        try:
            # Leave room for a useful reply: a quarter of the context, or max_tokens if smaller.
            reserve = min(request.params.max_tokens, runtime.target.n_ctx // 4)
            prompt, n_dropped = runtime.fit_chat_prompt(
                request.messages, request.template_vars, reserve=reserve, drop_oldest=request.drop_oldest
            )
            reply: Reply = runtime.generate(
                prompt.tokens,
                request.params,
                starts_in_reasoning=prompt.starts_in_reasoning,
                on_delta=on_delta,
                on_progress=lambda done, total: self.sig_prompt_progress.emit(request_id, done, total),
                should_stop=self._stop.is_set,
                images=prompt.images,
            )
        except vision.ImageError as exc:  # a picture in the conversation, or pictures without a projector
            self.sig_failed.emit(request_id, Failure("bad_image", str(exc), str(exc)))
            return
        except PromptTooLong as exc:
            message = (
                f"This conversation has outgrown the context ({exc}). Start a new chat, raise the context size, "
                "or choose 'drop the oldest turns' in Settings."
            )
            self.sig_failed.emit(request_id, Failure("prompt_too_long", message, str(exc)))
            return
        except Exception as exc:
            log.exception("generation failed")
            failure = Failure("generation_failed", f"Generation failed: {exc}", traceback.format_exc())
            self.sig_failed.emit(request_id, failure)
            return
        # The final figures travel once, in the result; sig_stats carries only the live ones.
        snapshot = reply.stats.snapshot()
        result = ReplyResult(reply.text, reply.reasoning, len(reply.token_ids), snapshot, prompt.warning, n_dropped)
        self.sig_finished.emit(request_id, result)

    @Slot()
    def forget_auto(self) -> None:
        """Drop what Auto learned: the loaded model's figures in memory, and every model's on disk."""
        n_models = automemory.forget_all()
        if self._runtime is not None:
            self._runtime.forget_auto()
        self.sig_auto_forgotten.emit(n_models)

    @Slot()
    def unload(self) -> None:
        self._close_runtime()

    def _close_runtime(self) -> None:
        with self._lock:
            self._served = None
        if self._runtime is not None:
            self._runtime.close()
            self._runtime = None


class EngineClient(QObject):
    """GUI-side handle: owns the engine thread, hands out request ids, shuts down cleanly."""

    sig_request_load = Signal(int, object)
    """request id, LoadRequest"""
    sig_request_generate = Signal(int, object)
    """request id, GenerateRequest"""
    sig_request_unload = Signal()
    """no arguments: free the model"""
    sig_request_forget_auto = Signal()
    """no arguments: drop what Auto learned"""

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._ids = itertools.count(1)
        self._last_id = 0  # the newest request handed out: stop() stops it and any before it
        self.engine_thread = QThread()
        self.engine_thread.setObjectName("stride-engine")
        self.worker = EngineWorker()
        self.worker.moveToThread(self.engine_thread)
        self.engine_thread.finished.connect(self.worker.deleteLater)
        self.sig_request_load.connect(self.worker.load)
        self.sig_request_generate.connect(self.worker.generate)
        self.sig_request_unload.connect(self.worker.unload)
        self.sig_request_forget_auto.connect(self.worker.forget_auto)
        self.engine_thread.start()

    def load(self, request: LoadRequest) -> int:
        request_id = self._last_id = next(self._ids)
        self.sig_request_load.emit(request_id, request)
        return request_id

    def generate(self, request: GenerateRequest) -> int:
        request_id = self._last_id = next(self._ids)
        self.sig_request_generate.emit(request_id, request)
        return request_id

    def forget_auto(self) -> None:
        """Queued behind any reply in progress, so it never races the engine thread."""
        self.sig_request_forget_auto.emit()

    def stop(self) -> None:
        self.worker.request_stop(self._last_id)

    def shutdown(self, timeout_ms: int = 30_000) -> bool:
        """Cancel whatever runs, free the model, end the thread. Never terminate()."""
        if not self.engine_thread.isRunning():
            return True
        self.worker.request_stop(self._last_id)
        self.sig_request_unload.emit()
        self.engine_thread.quit()
        return bool(self.engine_thread.wait(timeout_ms))


def stop_served_requests(server: StrideServer, why: str) -> None:
    """Every server request in flight ends with a 503 saying `why` (the window switches or drops the model)."""
    server.queue.stop_all(unavailable(why))


def _files_named(model: ModelPaths, mtp: ModelPaths | None) -> str:
    """The files a load request names, for the log: a.gguf, or a.gguf + mtp.gguf; parts joined by commas."""

    def names(paths: ModelPaths) -> str:
        return ", ".join(str(p) for p in ([paths] if isinstance(paths, Path) else paths))

    return names(model) + (f" + MTP file {names(mtp)}" if mtp else "")
