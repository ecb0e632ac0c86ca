"""MTP must not change the text: greedy output at depth 1-3 equals plain decoding, token for token."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from engine.api import GenerationParams, SamplerParams
from engine.llama import LlamaError
from engine.runtime import Runtime
from tests.fixtures.builders import WORDS

# Longer than the fixtures' 16-token sliding window, so attention windows slide during the prompt.
PROMPT = " ".join(WORDS[:12]) + " and then some more words"
N_TOKENS = 320


def tokens_at_depths(runtime: Runtime, prompt: list[int], params: GenerationParams) -> dict[int, list[int]]:
    out = {}
    for depth in (0, 1, 2, 3):
        runtime.generator.reset()
        reply = runtime.generate(prompt, GenerationParams(**{**params.__dict__, "mtp_depth": depth}))
        out[depth] = reply.token_ids
    return out


def assert_lossless(runtime: Runtime) -> None:
    prompt = runtime.tokenize(PROMPT)
    assert len(prompt) > 2 * runtime.model.n_swa
    outputs = tokens_at_depths(runtime, prompt, GenerationParams(max_tokens=N_TOKENS))
    assert len(outputs[0]) == N_TOKENS
    for depth in (1, 2, 3):
        assert outputs[depth] == outputs[0], f"depth {depth} diverged from plain decoding"


def test_greedy_output_is_identical_at_every_depth(load: Callable[..., Runtime], live_gguf: Path) -> None:
    runtime = load(live_gguf)
    assert runtime.n_heads == 3
    assert_lossless(runtime)


def test_live_fixture_text_depends_on_context(load: Callable[..., Runtime], live_gguf: Path, oracle_gguf: Path) -> None:
    """Guards the fixture: if attention wrote nothing, a KV-cache bug could not change the text."""
    prompt_text = PROMPT
    live = load(live_gguf).generate(
        load(live_gguf).tokenize(prompt_text), GenerationParams(max_tokens=100, mtp_depth=0)
    )
    oracle_rt = load(oracle_gguf)
    oracle = oracle_rt.generate(oracle_rt.tokenize(prompt_text), GenerationParams(max_tokens=100, mtp_depth=0))
    assert live.token_ids != oracle.token_ids


def test_drafts_are_both_accepted_and_rejected_on_the_live_fixture(
    load: Callable[..., Runtime], live_gguf: Path
) -> None:
    runtime = load(live_gguf)
    reply = runtime.generate(runtime.tokenize(PROMPT), GenerationParams(max_tokens=N_TOKENS, mtp_depth=3))
    assert reply.stats.acceptance is not None
    assert 0.2 < reply.stats.acceptance < 0.99


def test_lossless_check_catches_a_missing_kv_rollback(
    load: Callable[..., Runtime], live_gguf: Path, rollback_off: None
) -> None:
    """The test above must fail when rejected drafts are left in the KV caches."""
    runtime = load(live_gguf)
    with pytest.raises((AssertionError, LlamaError)):
        assert_lossless(runtime)


def test_multi_turn_chat_is_lossless_and_reuses_the_cache(load: Callable[..., Runtime], live_gguf: Path) -> None:
    turns = ["alpha bravo charlie delta echo foxtrot", "golf hotel india juliett", "kilo lima mike november oscar"]
    transcripts: dict[int, list[list[int]]] = {}
    evaluated: dict[int, list[tuple[int, int]]] = {}
    for depth in (0, 1, 2, 3):
        runtime = load(live_gguf)
        messages: list[dict[str, str]] = []
        transcripts[depth], evaluated[depth] = [], []
        for turn in turns:
            messages.append({"role": "user", "content": turn})
            prompt = runtime.chat_prompt(messages)
            reply = runtime.generate(
                prompt.tokens,
                GenerationParams(max_tokens=60, mtp_depth=depth),
                starts_in_reasoning=prompt.starts_in_reasoning,
            )
            transcripts[depth].append(reply.token_ids)
            evaluated[depth].append((reply.stats.n_prompt, reply.stats.n_prompt_evaluated))
            messages.append({"role": "assistant", "content": reply.text, "reasoning_content": reply.reasoning})
        runtime.close()
    for depth in (1, 2, 3):
        assert transcripts[depth] == transcripts[0]
    # Later turns evaluate only what follows the previous prompt, never the whole history
    # (give or take the generation prompt's "<think>\n" tail, which the template renders differently).
    for depth in (0, 3):
        for (n_before, _), (n_prompt, n_evaluated) in zip(evaluated[depth], evaluated[depth][1:]):
            assert n_evaluated <= n_prompt - n_before + 4, evaluated[depth]


def test_seeded_sampling_gives_the_same_text_at_every_depth(load: Callable[..., Runtime], live_gguf: Path) -> None:
    runtime = load(live_gguf)
    prompt = runtime.tokenize(PROMPT)
    sampler = SamplerParams(temperature=3.0, top_k=0, top_p=1.0, min_p=0.0, seed=1234)
    outputs = tokens_at_depths(runtime, prompt, GenerationParams(max_tokens=200, sampler=sampler))
    greedy = tokens_at_depths(runtime, prompt, GenerationParams(max_tokens=200))
    assert outputs[0] != greedy[0], "temperature 3 should sample away from the greedy text"
    for depth in (1, 2, 3):
        assert outputs[depth] == outputs[0]


def test_seeded_sampling_is_reproducible_and_seed_dependent(load: Callable[..., Runtime], live_gguf: Path) -> None:
    runtime = load(live_gguf)
    prompt = runtime.tokenize(PROMPT)

    def run(seed: int) -> list[int]:
        runtime.generator.reset()
        sampler = SamplerParams(temperature=3.0, top_k=0, top_p=1.0, min_p=0.0, seed=seed)
        return runtime.generate(prompt, GenerationParams(max_tokens=100, sampler=sampler, mtp_depth=3)).token_ids

    assert run(7) == run(7)
    assert run(7) != run(8)
