"""Step's tool calls (Qwen3-Coder-style XML) into OpenAI `tool_calls`, whole or streamed.

The model writes

    <tool_call>
    <function=get_weather>
    <parameter=city>
    Paris
    </parameter>
    </function>
    </tool_call>

and clients expect `{"id", "type": "function", "function": {"name", "arguments": "<JSON>"}}`.
Parameter values are text; each is typed by the tool's JSON schema (a string stays text, an
integer becomes a number, an object is parsed as JSON ...). A call that does not parse, or that
names a function the request did not offer, comes back as the text the model wrote.
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

CALL_OPEN = "<tool_call>"
CALL_CLOSE = "</tool_call>"
_FUNCTION = re.compile(r"\s*<function=([^>\n]+)>(.*?)</function>\s*\Z", re.DOTALL)
_PARAMETER = re.compile(r"<parameter=([^>\n]+)>(.*?)</parameter>", re.DOTALL)


@dataclass(frozen=True)
class ToolCall:
    id: str
    name: str
    arguments: str  # a JSON object, as OpenAI sends it

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "type": "function", "function": {"name": self.name, "arguments": self.arguments}}


@dataclass(frozen=True)
class Tool:
    """What the request says about one function: its name and its parameters' JSON schema."""

    name: str
    parameters: Mapping[str, Any]

    def property_schema(self, key: str) -> Mapping[str, Any]:
        properties = self.parameters.get("properties")
        schema = properties.get(key) if isinstance(properties, Mapping) else None
        return schema if isinstance(schema, Mapping) else {}


def new_call_id() -> str:
    return "call_" + secrets.token_hex(12)


def _schema_types(schema: Mapping[str, Any]) -> list[str]:
    kind = schema.get("type")
    if isinstance(kind, str):
        return [kind]
    if isinstance(kind, list):
        return [k for k in kind if isinstance(k, str)]
    for union in ("anyOf", "oneOf"):
        options = schema.get(union)
        if isinstance(options, list):
            return [t for option in options if isinstance(option, Mapping) for t in _schema_types(option)]
    return []


_JSON_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "boolean": (bool,),
    "object": (dict,),
    "array": (list,),
    "null": (type(None),),
}


def _fits(value: Any, kind: str) -> bool:
    if isinstance(value, bool):  # a bool is an int in Python, never in JSON Schema
        return kind == "boolean"
    if kind == "integer":
        return isinstance(value, int)
    if kind == "number":
        return isinstance(value, (int, float))
    types = _JSON_TYPES.get(kind)
    return types is not None and isinstance(value, types)


def typed_value(text: str, schema: Mapping[str, Any]) -> Any:
    """A parameter's text as the type its schema asks for; text when the schema says string or nothing fits.

    Without a schema type, a value that reads as JSON (a number, true, an object ...) is taken as such,
    as llama.cpp's own Qwen3-Coder parser does.
    """
    kinds = _schema_types(schema)
    if "string" in kinds and len(kinds) == 1:
        return text
    try:
        value = json.loads(text)
    except ValueError:
        return text
    if not kinds or any(_fits(value, kind) for kind in kinds):
        return value
    return text


def _strip_value(text: str) -> str:
    # The template writes one newline after the opening tag and one before the closing tag.
    if text.startswith("\n"):
        text = text[1:]
    if text.endswith("\n"):
        text = text[:-1]
    return text


def parse_call(block: str, tools: Mapping[str, Tool]) -> ToolCall | None:
    """One call's inside (between <tool_call> and </tool_call>), or None when it is malformed."""
    match = _FUNCTION.match(block)
    if match is None:
        return None
    name, body = match.group(1).strip(), match.group(2)
    tool = tools.get(name)
    if tool is None:
        return None
    arguments: dict[str, Any] = {}
    for param in _PARAMETER.finditer(body):
        key = param.group(1).strip()
        arguments[key] = typed_value(_strip_value(param.group(2)), tool.property_schema(key))
    # Anything but parameters and whitespace inside the function block is not a call we understand.
    if _PARAMETER.sub("", body).strip():
        return None
    return ToolCall(new_call_id(), name, json.dumps(arguments, ensure_ascii=False))


def _partial_tag(text: str, tag: str) -> int:
    """Length of the longest end of text that could be the start of tag."""
    for length in range(min(len(tag) - 1, len(text)), 0, -1):
        if text.endswith(tag[:length]):
            return length
    return 0


class ToolCallStream:
    """Answer text in, pieces out: text that is plain content, and tool calls once each is complete.

    A call is held back until its closing tag (a half-written call cannot be typed or checked), then
    comes out whole; at the end, an unfinished or malformed call comes out as the text it was.
    """

    def __init__(self, tools: Sequence[Tool]) -> None:
        self.tools = {tool.name: tool for tool in tools}
        self.calls: list[ToolCall] = []
        self._buffer = ""
        self._in_call = False

    def feed(self, text: str) -> list[str | ToolCall]:
        out: list[str | ToolCall] = []
        data, self._buffer = self._buffer + text, ""
        while data:
            if not self._in_call:
                at = data.find(CALL_OPEN)
                if at < 0:
                    keep = _partial_tag(data, CALL_OPEN)
                    _add_text(out, data[: len(data) - keep])
                    self._buffer = data[len(data) - keep :]
                    return out
                _add_text(out, data[:at])
                data = data[at:]
                self._in_call = True
            end = data.find(CALL_CLOSE)
            if end < 0:
                self._buffer = data
                return out
            block = data[len(CALL_OPEN) : end]
            call = parse_call(block, self.tools)
            if call is None:
                _add_text(out, data[: end + len(CALL_CLOSE)])
            else:
                self.calls.append(call)
                out.append(call)
            data = data[end + len(CALL_CLOSE) :]
            self._in_call = False
        return out

    def flush(self) -> list[str | ToolCall]:
        """The end of the reply: a call the model did not close is kept if it parses, else it is text."""
        held, self._buffer = self._buffer, ""
        if not held:
            return []
        if self._in_call:
            self._in_call = False
            call = parse_call(held[len(CALL_OPEN) :], self.tools)
            if call is not None:
                self.calls.append(call)
                return [call]
        return [held]


def _add_text(out: list[str | ToolCall], text: str) -> None:
    if not text:
        return
    if out and isinstance(out[-1], str):
        out[-1] += text
    else:
        out.append(text)


def split_tool_calls(text: str, tools: Sequence[Tool]) -> tuple[str, list[ToolCall]]:
    """A whole answer: its plain text and its tool calls."""
    stream = ToolCallStream(tools)
    pieces = [*stream.feed(text), *stream.flush()]
    return "".join(p for p in pieces if isinstance(p, str)), [p for p in pieces if isinstance(p, ToolCall)]
