"""What runs on the model's thread for one request: build the prompt, check it fits, generate.

Everything the job learns goes out through `emit` as events, in order: `Started` once the prompt
fits, each `Delta` as it is decoded, then `Finished`; or a single `Failed` instead. The server's
event loop turns them into one JSON reply or a stream.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, replace

from engine.api import Delta, GenerationParams
from engine.chat import ChatTemplateError
from engine.generate import Reply
from engine.runtime import Runtime
from engine.server.errors import ApiError, invalid
from engine.server.host import Job, Ticket
from engine.server.requests import ChatRequest, TextRequest

log = logging.getLogger("stride.server")


@dataclass(frozen=True)
class Started:
    n_prompt: int


@dataclass(frozen=True)
class Finished:
    reply: Reply


@dataclass(frozen=True)
class Failed:
    error: ApiError


Event = Started | Delta | Finished | Failed


def too_long(n_prompt: int, n_ctx: int, param: str) -> ApiError:
    return ApiError(
        400,
        f"the prompt is {n_prompt:,} tokens but the context holds {n_ctx:,}: it needs at least {n_prompt + 1:,} "
        "(the prompt and one token of reply); shorten it, or restart the server with a larger --ctx",
        "exceed_context_size_error",
        param,
    )


def generation_job(
    request: ChatRequest | TextRequest,
    defaults: GenerationParams,
    ticket: Ticket,
    emit: Callable[[Event], None],
) -> Job:
    """The job for one request. `defaults` carry the server's MTP settings; the request, the rest."""
    g = request.generation
    params = replace(defaults, sampler=g.sampler, max_tokens=g.max_tokens, stop=g.stop)
    param = "messages" if isinstance(request, ChatRequest) else "prompt"

    def job(runtime: Runtime) -> None:
        if ticket.stop.is_set():  # the client left while the request waited, or the model is going
            emit(Failed(ticket.error or ApiError(499, "the client closed the request", "invalid_request_error")))
            return
        try:
            if isinstance(request, ChatRequest):
                prompt = runtime.chat_prompt(request.messages, request.template_vars)
                if prompt.warning:
                    log.warning("%s", prompt.warning)
                tokens, starts_in_reasoning = prompt.tokens, prompt.starts_in_reasoning
            else:
                tokens, starts_in_reasoning = runtime.tokenize(request.prompt), None
            if len(tokens) + 1 > runtime.n_ctx:
                emit(Failed(too_long(len(tokens), runtime.n_ctx, param)))
                return
            emit(Started(len(tokens)))
            reply = runtime.generate(
                tokens,
                params,
                starts_in_reasoning=starts_in_reasoning,
                on_delta=lambda delta, _stats: emit(delta),
                should_stop=ticket.stop.is_set,
            )
        except ChatTemplateError as exc:
            emit(Failed(invalid(f"the messages cannot be rendered by the chat template: {exc}", "messages")))
            return
        except Exception as exc:  # a bug or a llama.cpp failure: the client gets a 500 line, the log the details
            log.exception("generation failed")
            emit(Failed(ApiError(500, f"generation failed: {type(exc).__name__}: {exc}", "server_error")))
            return
        emit(Failed(ticket.error) if ticket.error is not None else Finished(reply))

    return job
