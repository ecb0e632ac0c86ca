"""Files shaped like real Step Flash ones: mixture of experts, quantized by llama-quantize, split by gguf-split.

The fixtures (builders.moe_shape, conftest's moe_*) are Step 3.5 Flash scaled down; these tests hold
them to what they claim (routing, margins, quantization without fallback, heads in the last part) and
run the lossless and acceptance checks of test_lossless / test_acceptance on every one of them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import gguf
import numpy as np
import pytest

from engine import llama, synth
from engine.api import GenerationParams
from engine.gguf import estimate_memory, inspect_model
from engine.runtime import Runtime
from tests.engine.test_acceptance import simulate
from tests.engine.test_gguf_info import MEASURE
from tests.engine.test_lossless import N_TOKENS, PROMPT, assert_lossless
from tests.fixtures import builders

MiB = 1 << 20
ACCEPTANCE_PROMPT = " alpha bravo charlie"
ACCEPTANCE_TOKENS = 240
# What the margins must exceed the largest measured noise by, and their floors in any case.
NOISE_FACTOR = 10.0
MIN_LOGIT_MARGIN = 4.0  # of the 8 between the successor and the rest
MIN_ROUTER_MARGIN = 0.5  # of the 0.96 between sigmoid(4) and sigmoid(-4)

FILES = ["f16", "q8_0", "q4_k_m", "set", "set-empty-first", "pair"]
SINGLE_FILE_FIXTURES = {"f16": "moe_gguf", "q8_0": "moe_q8_gguf", "q4_k_m": "moe_q4km_gguf"}


@pytest.fixture(params=FILES)
def moe_files(request: pytest.FixtureRequest) -> tuple[Path, Path | None]:
    """(model, MTP file) as a user opens them: a single file, or the first part of each set."""
    name = request.param
    if name in SINGLE_FILE_FIXTURES:
        return request.getfixturevalue(SINGLE_FILE_FIXTURES[name]), None
    if name == "pair":
        trunk, heads = request.getfixturevalue("moe_split_pair")
        return trunk[0], heads[0]
    parts = request.getfixturevalue("moe_split_set" if name == "set" else "moe_split_set_empty_first")
    return parts[0], None


def chain(o: builders.Oracle, prompt: list[int], n: int) -> list[int]:
    """The prompt followed by n tokens of the successor table: what the trunk says."""
    out = list(prompt)
    for _ in range(n):
        out.append(o.succ[out[-1]])
    return out


# --- the fixtures are what they claim ---


def test_moe_file_is_shaped_like_step_flash(moe_gguf: Path) -> None:
    reader = gguf.GGUFReader(moe_gguf)

    def key(name: str) -> object:
        return reader.fields[f"step35.{name}"].contents()

    assert (key("block_count"), key("nextn_predict_layers"), key("leading_dense_block_count")) == (6, 3, 1)
    assert (key("expert_count"), key("expert_used_count")) == (32, 8)
    assert (key("expert_feed_forward_length"), key("expert_shared_feed_forward_length")) == (256, 256)
    assert key("expert_gating_func") == gguf.ExpertGatingFuncType.SIGMOID
    assert key("attention.sliding_window_pattern") == [False, True, True, True, True, True]
    names = {t.name for t in reader.tensors}
    moe = ("ffn_gate_inp.weight", "exp_probs_b.bias", "ffn_gate_exps.weight", "ffn_up_exps.weight",
           "ffn_down_exps.weight", "ffn_gate_shexp.weight", "ffn_up_shexp.weight", "ffn_down_shexp.weight")  # fmt: skip
    dense = ("ffn_gate.weight", "ffn_up.weight", "ffn_down.weight")
    for layer in range(6):  # dense, MoE, MoE, then the three heads dense
        kind = moe if layer in (1, 2) else dense
        other = dense if kind is moe else moe
        assert all(f"blk.{layer}.{t}" in names for t in kind) and not any(f"blk.{layer}.{t}" in names for t in other)
    # Rows of every matrix llama-quantize touches are whole 256-blocks, so K-quants need no fallback.
    for t in reader.tensors:
        if len(t.shape) > 1 and "gate_inp" not in t.name:
            assert int(t.shape[0]) % 256 == 0, t.name


def test_router_sends_each_token_its_own_experts() -> None:
    """From the crafted weights: on a token's own state every MoE layer picks 8 experts with a wide margin,
    tokens differ in their 8, and every expert serves some tokens."""
    o = builders.moe_oracle()
    s = builders.moe_shape(o)
    w = builders.moe_weights(o, s)
    for block in w.blocks:
        if block.moe is None:
            continue
        # A one-hot state x, RMS-normalised, is sqrt(n_embd) at x: the router reads column x.
        logits = np.sqrt(s.n_embd) * block.moe.gate_inp[:, : s.n_vocab].T.astype(np.float64)
        select = 1.0 / (1.0 + np.exp(-logits)) + block.moe.exp_probs_b
        order = np.argsort(-select, axis=1)
        chosen = order[:, : s.n_expert_used]
        eighth, ninth = np.take_along_axis(select, order[:, s.n_expert_used - 1 : s.n_expert_used + 1], axis=1).T
        assert (eighth - ninth).min() > 0.8
        assert len({frozenset(row) for row in chosen.tolist()}) == s.n_vocab
        assert set(chosen.ravel().tolist()) == set(range(s.n_expert))
    # The prompt test_gguf_info's MEASURE decodes (every token, in a stride-7 order) reaches every
    # expert of every layer, so the resident-memory check below has every expert's pages touched.
    t = builders.trace(s, w, [(7 * i) % s.n_vocab for i in range(512)])
    for experts in t.experts:
        assert set(experts.ravel().tolist()) == set(range(s.n_expert))


def llama_logits(path: Path, tokens: list[int], *, batched: bool) -> np.ndarray:
    """The trunk's logits at every position: one batch, or one token per decode."""
    model = llama.Model([path], load_mtp=False)
    ctx = llama.Context(model, llama.ContextParams(n_ctx=1024, n_threads=1), mtp=False)
    try:
        if batched:
            ctx.decode(tokens, 0, outputs="all")
            return np.stack([ctx.logits(i).copy() for i in range(len(tokens))])
        rows = []
        for pos, token in enumerate(tokens):
            ctx.decode([token], pos, outputs="last")
            rows.append(ctx.logits(0).copy())
        return np.stack(rows)
    finally:
        ctx.close()
        model.close()


