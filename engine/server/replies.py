"""OpenAI response objects from the engine's replies and deltas: whole or as stream chunks."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from engine.api import Delta
from engine.generate import Reply
from engine.server.timings import timings
from engine.server.toolcalls import Tool, ToolCall, ToolCallStream, split_tool_calls
from engine.stats import ReplyStats

# Why generation stopped (stats.STOP_REASONS) in OpenAI's words.
FINISH_REASONS = {
    "eog": "stop",
    "stop_string": "stop",
    "max_tokens": "length",
    "context_full": "length",
    "cancelled": "stop",
}


def finish_reason(stats: ReplyStats, has_calls: bool) -> str:
    reason = FINISH_REASONS.get(stats.stop_reason or "", "stop")
    return "tool_calls" if has_calls and reason == "stop" else reason


def usage(stats: ReplyStats) -> dict[str, Any]:
    return {
        "prompt_tokens": stats.n_prompt,
        "completion_tokens": stats.n_predicted,
        "total_tokens": stats.n_prompt + stats.n_predicted,
        "prompt_tokens_details": {"cached_tokens": stats.n_prompt - stats.n_prompt_evaluated},
    }


def chat_completion(reply: Reply, tools: Sequence[Tool], head: dict[str, Any]) -> dict[str, Any]:
    """A whole chat reply; head holds id, created and model."""
    content, calls = split_tool_calls(reply.text, tools) if tools else (reply.text, [])
    message: dict[str, Any] = {"role": "assistant", "content": content if content or not calls else None}
    if reply.reasoning:
        message["reasoning_content"] = reply.reasoning
    if calls:
        message["tool_calls"] = [call.to_json() for call in calls]
    choice = {"index": 0, "message": message, "finish_reason": finish_reason(reply.stats, bool(calls))}
    return {
        **head,
        "object": "chat.completion",
        "choices": [choice],
        "usage": usage(reply.stats),
        "timings": timings(reply.stats),
    }


def text_completion(reply: Reply, head: dict[str, Any], return_tokens: bool) -> dict[str, Any]:
    choice: dict[str, Any] = {
        "index": 0,
        "text": reply.text,
        "logprobs": None,
        "finish_reason": finish_reason(reply.stats, False),
    }
    if return_tokens:
        choice["tokens"] = reply.token_ids
    return {
        **head,
        "object": "text_completion",
        "choices": [choice],
        "usage": usage(reply.stats),
        "timings": timings(reply.stats),
    }


class ChatDeltas:
    """A chat reply's deltas as the `delta` objects of OpenAI's stream: reasoning_content, content and,
    with tools, each tool call once the model has closed it."""

    def __init__(self, tools: Sequence[Tool]) -> None:
        self.calls = ToolCallStream(tools) if tools else None
        self.n_calls = 0

    def feed(self, delta: Delta) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for segment in delta.segments:
            if segment.kind == "reasoning":
                _add(out, "reasoning_content", segment.text)
            elif self.calls is None:
                _add(out, "content", segment.text)
            else:
                self._answer(out, self.calls.feed(segment.text))
        return out

    def finish(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        if self.calls is not None:
            self._answer(out, self.calls.flush())
        return out

    def _answer(self, out: list[dict[str, Any]], pieces: list[str | ToolCall]) -> None:
        for piece in pieces:
            if isinstance(piece, str):
                _add(out, "content", piece)
            else:
                out.append({"tool_calls": [{"index": self.n_calls, **piece.to_json()}]})
                self.n_calls += 1


def _add(out: list[dict[str, Any]], key: str, text: str) -> None:
    """Text of one kind joins the delta before it when that is of the same kind."""
    if not text:
        return
    if out and list(out[-1]) == [key]:
        out[-1][key] += text
    else:
        out.append({key: text})
