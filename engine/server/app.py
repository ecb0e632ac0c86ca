"""The ASGI app: routes, the API key, body limits, and the bridge from the model's thread to the client.

`create_app(host, config)` serves whatever model `host` runs; it never loads or owns one, so the
CLI (`LocalHost`) and the GUI (its engine thread) can put the same app around their model.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import secrets
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from engine.api import Delta
from engine.server.config import ServerConfig
from engine.server.errors import ApiError, invalid, unavailable
from engine.server.host import ModelHost, RequestQueue, ServedModel, Ticket
from engine.server.jobs import Event, Failed, Finished, generation_job
from engine.server.replies import ChatDeltas, chat_completion, finish_reason, text_completion, usage
from engine.server.requests import ChatRequest, TextRequest, parse_chat, parse_completion, parse_json_object
from engine.server.timings import timings
from engine.stats import ReplyStats

log = logging.getLogger("stride.server")

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


@dataclass(frozen=True)
class RequestRecord:
    """A generation request as it ended, for a request log (the window's Server panel)."""

    started: float  # Unix time it came in
    endpoint: str  # e.g. /v1/chat/completions
    status: int  # the HTTP status, or the error's when a stream ended in one
    n_tokens: int  # tokens generated
    tokens_per_s: float | None


OnRequest = Callable[[RequestRecord], None]  # called on the server's or the model's thread


def create_app(host: ModelHost, config: ServerConfig, on_request: OnRequest | None = None) -> Starlette:
    api = _Api(host, config, on_request)
    routes = [
        Route("/health", api.health, methods=["GET"]),
        Route("/v1/models", api.models, methods=["GET"]),
        Route("/v1/chat/completions", api.chat, methods=["POST"]),
        Route("/v1/completions", api.completions, methods=["POST"]),
    ]
    middleware = []
    if config.cors_origins:
        middleware.append(
            Middleware(
                CORSMiddleware,
                allow_origins=list(config.cors_origins),
                allow_methods=["GET", "POST"],
                allow_headers=["Authorization", "Content-Type"],
            )
        )
    app = Starlette(
        routes=routes,
        middleware=middleware,
        exception_handlers={ApiError: _api_error, HTTPException: _http_error, Exception: _internal_error},
    )
    app.state.queue = api.queue
    return app


async def _api_error(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return JSONResponse(exc.body(), status_code=exc.status)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 404:
        error = ApiError(404, f"there is no {request.url.path} here; see /v1/models", "not_found_error")
    elif exc.status_code == 405:
        error = invalid(f"{request.method} is not allowed on {request.url.path}")
        error.status = 405
    else:
        error = ApiError(exc.status_code, str(exc.detail), "invalid_request_error")
    return JSONResponse(error.body(), status_code=error.status, headers=exc.headers)


async def _internal_error(_request: Request, exc: Exception) -> Response:
    log.error("request failed", exc_info=exc)
    error = ApiError(500, f"internal error: {type(exc).__name__}: {exc}", "server_error")
    return JSONResponse(error.body(), status_code=500)


class _Api:
    def __init__(self, host: ModelHost, config: ServerConfig, on_request: OnRequest | None) -> None:
        self.host = host
        self.config = config
        self.queue = RequestQueue(config.queue_limit)
        self.on_request = on_request

    # Routes ---------------------------------------------------------------------------

    async def health(self, _request: Request) -> Response:
        if self.host.served() is None:
            raise unavailable("no model is loaded")
        return JSONResponse({"status": "ok"})

    async def models(self, request: Request) -> Response:
        self._authorize(request)
        served = self._served()
        card = {
            "id": served.id,
            "object": "model",
            "created": served.created,
            "owned_by": "stride",
            "meta": {"n_ctx": served.n_ctx},
        }
        return JSONResponse({"object": "list", "data": [card]})

    async def chat(self, request: Request) -> Response:
        return await self._answer(request, parse_chat)

    async def completions(self, request: Request) -> Response:
        return await self._answer(request, parse_completion)

    # Checks ---------------------------------------------------------------------------

    def _authorize(self, request: Request) -> None:
        key = self.config.api_key
        if key is None:
            return
        given = request.headers.get("authorization", "")
        scheme, _, token = given.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), key.encode()):
            raise ApiError(
                401, "a valid API key is needed: send the header 'Authorization: Bearer KEY'", "authentication_error"
            )

    def _served(self) -> ServedModel:
        served = self.host.served()
        if served is None:
            raise unavailable("no model is loaded; load one and retry")
        return served

    async def _body(self, request: Request) -> bytes:
        limit = self.config.max_body_bytes
        too_big = ApiError(
            413, f"the request body is larger than this server accepts ({limit:,} bytes)", "invalid_request_error"
        )
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            raise too_big
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise too_big
            chunks.append(chunk)
        return b"".join(chunks)

    # Generation ---------------------------------------------------------------------------

    async def _answer(
        self, request: Request, parse: Callable[[dict[str, Any], int], ChatRequest | TextRequest]
    ) -> Response:
        """Check, queue and run one request; the request log hears how it ended, once."""
        started, endpoint = time.time(), request.url.path

        def record(status: int, stats: ReplyStats | None = None) -> None:
            if self.on_request is not None:
                n_tokens = stats.n_predicted if stats else 0
                tokens_per_s = stats.tokens_per_second if stats else None
                self.on_request(RequestRecord(started, endpoint, status, n_tokens, tokens_per_s))

        try:
            self._authorize(request)
            body = parse_json_object(await self._body(request))
            parsed = parse(body, self.config.max_tokens_limit)
            served = self._served()
            ticket = self.queue.enter()
        except ApiError as exc:
            record(exc.status)
            raise

        def emit(event: Event) -> None:  # on the model's thread, or the loop's when cancelled
            if isinstance(event, Finished):
                record(200, event.reply.stats)
            elif isinstance(event, Failed):
                record(event.error.status)
            events.emit(event)

        events = _EventBridge(ticket)
        try:
            future = self.host.submit(generation_job(parsed, served.defaults, ticket, emit))
        except RuntimeError:  # the host stopped taking jobs
            self.queue.leave(ticket)
            record(503)
            raise unavailable("the server is shutting down") from None
        future.add_done_callback(lambda _f: self.queue.leave(ticket))
        future.add_done_callback(
            lambda f: (
                emit(Failed(ticket.error or unavailable("the server is shutting down"))) if f.cancelled() else None
            )
        )
        return await self._generate(request, parsed, served, ticket, events)

    async def _generate(
        self,
        request: Request,
        parsed: ChatRequest | TextRequest,
        served: ServedModel,
        ticket: Ticket,
        events: _EventBridge,
    ) -> Response:
        head = {
            "id": ("chatcmpl-" if isinstance(parsed, ChatRequest) else "cmpl-") + secrets.token_hex(12),
            "created": int(time.time()),
            "model": parsed.generation.model or served.id,
        }
        watcher = asyncio.create_task(_stop_on_disconnect(request, ticket))
        try:
            first = await events.next()  # the prompt fits (Started), or why not
            if isinstance(first, Failed):
                raise first.error
            if parsed.generation.stream:
                watcher.cancel()  # from here on the stream notices the client leaving
                stream = _chat_stream if isinstance(parsed, ChatRequest) else _text_stream
                return StreamingResponse(
                    _guarded(stream(parsed, events, head), ticket, self.queue),
                    media_type="text/event-stream",
                    headers=SSE_HEADERS,
                )
            while True:
                event = await events.next()
                if isinstance(event, Failed):
                    raise event.error
                if isinstance(event, Finished):
                    if isinstance(parsed, ChatRequest):
                        return JSONResponse(chat_completion(event.reply, parsed.tools, head))
                    return JSONResponse(text_completion(event.reply, head, parsed.return_tokens))
        except BaseException:
            ticket.stop.set()
            raise
        finally:
            watcher.cancel()