def test_margins_are_far_above_noise(moe_gguf: Path, moe_q8_gguf: Path, moe_q4km_gguf: Path) -> None:
    """Lossless equality on these files is not luck, and each file's trunk follows the successor table:
    over the sequences the tests decode, llama.cpp's logit margin (top logit minus the runner-up) and every
    router's margin (8th expert's selection score minus the 9th's, from `trace` on the file's own weights)
    exceed NOISE_FACTOR times what decoding in one batch instead of token by token, and quantizing the
    weights, move logits and router scores."""
    o = builders.moe_oracle()
    s = builders.moe_shape(o)
    crafted = builders.moe_weights(o, s)
    model = llama.Model([moe_gguf], load_mtp=False)
    prompts = [model.tokenize(text, add_special=True, parse_special=False) for text in (PROMPT, ACCEPTANCE_PROMPT)]
    model.close()
    sequences = [chain(o, prompts[0], N_TOKENS), chain(o, prompts[1], ACCEPTANCE_TOKENS)]
    for seq in sequences:
        successors = [o.succ[t] for t in seq]
        exact = builders.trace(s, crafted, seq)
        assert np.array_equal(np.argmax(exact.logits, axis=1), successors)
        for path in (moe_gguf, moe_q8_gguf, moe_q4km_gguf):
            stored = builders.trace(s, builders.read_trunk(path, s), seq)  # the file's weights, float64 arithmetic
            for a, b in zip(stored.experts, exact.experts):  # the same 8 experts, in whatever order
                assert np.array_equal(np.sort(a, axis=1), np.sort(b, axis=1)), f"{path.name}: a route changed"
            batched = llama_logits(path, seq, batched=True)
            single = llama_logits(path, seq, batched=False)
            assert np.array_equal(np.argmax(batched, axis=1), successors), path.name
            top2 = np.sort(batched, axis=1)[:, -2:]
            margin = {"logit": float((top2[:, 1] - top2[:, 0]).min()), "router": float(stored.router_margins.min())}
            noise = {
                "batch": float(np.abs(batched - single).max()),
                "weights": float(np.abs(stored.logits - exact.logits).max()),
                "router-weights": float(np.abs(stored.router_margins - exact.router_margins).max()),
                # llama.cpp's own arithmetic (F16 activations, 8-bit activations in quantized dot products)
                "arithmetic": float(np.abs(batched - stored.logits).max()),
            }
            print(f"\n{path.name}, {len(seq)} tokens: margins {margin}, noise {noise}")
            assert margin["logit"] >= max(MIN_LOGIT_MARGIN, NOISE_FACTOR * max(noise["batch"], noise["weights"]))
            assert margin["router"] >= max(MIN_ROUTER_MARGIN, NOISE_FACTOR * noise["router-weights"])
            if path == moe_gguf:  # trace reproduces llama.cpp, so its routes are llama.cpp's routes
                assert noise["arithmetic"] < 0.01


