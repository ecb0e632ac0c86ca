"""Request bodies checked and turned into plain data; anything wrong is a 400 that names the field.

Fields OpenAI clients send that change nothing here (`user`, `store`, `parallel_tool_calls` ...) are
ignored, as llama-server ignores them; a known field of the wrong type or out of range is refused.
Features Stride cannot honour yet (`n` > 1, `logprobs`, `response_format`, forced tool choice,
images) are refused rather than silently dropped, so a client never gets something else than it
asked for.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from engine.api import SamplerParams
from engine.options import MAX_SEED
from engine.server.errors import ApiError, invalid, unsupported
from engine.server.toolcalls import Tool

# llama-server's sampling defaults, for fields a request leaves out.
DEFAULT_SAMPLING = SamplerParams(temperature=0.8, top_k=40, top_p=0.95, min_p=0.05, repeat_penalty=1.0)
REASONING_EFFORTS = ("low", "medium", "high")  # Step 3.7 Flash's template reads these
MAX_STOP_STRINGS = 16
ROLES = ("system", "developer", "user", "assistant", "tool")


@dataclass(frozen=True)
class Generation:
    """What every request sets: sampling, length, stops, streaming."""

    sampler: SamplerParams
    max_tokens: int
    stop: tuple[str, ...]
    stream: bool
    include_usage: bool
    model: str | None  # as the client named it: echoed back, whatever it is


@dataclass(frozen=True)
class ChatRequest:
    generation: Generation
    messages: list[dict[str, Any]]  # as the chat template reads them
    template_vars: dict[str, Any]
    tools: tuple[Tool, ...] = ()  # tools whose calls are parsed out of the answer (none with tool_choice none)


@dataclass(frozen=True)
class TextRequest:
    generation: Generation
    prompt: str
    return_tokens: bool = False  # llama-server's field: the reply's token ids in the choice


def parse_json_object(raw: bytes) -> dict[str, Any]:
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise invalid(f"the request body is not valid JSON ({exc}); send a JSON object") from None
    if not isinstance(body, dict):
        raise invalid(f"the request body is a JSON {type(body).__name__}; send a JSON object")
    return body


# Field readers ------------------------------------------------------------------------------


def _wrong(name: str, expected: str, value: Any) -> ApiError:
    return invalid(f"'{name}' must be {expected}, not {json.dumps(value)[:80]}", name)


def _bool(body: Mapping[str, Any], name: str, default: bool) -> bool:
    value = body.get(name)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise _wrong(name, "true or false", value)
    return value


def _int(body: Mapping[str, Any], name: str, low: int, high: int | None = None) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool):
        raise _wrong(name, "a whole number", value)
    if value < low or (high is not None and value > high):
        raise invalid(f"'{name}' is {value}; it must be {low} or more" + (f" and at most {high}" if high else ""), name)
    return value


def _float(body: Mapping[str, Any], name: str, low: float, high: float, default: float) -> float:
    value = body.get(name)
    if value is None:
        return default
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
        raise _wrong(name, "a number", value)
    if not low <= value <= high:
        raise invalid(f"'{name}' is {value}; it must be between {low:g} and {high:g}", name)
    return float(value)


def _stops(body: Mapping[str, Any]) -> tuple[str, ...]:
    value = body.get("stop")
    if value is None:
        return ()
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not all(isinstance(s, str) for s in items):
        raise _wrong("stop", "a string or a list of strings", value)
    if len(items) > MAX_STOP_STRINGS:
        raise invalid(f"'stop' has {len(items)} strings; send at most {MAX_STOP_STRINGS}", "stop")
    return tuple(s for s in items if s)


def _generation(body: Mapping[str, Any], max_tokens_limit: int) -> Generation:
    model = body.get("model")
    if model is not None and not isinstance(model, str):
        raise _wrong("model", "a string", model)
    n = _int(body, "n", 1)
    if n is not None and n != 1:
        raise unsupported("'n' above 1", "n", "send n = 1 and repeat the request for more choices")
    if body.get("logprobs") not in (None, False, 0) or body.get("top_logprobs") is not None:
        raise unsupported("'logprobs'", "logprobs", "leave logprobs and top_logprobs out")
    response_format = body.get("response_format")
    if response_format is not None and response_format != {"type": "text"}:
        raise unsupported(
            "'response_format' (JSON mode, structured output)", "response_format", "leave it out or send type text"
        )
    for penalty in ("presence_penalty", "frequency_penalty"):
        if _float(body, penalty, -2.0, 2.0, 0.0) != 0.0:
            raise unsupported(f"'{penalty}'", penalty, "use 'repeat_penalty' (1 = off)")
    requested = _int(body, "max_completion_tokens", 1) or _int(body, "max_tokens", 1)
    if requested is not None and requested > max_tokens_limit:
        raise invalid(f"'max_tokens' is {requested:,}; this server allows at most {max_tokens_limit:,}", "max_tokens")
    seed = _int(body, "seed", 0, MAX_SEED)
    top_k = _int(body, "top_k", 0)
    sampler = SamplerParams(
        temperature=_float(body, "temperature", 0.0, 10.0, DEFAULT_SAMPLING.temperature),
        top_k=DEFAULT_SAMPLING.top_k if top_k is None else top_k,
        top_p=_float(body, "top_p", 0.0, 1.0, DEFAULT_SAMPLING.top_p),
        min_p=_float(body, "min_p", 0.0, 1.0, DEFAULT_SAMPLING.min_p),
        repeat_penalty=_float(body, "repeat_penalty", 0.0, 10.0, DEFAULT_SAMPLING.repeat_penalty),
        seed=DEFAULT_SAMPLING.seed if seed is None else seed,
    )
    stream = _bool(body, "stream", False)
    options = body.get("stream_options")
    if options is not None and not isinstance(options, dict):
        raise _wrong("stream_options", "an object", options)
    include_usage = _bool(options or {}, "include_usage", False)
    return Generation(sampler, requested or max_tokens_limit, _stops(body), stream, include_usage, model)


# Chat ---------------------------------------------------------------------------------------


def _content_text(content: Any, where: str) -> str:
    """A message's content as the template gets it: text parts joined; images refused for now."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise _wrong(where, "a string or a list of content parts", content)
    texts = []
    for i, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text" and isinstance(part.get("text"), str):
            texts.append(part["text"])
        elif kind in ("image_url", "input_audio", "file"):
            raise unsupported(f"'{kind}' content", f"{where}[{i}]", "send text parts only")
        else:
            raise _wrong(f"{where}[{i}]", 'a content part like {"type": "text", "text": "..."}', part)
    return "".join(texts)