class _EventBridge:
    """Events from the model's thread into this request's task on the event loop.

    The model's thread only appends; the loop is woken once per batch, not once per event, and takes
    everything that arrived, deltas in a row merged into one: when the client or the loop falls
    behind the model, it gets fewer, larger chunks instead of a backlog, and the model's thread
    spends no time waiting on the loop.
    """

    def __init__(self, ticket: Ticket) -> None:
        self.loop = asyncio.get_running_loop()
        self.ticket = ticket
        self._lock = threading.Lock()
        self._pending: list[Event] = []
        self._arrived = asyncio.Event()

    def emit(self, event: Event) -> None:  # called on the model's thread
        with self._lock:
            self._pending.append(event)
            first = len(self._pending) == 1
        if first:
            try:
                self.loop.call_soon_threadsafe(self._arrived.set)
            except RuntimeError:  # the event loop is gone: nobody is listening any more
                self.ticket.stop.set()

    async def next_batch(self) -> list[Event]:
        await self._arrived.wait()
        with self._lock:
            events, self._pending = self._pending, []
            self._arrived.clear()
        batch: list[Event] = []
        for event in events:
            last = batch[-1] if batch else None
            if isinstance(event, Delta) and isinstance(last, Delta):
                batch[-1] = Delta(
                    last.segments + event.segments,
                    last.token_ids + event.token_ids,
                    last.from_draft + event.from_draft,
                )
            else:
                batch.append(event)
        return batch

    async def next(self) -> Event:
        """One event; the rest of its batch waits for the next call."""
        batch = await self.next_batch()
        with self._lock:
            if len(batch) > 1:
                self._pending[:0] = batch[1:]
                self._arrived.set()
        return batch[0]


