"""Step's tool-call XML into OpenAI tool_calls: typed by the schema, the same streamed or whole,
and a call that does not parse comes back as the text the model wrote."""

from __future__ import annotations

import json

import pytest

from engine.server.toolcalls import Tool, ToolCall, ToolCallStream, split_tool_calls, typed_value

WEATHER = Tool(
    "get_weather",
    {
        "type": "object",
        "properties": {
            "city": {"type": "string"},
            "days": {"type": "integer"},
            "metric": {"type": "boolean"},
            "hours": {"type": "array", "items": {"type": "number"}},
            "where": {"type": "object"},
            "note": {"type": ["string", "null"]},
        },
    },
)
CALL = (
    "<tool_call>\n<function=get_weather>\n<parameter=city>\n42\n</parameter>\n<parameter=days>\n3\n</parameter>\n"
    "<parameter=metric>\ntrue\n</parameter>\n<parameter=hours>\n[6, 12.5]\n</parameter>\n"
    '<parameter=where>\n{"lat": 48.9}\n</parameter>\n<parameter=note>\nline one\nline two\n</parameter>\n'
    "</function>\n</tool_call>"
)
ARGUMENTS = {
    "city": "42",
    "days": 3,
    "metric": True,
    "hours": [6, 12.5],
    "where": {"lat": 48.9},
    "note": "line one\nline two",
}


def test_values_take_the_type_their_schema_names() -> None:
    text, calls = split_tool_calls("Let me look.\n" + CALL, [WEATHER])
    assert text == "Let me look.\n"
    assert [c.name for c in calls] == ["get_weather"]
    assert json.loads(calls[0].arguments) == ARGUMENTS
    assert calls[0].id.startswith("call_")


@pytest.mark.parametrize(
    ("text", "schema", "value"),
    [
        ("7", {"type": "string"}, "7"),  # a string stays text, whatever it looks like
        ("7", {"type": "integer"}, 7),
        ("7.5", {"type": "integer"}, "7.5"),  # not an integer: kept as written
        ("7.5", {"type": "number"}, 7.5),
        ("yes", {"type": "boolean"}, "yes"),
        ("null", {"anyOf": [{"type": "integer"}, {"type": "null"}]}, None),
        ("[1]", {}, [1]),  # no schema: JSON when it reads as JSON
        ("plain words", {}, "plain words"),
    ],
)
def test_typed_value(text: str, schema: dict[str, object], value: object) -> None:
    assert typed_value(text, schema) == value


@pytest.mark.parametrize("size", [1, 2, 3, 7, 1000])
def test_streamed_in_any_pieces_gives_what_the_whole_text_gives(size: int) -> None:
    whole = "Sure.<tool_call" + CALL[len("<tool_call") :] + "\n" + CALL.replace("42", "Oslo") + " done"
    stream = ToolCallStream([WEATHER])
    pieces: list[str | ToolCall] = []
    for at in range(0, len(whole), size):
        pieces += stream.feed(whole[at : at + size])
    pieces += stream.flush()
    text = "".join(p for p in pieces if isinstance(p, str))
    calls = [p for p in pieces if isinstance(p, ToolCall)]
    assert text == "Sure.\n done"
    assert [json.loads(c.arguments)["city"] for c in calls] == ["42", "Oslo"]
    # Text before a call comes out before the call does, in the order written.
    first_call = next(i for i, p in enumerate(pieces) if isinstance(p, ToolCall))
    assert "".join(p for p in pieces[:first_call] if isinstance(p, str)) == "Sure."


@pytest.mark.parametrize(
    "text",
    [
        "<tool_call>\n<function=send_mail>\n<parameter=to>\nx\n</parameter>\n</function>\n</tool_call>",  # not offered
        "<tool_call>\nget_weather(city='Paris')\n</tool_call>",  # not the XML form
        "<tool_call>\n<function=get_weather>\n<parameter=city>\nParis\n</parameter>\nstray\n</function>\n</tool_call>",
        "<tool_call>\n<function=get_weather>\n<parameter=city>\nPar",  # the reply ended mid-call
    ],
)
def test_a_malformed_call_comes_back_as_text(text: str) -> None:
    assert split_tool_calls(text, [WEATHER]) == (text, [])


def test_a_call_the_model_did_not_close_is_kept_when_it_parses() -> None:
    text, calls = split_tool_calls(CALL.removesuffix("</tool_call>"), [WEATHER])
    assert text == "" and json.loads(calls[0].arguments) == ARGUMENTS


def test_text_that_only_looks_like_a_tag_start_is_released() -> None:
    stream = ToolCallStream([WEATHER])
    assert stream.feed("a <tool") == ["a "]
    assert stream.feed("box> b") == ["<toolbox> b"]
    assert stream.flush() == []