def test_quantize_used_no_fallback_type(moe_q8_gguf: Path, moe_q4km_gguf: Path) -> None:
    """Every matrix got the type its recipe gives it, none a fallback for an odd row width."""
    q = gguf.GGMLQuantizationType
    n_layer = builders.moe_shape(builders.moe_oracle()).n_layer
    for path, trunk, heads in ((moe_q8_gguf, {q.Q8_0}, {q.Q8_0}), (moe_q4km_gguf, {q.Q4_K, q.Q6_K}, {q.Q8_0})):
        log = path.with_suffix(".log").read_text()
        assert "fallback" not in log, log[-3000:]
        types = {t.name: t.tensor_type for t in gguf.GGUFReader(path).tensors}
        for name, qtype in types.items():
            if name.endswith(("norm.weight", ".bias", "ffn_gate_inp.weight")):
                assert qtype == q.F32, name
            else:
                assert qtype in (heads if builders.is_head_tensor(name, n_layer) else trunk), f"{name}: {qtype.name}"
    assert {q.Q4_K, q.Q6_K} <= set(types.values())  # Q4_K_M's mix, not plain Q4_K


def split_info(part: Path) -> tuple[int, int, list[str]]:
    reader = gguf.GGUFReader(part)
    no, count = (int(reader.fields[k].contents()) for k in ("split.no", "split.count"))
    return no, count, [t.name for t in reader.tensors]


def test_split_sets_hold_the_heads_in_the_last_part(
    moe_q8_gguf: Path, moe_split_set: list[Path], moe_split_set_empty_first: list[Path]
) -> None:
    whole = [t.name for t in gguf.GGUFReader(moe_q8_gguf).tensors]
    n_layer = builders.moe_shape(builders.moe_oracle()).n_layer
    for parts in (moe_split_set, moe_split_set_empty_first):
        infos = [split_info(p) for p in parts]
        assert [(no, count) for no, count, _ in infos] == [(0, 3), (1, 3), (2, 3)]
        assert [name for _, _, names in infos for name in names] == whole
        heads = [name for name in whole if builders.is_head_tensor(name, n_layer)]
        assert set(heads) <= set(infos[-1][2])
        assert all(names for _, _, names in infos[1:])
    assert split_info(moe_split_set[0])[2] and not split_info(moe_split_set_empty_first[0])[2]


