"""Everything a client can get wrong, sent as raw HTTP: an OpenAI-style error object with a 4xx code
that names the problem, never a traceback. And the safety defaults: loopback, API key, CORS, limits."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest

from engine.server import ServerConfig, is_loopback
from tests.fixtures.serving import Served, serving

CHAT = {"messages": [{"role": "user", "content": "alpha"}], "max_tokens": 2, "temperature": 0}


@pytest.fixture(scope="module")
def served(oracle_gguf: Path) -> Iterator[Served]:
    config = ServerConfig(max_body_bytes=4096, max_tokens_limit=64, queue_limit=4)
    with serving(oracle_gguf, n_ctx=256, config=config) as s:
        yield s


def assert_error(response: httpx2.Response, status: int, kind: str, *words: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert "Traceback" not in response.text
    error: dict[str, Any] = response.json()["error"]
    assert error["type"] == kind and error["code"] == status
    for word in words:
        assert word in error["message"], error["message"]
    return error


def post(served: Served, path: str, body: Any, **kw: Any) -> httpx2.Response:
    return httpx2.post(served.base_url + path, json=body, timeout=60, **kw)


@pytest.mark.parametrize(
    ("change", "param", "words"),
    [
        ({"temperature": "hot"}, "temperature", ("must be a number",)),
        ({"temperature": 11}, "temperature", ("between 0 and 10",)),
        ({"max_tokens": "5"}, "max_tokens", ("whole number",)),
        ({"max_tokens": 0}, "max_tokens", ("1 or more",)),
        ({"max_tokens": 65}, "max_tokens", ("at most 64",)),
        ({"seed": -1}, "seed", ("0 or more",)),
        ({"stream": "yes"}, "stream", ("true or false",)),
        ({"stop": [1]}, "stop", ("list of strings",)),
        ({"messages": "hi"}, "messages", ("non-empty list",)),
        ({"messages": []}, "messages", ("non-empty list",)),
        ({"messages": [{"role": "robot", "content": "x"}]}, "messages[0].role", ("use one of",)),
        ({"messages": [{"role": "user", "content": 5}]}, "messages[0].content", ("a string or a list",)),
        ({"model": 7}, "model", ("a string",)),
        ({"n": 2}, "n", ("not supported",)),
        ({"logprobs": True}, "logprobs", ("not supported",)),
        ({"response_format": {"type": "json_object"}}, "response_format", ("not supported",)),
        ({"presence_penalty": 0.5}, "presence_penalty", ("repeat_penalty",)),
        ({"tool_choice": "required"}, "tool_choice", ("constrained decoding",)),
        ({"tool_choice": {"type": "function", "function": {"name": "f"}}}, "tool_choice", ("not supported",)),
        ({"tools": [{"type": "function"}]}, "tools[0]", ("a tool like",)),
        ({"reasoning_effort": "extreme"}, "reasoning_effort", ("low, medium, high",)),
        ({"chat_template_kwargs": [1]}, "chat_template_kwargs", ("an object",)),
        (
            {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:,"}}]}]},
            "messages[0].content[0]",
            ("not supported",),
        ),
    ],
)
def test_a_wrong_field_is_a_400_naming_it(served: Served, change: dict[str, Any], param: str, words: str) -> None:
    error = assert_error(post(served, "/chat/completions", {**CHAT, **change}), 400, "invalid_request_error", *words)
    assert error["param"] == param


@pytest.mark.parametrize(
    ("body", "words"),
    [
        (b"{not json", ("not valid JSON",)),
        (b"[1, 2]", ("JSON list", "send a JSON object")),
        (b"\xff\xfe", ("not valid JSON",)),
        (b"", ("not valid JSON",)),
    ],
)
def test_a_body_that_is_not_a_json_object_is_a_400(served: Served, body: bytes, words: tuple[str, ...]) -> None:
    response = httpx2.post(served.base_url + "/chat/completions", content=body, timeout=60)
    assert_error(response, 400, "invalid_request_error", *words)


def test_completions_refuse_what_they_cannot_do(served: Served) -> None:
    cases: list[tuple[dict[str, Any], str]] = [
        ({"prompt": ["a", "b"]}, "several prompts"),
        ({"prompt": 5}, "non-empty string"),
        ({"echo": True}, "echo"),
        ({"suffix": "x"}, "suffix"),
    ]
    for change, words in cases:
        assert_error(post(served, "/completions", {"prompt": "a", **change}), 400, "invalid_request_error", words)


def test_a_prompt_longer_than_the_context_is_a_400_naming_both(served: Served) -> None:
    long = " ".join(["alpha"] * 400)
    for path, body in [
        ("/completions", {"prompt": long}),
        ("/chat/completions", {"messages": [{"role": "user", "content": long}]}),
    ]:
        error = assert_error(post(served, path, body), 400, "exceed_context_size_error", "context holds 256", "--ctx")
        assert error["param"] in ("prompt", "messages")
    streamed = post(served, "/completions", {"prompt": long, "stream": True})  # refused before any event
    assert_error(streamed, 400, "exceed_context_size_error")


def test_too_large_a_body_is_a_413(served: Served) -> None:
    big = {**CHAT, "messages": [{"role": "user", "content": "x" * 5000}]}
    assert_error(post(served, "/chat/completions", big), 413, "invalid_request_error", "4,096 bytes")
    chunked = httpx2.post(served.base_url + "/chat/completions", content=iter([b"{" + b" " * 5000 + b"}"]), timeout=60)
    assert_error(chunked, 413, "invalid_request_error")


def test_unknown_paths_and_methods_are_openai_errors(served: Served) -> None:
    assert_error(httpx2.get(served.base_url + "/engines", timeout=60), 404, "not_found_error", "/v1/engines")
    assert_error(httpx2.get(served.base_url + "/chat/completions", timeout=60), 405, "invalid_request_error", "GET")


def test_any_model_name_is_accepted(served: Served) -> None:
    response = post(served, "/chat/completions", {**CHAT, "model": "gpt-4o"})
    assert response.status_code == 200 and response.json()["model"] == "gpt-4o"


def test_the_defaults_are_safe() -> None:
    config = ServerConfig()
    assert config.host == "127.0.0.1" and config.api_key is None and config.cors_origins == ()
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.5") and not is_loopback("example.org")


def test_cors_is_off_unless_an_origin_is_allowed(served: Served, oracle_gguf: Path) -> None:
    origin = {"Origin": "https://example.org"}
    plain = httpx2.get(served.base_url + "/models", headers=origin, timeout=60)
    assert plain.status_code == 200 and "access-control-allow-origin" not in plain.headers
    with serving(oracle_gguf, n_ctx=256, config=ServerConfig(cors_origins=("https://example.org",))) as allowed:
        preflight = httpx2.options(
            allowed.base_url + "/chat/completions",
            headers={**origin, "Access-Control-Request-Method": "POST"},
            timeout=60,
        )
        assert preflight.headers["access-control-allow-origin"] == "https://example.org"


def test_with_an_api_key_every_v1_request_needs_it(oracle_gguf: Path) -> None:
    with serving(oracle_gguf, n_ctx=256, config=ServerConfig(api_key="s3cret")) as s:
        assert_error(post(s, "/chat/completions", CHAT), 401, "authentication_error", "Authorization: Bearer")
        wrong = post(s, "/chat/completions", CHAT, headers={"Authorization": "Bearer nope"})
        assert_error(wrong, 401, "authentication_error")
        assert_error(httpx2.get(s.base_url + "/models", timeout=60), 401, "authentication_error")
        right = post(s, "/chat/completions", CHAT, headers={"Authorization": "Bearer s3cret"})
        assert right.status_code == 200 and json.loads(right.text)["choices"][0]["message"]["role"] == "assistant"
        assert httpx2.get(s.url + "/health", timeout=60).status_code == 200  # health checks need no key
