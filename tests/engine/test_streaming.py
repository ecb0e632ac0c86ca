"""Streamed text, stop conditions and cancellation."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from engine.api import Delta, GenerationParams, PromptTooLong
from engine.demo import ensure_demo_model
from engine.runtime import Runtime
from engine.stats import ReplyStats


def collect(runtime: Runtime, prompt: list[int], params: GenerationParams, **kw: Any) -> tuple[Any, list[Delta]]:
    deltas: list[Delta] = []

    def on_delta(delta: Delta, _stats: ReplyStats) -> None:
        deltas.append(delta)

    return runtime.generate(prompt, params, on_delta=on_delta, **kw), deltas


@pytest.mark.parametrize("depth", [0, 3])
def test_deltas_never_split_a_utf8_character(load: Callable[..., Runtime], oracle_gguf: Path, depth: int) -> None:
    runtime = load(oracle_gguf)
    reply, deltas = collect(runtime, runtime.tokenize(" alpha"), GenerationParams(max_tokens=260, mtp_depth=depth))
    text = "".join(seg.text for d in deltas for seg in d.segments)
    assert text == reply.text
    assert "€" in text and "\ufffd" not in text
    assert [t for d in deltas for t in d.token_ids] == reply.token_ids
    if depth:
        flags = [f for d in deltas for f in d.from_draft]
        assert any(flags) and not all(flags)  # each step's last token is the target's own
        assert any(seg.from_draft for d in deltas for seg in d.segments)


def test_stop_string_ends_the_reply_before_it(load: Callable[..., Runtime], oracle_gguf: Path) -> None:
    runtime = load(oracle_gguf)
    prompt = runtime.tokenize(" alpha")
    full = runtime.generate(prompt, GenerationParams(max_tokens=80, mtp_depth=0)).text
    stop = full[40:44]
    for depth in (0, 3):
        runtime.generator.reset()
        reply, deltas = collect(runtime, prompt, GenerationParams(max_tokens=80, mtp_depth=depth, stop=(stop,)))
        assert reply.text == full[: full.index(stop)]
        assert "".join(s.text for d in deltas for s in d.segments) == reply.text
        assert reply.stats.stop_reason == "stop_string"


def test_max_tokens_and_end_of_generation(load: Callable[..., Runtime], oracle_gguf: Path) -> None:
    runtime = load(oracle_gguf)
    for depth in (0, 1, 3):
        runtime.generator.reset()
        reply = runtime.generate(runtime.tokenize(" alpha"), GenerationParams(max_tokens=17, mtp_depth=depth))
        assert len(reply.token_ids) == 17 and reply.stats.stop_reason == "max_tokens"
    demo = load(ensure_demo_model())
    reply = demo.generate(demo.tokenize("Hi"), GenerationParams(max_tokens=500))
    assert reply.stats.stop_reason == "eog"
    assert demo.model.eos not in reply.token_ids
    assert reply.text.rstrip().endswith("have fun!")


def test_context_full_is_reported(load: Callable[..., Runtime], oracle_gguf: Path) -> None:
    runtime = load(oracle_gguf, n_ctx=256)
    n_ctx = runtime.target.n_ctx
    prompt = runtime.tokenize(" alpha")
    reply = runtime.generate(prompt, GenerationParams(max_tokens=10_000, mtp_depth=3))
    assert reply.stats.stop_reason == "context_full"
    assert len(prompt) + reply.stats.n_predicted >= n_ctx - 1
    with pytest.raises(PromptTooLong):
        runtime.generate(list(range(5, 5 + n_ctx)), GenerationParams())


@pytest.mark.parametrize("depth", [0, 3])
def test_cancel_stops_after_at_most_one_more_decode(
    load: Callable[..., Runtime], oracle_gguf: Path, depth: int
) -> None:
    runtime = load(oracle_gguf)
    calls = {"target": 0, "after_stop": 0}
    stop = {"now": False}
    decode = runtime.target.decode

    def counting_decode(*args: Any, **kw: Any) -> None:
        calls["target"] += 1
        if stop["now"]:
            calls["after_stop"] += 1
        decode(*args, **kw)

    runtime.target.decode = counting_decode  # type: ignore[method-assign]

    def on_delta(delta: Delta, stats: ReplyStats) -> None:
        if stats.n_predicted >= 20:
            stop["now"] = True

    reply = runtime.generate(
        runtime.tokenize(" alpha"),
        GenerationParams(max_tokens=500, mtp_depth=depth),
        on_delta=on_delta,
        should_stop=lambda: stop["now"],
    )
    assert reply.stats.stop_reason == "cancelled"
    assert calls["after_stop"] <= 1
    assert 20 <= reply.stats.n_predicted < 30


def test_cancel_during_prompt_processing(load: Callable[..., Runtime], oracle_gguf: Path) -> None:
    runtime = load(oracle_gguf, n_batch=32)
    seen: list[tuple[int, int]] = []
    prompt = runtime.tokenize(" alpha bravo" * 40)
    reply = runtime.generate(
        prompt,
        GenerationParams(max_tokens=5),
        on_progress=lambda done, total: seen.append((done, total)),
        should_stop=lambda: len(seen) >= 2,
    )
    assert reply.stats.stop_reason == "cancelled" and reply.token_ids == []
    assert len(seen) == 2 and seen[-1][0] < seen[-1][1]
    # The engine stays usable and evaluates the prompt again from where the cache is valid.
    again = runtime.generate(prompt, GenerationParams(max_tokens=5))
    assert again.stats.stop_reason == "max_tokens"