def _tool_call_in_message(call: Any, where: str) -> dict[str, Any]:
    function = call.get("function") if isinstance(call, dict) else None
    if not isinstance(function, dict) or not isinstance(function.get("name"), str):
        raise _wrong(where, 'a call like {"type": "function", "function": {"name": ..., "arguments": ...}}', call)
    arguments = function.get("arguments", "{}")
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments or "{}")
        except ValueError:
            raise invalid(f"'{where}.function.arguments' is not valid JSON", f"{where}.function.arguments") from None
    if not isinstance(arguments, dict):
        raise _wrong(f"{where}.function.arguments", "a JSON object", arguments)
    # Templates iterate the arguments (`arguments|items`), so they get the object, not OpenAI's JSON text.
    return {
        "id": call.get("id"),
        "type": "function",
        "function": {"name": function["name"], "arguments": arguments},
    }


def _message(message: Any, i: int) -> dict[str, Any]:
    where = f"messages[{i}]"
    if not isinstance(message, dict):
        raise _wrong(where, "an object with 'role' and 'content'", message)
    role = message.get("role")
    if role not in ROLES:
        raise invalid(f"'{where}.role' is {json.dumps(role)}; use one of {', '.join(ROLES)}", f"{where}.role")
    out: dict[str, Any] = {
        "role": "system" if role == "developer" else role,
        "content": _content_text(message.get("content"), f"{where}.content"),
    }
    reasoning = message.get("reasoning_content")
    if reasoning is not None:
        if not isinstance(reasoning, str):
            raise _wrong(f"{where}.reasoning_content", "a string", reasoning)
        out["reasoning_content"] = reasoning
    calls = message.get("tool_calls")
    if calls is not None:
        if role != "assistant" or not isinstance(calls, list):
            raise _wrong(f"{where}.tool_calls", "a list, on an assistant message", calls)
        out["tool_calls"] = [_tool_call_in_message(c, f"{where}.tool_calls[{j}]") for j, c in enumerate(calls)]
    for key in ("name", "tool_call_id"):
        value = message.get(key)
        if value is not None:
            if not isinstance(value, str):
                raise _wrong(f"{where}.{key}", "a string", value)
            out[key] = value
    return out