def test_split_pair_is_two_multi_part_sets(moe_split_pair: tuple[list[Path], list[Path]]) -> None:
    trunk, heads = moe_split_pair
    assert [split_info(p)[:2] for p in trunk] == [(0, 2), (1, 2)]
    assert [split_info(p)[:2] for p in heads] == [(0, 3), (1, 3), (2, 3)]
    info = inspect_model(trunk[0], heads[0])
    assert (info.mtp_weights, info.n_mtp_heads, info.n_expert) == ("separate", 3, 32)


# --- the engine on them ---


def test_greedy_output_is_identical_at_every_depth(
    load: Callable[..., Runtime], moe_files: tuple[Path, Path | None]
) -> None:
    runtime = load(*moe_files)
    assert runtime.n_heads == 3
    assert_lossless(runtime)


def test_acceptance_matches_the_head_tables(load: Callable[..., Runtime], moe_files: tuple[Path, Path | None]) -> None:
    o = builders.moe_oracle()
    runtime = load(*moe_files)
    prompt = runtime.tokenize(ACCEPTANCE_PROMPT)
    for depth in (1, 2, 3):
        runtime.generator.reset()
        reply = runtime.generate(prompt, GenerationParams(max_tokens=ACCEPTANCE_TOKENS, mtp_depth=depth))
        assert reply.token_ids == chain(o, prompt, ACCEPTANCE_TOKENS)[len(prompt) :]
        drafted, accepted = simulate(o, prompt[-1], depth, ACCEPTANCE_TOKENS)
        assert reply.stats.drafted_per_position[:depth] == drafted
        assert reply.stats.accepted_per_position[:depth] == accepted
        assert reply.stats.acceptance is not None and 0.3 < reply.stats.acceptance < 0.95


# --- memory ---


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads VmRSS from /proc")
@pytest.mark.parametrize("fixture", ["moe_gguf", "moe_q4km_gguf", "moe_split_set"])
def test_estimate_matches_resident_memory(request: pytest.FixtureRequest, fixture: str) -> None:
    """test_gguf_info's measurement on the MoE files: its prompt reaches every expert (checked above)."""
    value = request.getfixturevalue(fixture)
    path = value[0] if isinstance(value, list) else value
    n_ctx = 1024
    est = estimate_memory(inspect_model(path), n_ctx)
    repo = str(Path(__file__).resolve().parents[2])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [repo, os.environ.get("PYTHONPATH")]))}
    cmd = [sys.executable, "-c", MEASURE, str(path), str(n_ctx)]
    run = subprocess.run(cmd, capture_output=True, text=True, env=env)
    assert run.returncode == 0, run.stderr[-2000:]
    growth = json.loads(run.stdout.strip().splitlines()[-1])["growth"]
    ratio = est.total / growth
    print(
        f"\n{fixture}: estimate {est.total / MiB:.1f} MiB (weights {est.weights / MiB:.1f}, "
        f"KV {est.kv_cache / MiB:.1f}, compute {est.compute / MiB:.1f}, draft {est.mtp_context / MiB:.1f}), "
        f"resident {growth / MiB:.1f} MiB, "
        f"ratio {ratio:.3f}"
    )
    assert 0.85 <= ratio <= 1.15


def test_shape_validation(tmp_path: Path) -> None:
    o = builders.moe_oracle()
    with pytest.raises(ValueError, match="swa_layers"):
        synth.StepShape(n_vocab=10, n_embd=8, n_layer=2, swa_layers=(True,))
    with pytest.raises(ValueError, match="n_expert_used"):
        synth.StepShape(n_vocab=10, n_embd=8, n_expert=4, n_expert_used=5)
    s = builders.moe_shape(o)
    w = builders.weights(o, s)
    w.blocks[1] = w.blocks[0]  # a dense block where the shape says experts
    with pytest.raises(ValueError, match="block 1 lacks experts"):
        synth.write_step35(tmp_path / "x.gguf", s, o.vocab, w, name="x")
