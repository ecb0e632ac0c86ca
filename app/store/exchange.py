"""Conversations in and out of files: Markdown and JSON export, and checking a JSON export
before it is imported (all or nothing, with a message that names the bad field)."""

from __future__ import annotations

import base64
import binascii
import json
import math
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from app.store.images import PNG_SIGNATURE
from app.store.records import ROLES, STATUSES, Conversation, Message, StoreError
from engine.api import StatsSnapshot

EXPORT_FORMAT = "stride-conversation"
EXPORT_VERSION = 2  # 2: messages carry their pictures
_STATUS_NOTES = {
    "streaming": "_(the reply was still being written)_",
    "stopped": "_(the reply was stopped before it finished)_",
    "error": "_(the reply ended with an error)_",
}


def to_markdown(conversation: Conversation, messages: Sequence[Message], images_folder: str = "") -> str:
    title = " ".join(conversation.title.split()) or "Untitled chat"
    parts = [f"# {title}"]
    if conversation.system_prompt:
        quoted = "\n".join(f"> {line}".rstrip() for line in conversation.system_prompt.splitlines())
        parts.append(f"**System prompt**\n\n{quoted}")
    for message in messages:
        parts.append(f"## {message.role.capitalize()}")
        if message.reasoning:
            summary = (
                "Reasoning"
                if message.thought_seconds is None
                else f"Thought for {_format_seconds(message.thought_seconds)} s"
            )
            # Blank lines around the text let viewers render markdown inside the HTML block.
            parts.append(f"<details><summary>{summary}</summary>\n\n{message.reasoning.strip()}\n\n</details>")
        if message.images:
            folder = images_folder.replace(" ", "%20")  # a space would end the link
            parts.append(" ".join(f"![Picture {i}]({folder}/{d}.png)" for i, d in enumerate(message.images, 1)))
        if message.content:
            parts.append(message.content.strip())
        if message.status in _STATUS_NOTES:
            parts.append(_STATUS_NOTES[message.status])
    return "\n\n".join(parts) + "\n"


def to_json(
    conversation: Conversation, messages: Sequence[Message], read_image: Callable[[str], bytes]
) -> dict[str, Any]:
    return {
        "format": EXPORT_FORMAT,
        "version": EXPORT_VERSION,
        "title": conversation.title,
        "system_prompt": conversation.system_prompt,
        "created_at": conversation.created_at,
        "messages": [
            {
                "role": m.role,
                "content": m.content,
                "reasoning": m.reasoning,
                "created_at": m.created_at,
                "status": m.status,
                "thought_seconds": m.thought_seconds,
                "stats": None if m.stats is None else m.stats.to_json(),
                "draft_spans": m.draft_spans,
                "images": [
                    {"media_type": "image/png", "base64": base64.b64encode(read_image(d)).decode("ascii")}
                    for d in m.images
                ],
            }
            for m in messages
        ],
    }


def _format_seconds(seconds: float) -> str:
    return f"{seconds:.1f}" if seconds < 10 else f"{seconds:.0f}"


class _BadExport(Exception):
    pass


def validate_export(data: Any) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Check an export's shape and types; returns the conversation fields and the messages, defaults filled in."""
    try:
        if not isinstance(data, Mapping):
            raise _BadExport(f"expected a JSON object, got {type(data).__name__}")
        if data.get("format") != EXPORT_FORMAT:
            raise _BadExport(f'"format" must be "{EXPORT_FORMAT}", got {data.get("format")!r}')
        version = data.get("version")
        if type(version) is not int:
            raise _BadExport(f'"version" must be an integer, got {version!r}')
        if version > EXPORT_VERSION:
            raise _BadExport(f"version {version} is newer than this Stride reads ({EXPORT_VERSION}); update Stride")
        if version < 1:
            raise _BadExport(f"unknown version {version}")
        conversation = {
            "title": _text(data, "title", ""),
            "system_prompt": _text(data, "system_prompt", "", default=""),
            "created_at": _time_field(data, "created_at", ""),
        }
        raw_messages = data.get("messages")
        if not isinstance(raw_messages, list):
            raise _BadExport(f'"messages" must be a list, got {type(raw_messages).__name__}')
        return conversation, [_validate_message(raw, f"messages[{i}].") for i, raw in enumerate(raw_messages)]
    except _BadExport as exc:
        raise StoreError(f"this file is not a Stride conversation export: {exc}") from None