def _tools(body: Mapping[str, Any]) -> tuple[list[dict[str, Any]], tuple[Tool, ...]]:
    value = body.get("tools")
    if value is None:
        return [], ()
    if not isinstance(value, list):
        raise _wrong("tools", "a list of tools", value)
    rendered, tools = [], []
    for i, tool in enumerate(value):
        function = tool.get("function") if isinstance(tool, dict) and tool.get("type") == "function" else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str) or not function["name"]:
            raise _wrong(f"tools[{i}]", 'a tool like {"type": "function", "function": {"name": ...}}', tool)
        parameters = function.get("parameters", {})
        if not isinstance(parameters, dict):
            raise _wrong(f"tools[{i}].function.parameters", "a JSON Schema object", parameters)
        rendered.append(tool)
        tools.append(Tool(function["name"], parameters))
    return rendered, tuple(tools)


def _tool_choice(body: Mapping[str, Any]) -> Literal["auto", "none"]:
    choice = body.get("tool_choice")
    if choice is None or choice == "auto":
        return "auto"
    if choice == "none":
        return "none"
    if choice == "required" or isinstance(choice, dict):
        raise unsupported(
            "forcing a tool call ('required' or a named function)",
            "tool_choice",
            "send tool_choice auto or none (forced calls need constrained decoding)",
        )
    raise _wrong("tool_choice", '"auto", "none", "required" or a named function', choice)


def parse_chat(body: Mapping[str, Any], max_tokens_limit: int) -> ChatRequest:
    generation = _generation(body, max_tokens_limit)
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise _wrong("messages", "a non-empty list of messages", messages)
    parsed = [_message(m, i) for i, m in enumerate(messages)]
    variables: dict[str, Any] = {}
    kwargs = body.get("chat_template_kwargs")
    if kwargs is not None:
        if not isinstance(kwargs, dict):
            raise _wrong("chat_template_kwargs", "an object of template variables", kwargs)
        variables.update(kwargs)
    effort = body.get("reasoning_effort")
    if effort is not None:
        if effort not in REASONING_EFFORTS:
            raise invalid(
                f"'reasoning_effort' is {json.dumps(effort)}; use one of {', '.join(REASONING_EFFORTS)}",
                "reasoning_effort",
            )
        variables["reasoning_effort"] = effort
    rendered, tools = _tools(body)
    choice = _tool_choice(body)
    if rendered and choice == "auto":
        variables["tools"] = rendered
    return ChatRequest(generation, parsed, variables, tools if choice == "auto" else ())


# Completions --------------------------------------------------------------------------------


def parse_completion(body: Mapping[str, Any], max_tokens_limit: int) -> TextRequest:
    generation = _generation(body, max_tokens_limit)
    prompt = body.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
        prompt = prompt[0]
    if isinstance(prompt, list) and all(isinstance(p, str) for p in prompt):
        raise unsupported("several prompts in one request", "prompt", "send one prompt per request")
    if not isinstance(prompt, str) or not prompt:
        raise _wrong("prompt", "a non-empty string", prompt)
    if _bool(body, "echo", False):
        raise unsupported("'echo'", "echo", "leave echo out; the reply is the continuation only")
    if body.get("suffix"):
        raise unsupported("'suffix' (fill in the middle)", "suffix", "leave suffix out")
    return TextRequest(generation, prompt, _bool(body, "return_tokens", False))
