"""The server as agents and editors use it: the official `openai` client against a server on a free port.

Greedy replies through the server equal stride-cli's, token for token, at every MTP depth; tool
calls make the round trip; reasoning comes apart from the answer; a client that hangs up stops
generation.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import openai
import pytest

from engine import cli
from engine.api import AUTO
from engine.chat import render_chat
from engine.generate import Reply
from engine.server import RequestRecord, ServerConfig
from engine.server.errors import unavailable
from engine.server.requests import parse_chat
from tests.fixtures import tool_model
from tests.fixtures.serving import Served, serving
from tests.sdist import read_sdist_member

PROMPT = "alpha bravo charlie"
MAX_TOKENS = 48


@pytest.fixture(scope="module")
def tool_gguf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tool_model.build_tool_model(tmp_path_factory.mktemp("tools") / "tool-caller.gguf")


@pytest.fixture(scope="module")
def tool_server(tool_gguf: Path) -> Iterator[Served]:
    with serving(tool_gguf, depth=3) as served:
        yield served


def client_for(served: Served, **kw: Any) -> openai.OpenAI:
    return openai.OpenAI(base_url=served.base_url, api_key="unused", max_retries=0, **kw)


def cli_json(capsys: pytest.CaptureFixture[str], model: Path, depth: int | str, *extra: str) -> dict[str, Any]:
    args = ["generate", "--model", str(model), "--prompt", PROMPT, "--max-tokens", str(MAX_TOKENS)]
    assert cli.main([*args, "--mtp-depth", str(depth), "--threads", "1", "--json", *extra]) == 0
    data: dict[str, Any] = json.loads(capsys.readouterr().out)
    return data


@pytest.mark.parametrize("depth", [0, 1, 2, 3, AUTO])
def test_greedy_replies_equal_the_cli_token_for_token(
    live_gguf: Path, capsys: pytest.CaptureFixture[str], depth: int | str
) -> None:
    raw = cli_json(capsys, live_gguf, depth)
    chat = cli_json(capsys, live_gguf, depth, "--chat")
    with serving(live_gguf, depth=depth) as served:
        client = client_for(served)
        completion = client.completions.create(
            model="whatever-the-agent-calls-it",
            prompt=PROMPT,
            max_tokens=MAX_TOKENS,
            temperature=0,
            extra_body={"return_tokens": True},
        )
        choice = completion.model_dump()["choices"][0]
        assert choice["tokens"] == raw["token_ids"]
        assert choice["text"] == raw["text"]
        assert completion.usage is not None and completion.usage.completion_tokens == raw["n_predicted"]
        assert completion.model == "whatever-the-agent-calls-it"

        streamed = client.completions.create(
            model="m", prompt=PROMPT, max_tokens=MAX_TOKENS, temperature=0, stream=True
        )
        assert "".join(chunk.choices[0].text for chunk in streamed if chunk.choices) == raw["text"]

        messages: list[Any] = [{"role": "user", "content": PROMPT}]
        reply = client.chat.completions.create(model="m", messages=messages, max_tokens=MAX_TOKENS, temperature=0)
        message = reply.choices[0].message
        assert (message.content or "") == chat["text"]
        assert (message.model_extra or {}).get("reasoning_content", "") == chat["reasoning"]
        assert reply.usage is not None and reply.usage.completion_tokens == len(chat["token_ids"])

        parts = {"content": "", "reasoning_content": ""}
        for chunk in client.chat.completions.create(
            model="m", messages=messages, max_tokens=MAX_TOKENS, temperature=0, stream=True
        ):
            for choice_delta in chunk.choices:
                delta = choice_delta.delta.model_dump()
                for key in parts:
                    parts[key] += delta.get(key) or ""
        assert parts == {"content": chat["text"], "reasoning_content": chat["reasoning"]}


def test_timings_name_the_figures_as_llama_server_does(live_gguf: Path) -> None:
    with serving(live_gguf, depth=3) as served:
        body = {"prompt": PROMPT, "max_tokens": 32, "temperature": 0}
        data = httpx2.post(served.base_url + "/completions", json=body, timeout=60).json()
        again = httpx2.post(served.base_url + "/completions", json=body, timeout=60).json()
    timings = data["timings"]
    llama_server_names = {
        "cache_n",
        "prompt_n",
        "prompt_ms",
        "prompt_per_token_ms",
        "prompt_per_second",
        "predicted_n",
        "predicted_ms",
        "predicted_per_token_ms",
        "predicted_per_second",
        "draft_n",
        "draft_n_accepted",
    }
    assert llama_server_names <= timings.keys()
    assert timings["predicted_n"] == data["usage"]["completion_tokens"] == 32
    assert timings["predicted_per_second"] > 0 and timings["prompt_n"] == data["usage"]["prompt_tokens"]
    assert timings["draft_n"] == sum(timings["draft_n_per_pos"]) > 0
    assert timings["draft_n_accepted"] == sum(timings["draft_n_accepted_per_pos"])
    assert len(timings["draft_n_per_pos"]) == 3
    # The same prompt again reuses the KV cache, and says so.
    assert again["timings"]["cache_n"] > 0
    assert again["usage"]["prompt_tokens_details"]["cached_tokens"] == again["timings"]["cache_n"]


def test_models_and_health(tool_server: Served) -> None:
    models = client_for(tool_server).models.list()
    assert [m.id for m in models.data] == ["tool-caller.gguf"]
    assert httpx2.get(tool_server.url + "/health").json() == {"status": "ok"}


def test_a_tool_call_round_trip(tool_server: Served) -> None:
    client = client_for(tool_server)
    messages: list[Any] = [{"role": "user", "content": "What is the weather in Paris?"}]
    first = client.chat.completions.create(model="m", messages=messages, tools=[tool_model.WEATHER_TOOL], temperature=0)
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert (choice.message.model_extra or {})["reasoning_content"] == tool_model.REASONING
    calls = choice.message.tool_calls or []
    assert len(calls) == 1 and calls[0].type == "function"
    assert calls[0].function.name == tool_model.CALL_NAME
    assert json.loads(calls[0].function.arguments) == tool_model.CALL_ARGUMENTS  # days typed as an integer
    assert not choice.message.content

    # The tool's answer goes back; the model sees it in its own template.
    messages += [
        choice.message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": calls[0].id, "content": "sunny, 21 C"},
    ]
    second = client.chat.completions.create(
        model="m", messages=messages, tools=[tool_model.WEATHER_TOOL], temperature=0
    )
    assert second.choices[0].finish_reason == "tool_calls"
    assert second.usage is not None and first.usage is not None
    assert second.usage.prompt_tokens > first.usage.prompt_tokens


def test_the_step_template_sees_the_call_and_the_tool_result() -> None:
    template = read_sdist_member(tool_model.STEP_TEMPLATE)
    call = {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}
    body = {
        "messages": [
            {"role": "user", "content": "weather?"},
            {"role": "assistant", "content": None, "tool_calls": [call]},
            {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
        ],
        "tools": [tool_model.WEATHER_TOOL],
    }
    request = parse_chat(body, 100)
    text = render_chat(template, request.messages, variables=request.template_vars)
    assert '"name": "get_weather"' in text  # the tool list, through tojson(ensure_ascii=False)
    assert "<function=get_weather>\n<parameter=city>\nParis\n</parameter>" in text
    assert "<tool_response>sunny</tool_response>" in text


def test_tool_calls_stream_as_deltas(tool_server: Served) -> None:
    client = client_for(tool_server)
    stream = client.chat.completions.create(
        model="m",
        messages=[{"role": "user", "content": "weather?"}],
        tools=[tool_model.WEATHER_TOOL],
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    calls: dict[int, dict[str, str]] = {}
    reasoning, finish, usage = "", None, None
    for chunk in stream:
        usage = chunk.usage or usage
        for choice in chunk.choices:
            finish = choice.finish_reason or finish
            reasoning += (choice.delta.model_extra or {}).get("reasoning_content") or ""
            for call in choice.delta.tool_calls or []:
                entry = calls.setdefault(call.index, {"id": "", "name": "", "arguments": ""})
                entry["id"] += call.id or ""
                assert call.function is not None
                entry["name"] += call.function.name or ""
                entry["arguments"] += call.function.arguments or ""
    assert finish == "tool_calls" and reasoning == tool_model.REASONING
    assert list(calls) == [0] and calls[0]["name"] == tool_model.CALL_NAME and calls[0]["id"].startswith("call_")
    assert json.loads(calls[0]["arguments"]) == tool_model.CALL_ARGUMENTS
    assert usage is not None and usage.completion_tokens == len(tool_model.PIECES)


def test_without_tools_or_with_tool_choice_none_the_call_is_text(tool_server: Served) -> None:
    client = client_for(tool_server)
    messages: list[Any] = [{"role": "user", "content": "weather?"}]
    plain = client.chat.completions.create(model="m", messages=messages, temperature=0)
    declined = client.chat.completions.create(
        model="m", messages=messages, tools=[tool_model.WEATHER_TOOL], tool_choice="none", temperature=0
    )
    other = dict(tool_model.WEATHER_TOOL, function={"name": "get_time", "parameters": {}})
    unknown = client.chat.completions.create(model="m", messages=messages, tools=[other], temperature=0)  # type: ignore[list-item]
    for reply in (plain, declined, unknown):
        choice = reply.choices[0]
        assert choice.message.tool_calls is None and choice.finish_reason == "stop"
        assert choice.message.content == tool_model.WRITTEN.split("</think>")[1]


def test_a_client_that_hangs_up_stops_generation(long_live_gguf: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with serving(long_live_gguf, depth=3, n_ctx=65536) as served:
        replies: list[tuple[Reply, float]] = []
        generate = served.runtime.generate

        def recording(*args: Any, **kw: Any) -> Reply:
            reply = generate(*args, **kw)
            replies.append((reply, time.perf_counter()))
            return reply

        monkeypatch.setattr(served.runtime, "generate", recording)
        body = {"prompt": PROMPT, "max_tokens": 30000, "temperature": 0, "stream": True}
        with httpx2.Client(timeout=60) as http, http.stream("POST", served.base_url + "/completions", json=body) as r:
            lines = r.iter_lines()
            received = [next(lines) for _ in range(6)]
            hung_up = time.perf_counter()
        assert any(line.startswith("data: ") for line in received)
        deadline = time.monotonic() + 10
        while not replies and time.monotonic() < deadline:
            time.sleep(0.01)
        reply, ended = replies[0]
        assert reply.stats.stop_reason == "cancelled"
        assert reply.stats.n_predicted < 30000
        assert ended - hung_up < 1.0  # the next decode step saw the flag
        # The model is free again at once.
        after = client_for(served).completions.create(model="m", prompt=PROMPT, max_tokens=4, temperature=0)
        assert after.usage is not None and after.usage.completion_tokens == 4


def test_beyond_the_queue_limit_a_request_gets_a_503(long_live_gguf: Path) -> None:
    with serving(long_live_gguf, depth=0, n_ctx=65536, config=ServerConfig(queue_limit=1)) as served:
        body = {"prompt": PROMPT, "max_tokens": 30000, "temperature": 0, "stream": True}
        with httpx2.Client(timeout=60) as http, http.stream("POST", served.base_url + "/completions", json=body) as r:
            lines = r.iter_lines()  # kept: dropping the iterator closes the stream, which would stop the request
            next(lines)  # the first request is running
            busy = httpx2.post(served.base_url + "/completions", json={"prompt": "x", "max_tokens": 1}, timeout=60)
        assert busy.status_code == 503
        error = busy.json()["error"]
        assert error["type"] == "unavailable_error" and "busy" in error["message"]
        with (
            httpx2.Client(timeout=60) as http,
            http.stream("POST", served.base_url + "/completions", json=body) as r,
            pytest.raises(openai.InternalServerError),  # what the official client makes of it
        ):
            lines = r.iter_lines()
            next(lines)
            client_for(served).completions.create(model="m", prompt="x", max_tokens=1)


def test_seeded_sampling_and_stop_strings_follow_the_cli(live_gguf: Path, capsys: pytest.CaptureFixture[str]) -> None:
    sampling = ["--temperature", "0.9", "--top-k", "20", "--top-p", "0.9", "--min-p", "0.02", "--seed", "1234"]
    seeded = cli_json(capsys, live_gguf, 3, *sampling)
    stop = cli_json(capsys, live_gguf, 3)["text"][10:14]  # a stop string the greedy reply reaches
    stopped = cli_json(capsys, live_gguf, 3, "--stop", stop)
    assert stopped["stop_reason"] == "stop_string"
    with serving(live_gguf, depth=3) as served:
        client = client_for(served)
        body: dict[str, Any] = {"top_k": 20, "min_p": 0.02}
        reply = client.completions.create(
            model="m",
            prompt=PROMPT,
            max_tokens=MAX_TOKENS,
            temperature=0.9,
            top_p=0.9,
            seed=1234,
            extra_body={**body, "return_tokens": True},
        )
        assert reply.model_dump()["choices"][0]["tokens"] == seeded["token_ids"]
        cut = client.completions.create(model="m", prompt=PROMPT, max_tokens=MAX_TOKENS, temperature=0, stop=[stop])
        assert cut.choices[0].text == stopped["text"] and cut.choices[0].finish_reason == "stop"


def test_reasoning_effort_and_template_kwargs_reach_the_template() -> None:
    body = {
        "messages": [{"role": "user", "content": "hi"}],
        "reasoning_effort": "high",
        "chat_template_kwargs": {"enable_thinking": False},
    }
    request = parse_chat(body, 100)
    template = "{{ reasoning_effort }}|{{ enable_thinking }}|{{ messages[0].content }}"
    assert render_chat(template, request.messages, variables=request.template_vars) == "high|False|hi"


def test_the_request_log_hears_each_request_once_as_it_ends(live_gguf: Path) -> None:
    records: list[RequestRecord] = []
    with serving(live_gguf, depth=3, on_request=records.append) as served:
        client = client_for(served)
        client.completions.create(model="m", prompt=PROMPT, max_tokens=8, temperature=0)
        streamed = client.chat.completions.create(
            model="m", messages=[{"role": "user", "content": PROMPT}], max_tokens=6, temperature=0, stream=True
        )
        assert list(streamed)
        with pytest.raises(openai.BadRequestError):
            client.completions.create(model="m", prompt=PROMPT, max_tokens=-1)
        deadline = time.monotonic() + 10
        while len(records) < 3 and time.monotonic() < deadline:  # the stream's record comes from the model's thread
            time.sleep(0.01)
    by_order = sorted(records, key=lambda r: r.started)
    assert [(r.endpoint, r.status, r.n_tokens) for r in by_order] == [
        ("/v1/completions", 200, 8),
        ("/v1/chat/completions", 200, 6),
        ("/v1/completions", 400, 0),
    ]
    assert all(r.tokens_per_s and r.tokens_per_s > 0 for r in by_order[:2])
    assert by_order[2].tokens_per_s is None


def test_stopping_with_an_error_ends_running_and_waiting_requests_with_it(long_live_gguf: Path) -> None:
    """What a GUI model switch does: the running stream ends in the error, the waiting request gets it as a 503."""
    with serving(long_live_gguf, depth=0, n_ctx=65536) as served:
        body = {"prompt": PROMPT, "max_tokens": 30000, "temperature": 0, "stream": True}
        waiting: list[httpx2.Response] = []
        with httpx2.Client(timeout=60) as http, http.stream("POST", served.base_url + "/completions", json=body) as r:
            lines = r.iter_lines()
            next(lines)  # running
            second = threading.Thread(
                target=lambda: waiting.append(
                    httpx2.post(served.base_url + "/completions", json={"prompt": "x", "max_tokens": 1}, timeout=60)
                )
            )
            second.start()
            deadline = time.monotonic() + 10
            while served.server.queue.in_flight < 2 and time.monotonic() < deadline:
                time.sleep(0.01)
            served.server.queue.stop_all(unavailable("the model was switched in the window; retry"))
            rest = [line for line in lines if line.startswith("data: ")]
            second.join(30)
        last = json.loads(rest[-1].removeprefix("data: "))
        assert last["error"]["code"] == 503 and "switched" in last["error"]["message"]
        assert waiting[0].status_code == 503 and "switched" in waiting[0].json()["error"]["message"]
