"""What the conversation store holds, as plain records, and the one error it raises."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from engine.api import StatsSnapshot

ROLES = ("user", "assistant", "system")
STATUSES = ("complete", "streaming", "stopped", "error")
MESSAGE_COLUMNS = (
    "id, conversation_id, role, content, reasoning, status, created_at, thought_seconds, stats, draft_spans"
)


class StoreError(Exception):
    """A one-line message naming the problem and what to do; safe to show the user as is."""


@dataclass
class Message:
    id: int
    conversation_id: int
    role: str  # "user" | "assistant" | "system"
    content: str  # the answer text (markdown)
    reasoning: str  # <think> text, "" if none
    status: str  # "complete" | "streaming" | "stopped" | "error"
    created_at: float  # unix time
    thought_seconds: float | None
    stats: StatsSnapshot | None  # an assistant reply's figures
    draft_spans: dict[str, list[list[int]]] | None  # {"answer"|"reasoning": [[start, end], ...]} from accepted drafts
    images: tuple[str, ...] = ()  # the pictures a user message carries: content hashes of files in the image folder


@dataclass
class Conversation:
    id: int
    title: str
    system_prompt: str
    created_at: float
    updated_at: float


@dataclass
class ConversationSummary:
    id: int
    title: str
    updated_at: float
    n_messages: int
    snippet: str  # the matched message text around the hit for search results, else ""


def check_choice(name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(allowed)}, not {value!r}")


def dumps(value: Any) -> str | None:
    """A JSON column's text; None stays NULL."""
    return None if value is None else json.dumps(value, separators=(",", ":"))
