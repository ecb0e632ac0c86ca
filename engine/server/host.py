"""Who runs the model for the server, and the FIFO queue in front of it.

The server never touches a Runtime from its own thread: it hands a job to a `ModelHost`, which
runs jobs one at a time, in order, on the thread that owns the model. `LocalHost` is that thread
for `stride-cli serve`. The GUI can serve its already-loaded model by implementing the same two
methods on its engine thread, so its own replies and the server's queue behind one another.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Protocol

from engine.api import GenerationParams
from engine.runtime import Runtime
from engine.server.errors import ApiError, unavailable

Job = Callable[[Runtime], None]


@dataclass(frozen=True)
class ServedModel:
    """What the server says about the model and how it runs it."""

    id: str  # /v1/models lists it; requests may name any model
    n_ctx: int
    created: int  # Unix time it was loaded
    defaults: GenerationParams  # MTP depth and drafting; requests set sampling, stops and max_tokens


class ModelHost(Protocol):
    def served(self) -> ServedModel | None:
        """The model now loaded, or None while there is none (requests get a 503)."""

    def submit(self, job: Job) -> Future[None]:
        """Run job(runtime) on the model's thread after the jobs submitted before it."""


class LocalHost:
    """A Runtime of our own, on one engine thread."""

    def __init__(self, runtime: Runtime, served: ServedModel) -> None:
        self.runtime = runtime
        self._served = served
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="stride-engine")

    def served(self) -> ServedModel | None:
        return self._served

    def submit(self, job: Job) -> Future[None]:
        return self._executor.submit(job, self.runtime)

    def close(self) -> None:
        """Drop jobs not started, wait for the running one (its request was told to stop), free the model."""
        self._executor.shutdown(wait=True, cancel_futures=True)
        self.runtime.close()


class Ticket:
    """One request's place in the queue; `stop` ends its generation at the next decode step.

    `error`, when set with the stop, is what the client gets instead of the reply cut short.
    """

    def __init__(self) -> None:
        self.stop = threading.Event()
        self.error: ApiError | None = None


class RequestQueue:
    """Counts requests waiting or running; past `limit` a new one is refused with a 503."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._lock = threading.Lock()
        self._tickets: set[Ticket] = set()
        self._streams = 0

    def enter(self) -> Ticket:
        with self._lock:
            if len(self._tickets) >= self.limit:
                raise unavailable(
                    f"the server is busy: {len(self._tickets)} requests are waiting or running (the limit is "
                    f"{self.limit}); retry in a moment"
                )
            ticket = Ticket()
            self._tickets.add(ticket)
            return ticket

    def leave(self, ticket: Ticket) -> None:
        with self._lock:
            self._tickets.discard(ticket)

    @property
    def in_flight(self) -> int:
        with self._lock:
            return len(self._tickets)

    @property
    def streams_open(self) -> int:
        """Streamed responses not yet fully sent (their generation may already have ended)."""
        with self._lock:
            return self._streams

    def stream_opened(self) -> None:
        with self._lock:
            self._streams += 1

    def stream_closed(self) -> None:
        with self._lock:
            self._streams -= 1

    def stop_all(self, error: ApiError | None = None) -> None:
        """Every request in flight stops at its next decode step: shutting down (its reply so far
        ends normally), or with `error` (e.g. the GUI switched models), which the client gets instead."""
        with self._lock:
            for ticket in self._tickets:
                if error is not None:
                    ticket.error = error
                ticket.stop.set()