def _text(data: Mapping[str, Any], key: str, where: str, default: str | None = None) -> str:
    value = data.get(key, default)
    if value is None:
        raise _BadExport(f'"{where}{key}" is missing')
    if not isinstance(value, str):
        raise _BadExport(f'"{where}{key}" must be text, got {type(value).__name__}')
    return value


def _time_field(data: Mapping[str, Any], key: str, where: str) -> float:
    value = data.get(key, time.time())
    if type(value) not in (int, float) or not math.isfinite(value) or value < 0:
        raise _BadExport(f'"{where}{key}" must be a unix time, got {value!r}')
    return float(value)


def _validate_message(raw: Any, where: str) -> dict[str, Any]:
    if not isinstance(raw, Mapping):
        raise _BadExport(f'"{where[:-1]}" must be an object, got {type(raw).__name__}')
    role = _text(raw, "role", where)
    if role not in ROLES:
        raise _BadExport(f'"{where}role" must be one of {", ".join(ROLES)}, got {role!r}')
    status = _text(raw, "status", where, default="complete")
    if status not in STATUSES:
        raise _BadExport(f'"{where}status" must be one of {", ".join(STATUSES)}, got {status!r}')
    thought = raw.get("thought_seconds")
    if thought is not None and (type(thought) not in (int, float) or not math.isfinite(thought) or thought < 0):
        raise _BadExport(f'"{where}thought_seconds" must be a number of seconds or null, got {thought!r}')
    stats = raw.get("stats")
    if stats is not None:
        if not isinstance(stats, Mapping):
            raise _BadExport(f'"{where}stats" must be an object or null, got {type(stats).__name__}')
        try:
            json.dumps(stats)
        except (TypeError, ValueError) as exc:
            raise _BadExport(f'"{where}stats" is not plain JSON ({exc})') from None
    return {
        "role": role,
        "content": _text(raw, "content", where),
        "reasoning": _text(raw, "reasoning", where, default=""),
        # Nothing streams into an imported message: a reply exported mid-stream arrives as stopped.
        "status": "stopped" if status == "streaming" else status,
        "created_at": _time_field(raw, "created_at", where),
        "thought_seconds": None if thought is None else float(thought),
        # Figures from any version read: missing keys take their defaults, unknown ones are dropped.
        "stats": None if stats is None else StatsSnapshot.from_json(stats).to_json(),
        "draft_spans": _validate_spans(raw.get("draft_spans"), where),
        "images": _validate_images(raw.get("images"), where),
    }


def _validate_images(images: Any, where: str) -> list[bytes]:
    """Embedded pictures: a list of {"media_type": "image/png", "base64": ...}; returns the PNG files."""
    if images is None:
        return []
    if not isinstance(images, list):
        raise _BadExport(f'"{where}images" must be a list, got {type(images).__name__}')
    result = []
    for i, item in enumerate(images):
        data = item.get("base64") if isinstance(item, Mapping) else None
        if not isinstance(data, str):
            raise _BadExport(f'"{where}images[{i}]" must be an object with the picture as "base64" text')
        try:
            png = base64.b64decode(data, validate=True)
        except (binascii.Error, ValueError):
            raise _BadExport(f'"{where}images[{i}].base64" is not valid base64') from None
        if not png.startswith(PNG_SIGNATURE):
            raise _BadExport(f'"{where}images[{i}]" is not a PNG picture')
        result.append(png)
    return result


def _validate_spans(spans: Any, where: str) -> dict[str, list[list[int]]] | None:
    if spans is None:
        return None
    if not isinstance(spans, Mapping):
        raise _BadExport(f'"{where}draft_spans" must be an object or null, got {type(spans).__name__}')
    result: dict[str, list[list[int]]] = {}
    for part, ranges in spans.items():
        valid = isinstance(ranges, list) and all(
            isinstance(r, list) and len(r) == 2 and all(type(x) is int for x in r) and 0 <= r[0] <= r[1] for r in ranges
        )
        if not isinstance(part, str) or not valid:
            raise _BadExport(f'"{where}draft_spans" must map names to lists of [start, end] character ranges')
        result[part] = [list(r) for r in ranges]
    return result