async def _stop_on_disconnect(request: Request, ticket: Ticket) -> None:
    """A client that hangs up while its request waits or runs stops it (at the next decode step)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            ticket.stop.set()
            return


async def _guarded(chunks: AsyncIterator[str], ticket: Ticket, queue: RequestQueue) -> AsyncIterator[str]:
    """However the stream ends (done, the client gone, the server stopping), generation stops; the
    queue counts the stream open until its last chunk went out, so a shutdown can wait for it."""
    queue.stream_opened()
    try:
        async for chunk in chunks:
            yield chunk
    finally:
        ticket.stop.set()
        queue.stream_closed()


def _sse(data: dict[str, Any] | str) -> str:
    return f"data: {data if isinstance(data, str) else json.dumps(data, ensure_ascii=False)}\n\n"


async def _until_finished(
    events: _EventBridge, on_delta: Callable[[Delta], list[str]]
) -> AsyncIterator[str | Finished]:
    while True:
        for event in await events.next_batch():
            if isinstance(event, Delta):
                for chunk in on_delta(event):
                    yield chunk
            elif isinstance(event, Finished):
                yield event
                return
            elif isinstance(event, Failed):
                yield _sse(event.error.body())
                return


async def _chat_stream(
    request: ChatRequest | TextRequest, events: _EventBridge, head: dict[str, Any]
) -> AsyncIterator[str]:
    assert isinstance(request, ChatRequest)
    deltas = ChatDeltas(request.tools)

    def chunk(delta: dict[str, Any], reason: str | None = None) -> str:
        choice = {"index": 0, "delta": delta, "finish_reason": reason}
        return _sse({**head, "object": "chat.completion.chunk", "choices": [choice]})

    def on_delta(delta: Delta) -> list[str]:
        return [chunk(d) for d in deltas.feed(delta)]

    yield chunk({"role": "assistant", "content": None})
    async for item in _until_finished(events, on_delta):
        if not isinstance(item, Finished):
            yield item
            continue
        stats = item.reply.stats
        for delta in deltas.finish():
            yield chunk(delta)
        last = {**head, "object": "chat.completion.chunk"}
        last["choices"] = [{"index": 0, "delta": {}, "finish_reason": finish_reason(stats, deltas.n_calls > 0)}]
        if request.generation.include_usage:
            yield _sse(last)
            last = {**head, "object": "chat.completion.chunk", "choices": [], "usage": usage(stats)}
        yield _sse({**last, "timings": timings(stats)})
        yield _sse("[DONE]")


async def _text_stream(
    request: ChatRequest | TextRequest, events: _EventBridge, head: dict[str, Any]
) -> AsyncIterator[str]:
    assert isinstance(request, TextRequest)

    def chunk(text: str, reason: str | None = None) -> str:
        choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": reason}
        return _sse({**head, "object": "text_completion", "choices": [choice]})

    def on_delta(delta: Delta) -> list[str]:
        text = "".join(segment.text for segment in delta.segments)
        return [chunk(text)] if text else []

    async for item in _until_finished(events, on_delta):
        if not isinstance(item, Finished):
            yield item
            continue
        stats = item.reply.stats
        last = {**head, "object": "text_completion"}
        last["choices"] = [{"index": 0, "text": "", "logprobs": None, "finish_reason": finish_reason(stats, False)}]
        if request.generation.include_usage:
            yield _sse(last)
            last = {**head, "object": "text_completion", "choices": [], "usage": usage(stats)}
        yield _sse({**last, "timings": timings(stats)})
        yield _sse("[DONE]")
