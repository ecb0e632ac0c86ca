"""Where the heads live: embedded, a separate MTP-only file, declared but absent, or none."""

from __future__ import annotations

import struct
from collections.abc import Callable
from pathlib import Path

import gguf
import pytest

from engine.api import GenerationParams, LoadCancelled, LoadOptions, ModelLoadError
from engine.gguf import inspect_model
from engine.runtime import Runtime
from tests.engine.test_lossless import PROMPT
from tests.fixtures.builders import tiny


def test_split_trunk_and_mtp_files_match_one_file(
    load: Callable[..., Runtime], live_gguf: Path, split_pair: tuple[Path, Path]
) -> None:
    single = load(live_gguf)
    split = load(*split_pair)
    assert split.info.mtp_weights == "separate" and split.n_heads == 3
    params = GenerationParams(max_tokens=150, mtp_depth=3)
    a = single.generate(single.tokenize(PROMPT), params)
    b = split.generate(split.tokenize(PROMPT), params)
    assert a.token_ids == b.token_ids
    assert a.stats.accepted_per_position == b.stats.accepted_per_position


def test_declared_but_absent_heads_run_plainly_and_say_why(load: Callable[..., Runtime], absent_gguf: Path) -> None:
    runtime = load(absent_gguf)
    assert runtime.info.mtp_weights == "absent" and runtime.n_heads == 0
    stats = runtime.generate(runtime.tokenize(PROMPT), GenerationParams(max_tokens=20)).stats
    assert stats.n_predicted == 20
    assert (stats.mtp_depth, stats.mtp_note, stats.n_drafted) == (0, "weights_absent", 0)


def test_model_without_heads_runs_plainly(load: Callable[..., Runtime], noheads_gguf: Path) -> None:
    runtime = load(noheads_gguf)
    stats = runtime.generate(runtime.tokenize(PROMPT), GenerationParams(max_tokens=20, mtp_depth=2)).stats
    assert (stats.mtp_depth, stats.mtp_note, stats.acceptance) == (0, "no_heads", None)


def test_depth_zero_and_clamped_depth_are_reported(load: Callable[..., Runtime], oracle_gguf: Path) -> None:
    runtime = load(oracle_gguf)
    prompt = runtime.tokenize(PROMPT)
    off = runtime.generate(prompt, GenerationParams(max_tokens=10, mtp_depth=0)).stats
    assert (off.mtp_depth, off.mtp_note) == (0, "depth_zero")
    runtime.generator.reset()
    big = runtime.generate(prompt, GenerationParams(max_tokens=10, mtp_depth=7)).stats
    assert (big.mtp_depth, big.mtp_depth_requested, big.mtp_note) == (3, 7, "depth_clamped")
    runtime.generator.reset()
    default = runtime.generate(prompt, GenerationParams(max_tokens=10)).stats
    assert (default.mtp_depth, default.mtp_note) == (3, None)


def test_loading_reports_progress_and_can_be_cancelled(live_gguf: Path) -> None:
    seen: list[tuple[float, str]] = []
    with pytest.raises(LoadCancelled):
        Runtime.load(
            live_gguf,
            None,
            LoadOptions(n_threads=1),
            progress=lambda f, stage: seen.append((f, stage)),
            should_cancel=lambda: len(seen) >= 2,
        )
    assert seen and all(0.0 <= f <= 1.0 for f, _ in seen)
    done: list[tuple[float, str]] = []
    runtime = Runtime.load(live_gguf, None, LoadOptions(n_threads=1), progress=lambda f, s: done.append((f, s)))
    runtime.close()
    assert done[-1] == (1.0, "Ready") and [f for f, _ in done] == sorted(f for f, _ in done)


def test_a_file_llama_cpp_refuses_says_why_in_one_line(tmp_path: Path) -> None:
    """A shape only llama.cpp checks: its own reason reaches the message, not just "see the log"."""
    path = tiny(tmp_path / "model.gguf")
    embd = gguf.GGUFReader(path).tensors[0]
    assert embd.name == "token_embd.weight"
    dims_at = embd.field.offset + 8 + len(embd.name) + 4  # after the name and the dimension count
    data = bytearray(path.read_bytes())
    rows, cols = struct.unpack_from("<QQ", data, dims_at)
    struct.pack_into("<QQ", data, dims_at, cols, rows)  # same size, transposed: inspect_model cannot tell
    path.write_bytes(bytes(data))
    inspect_model(path)
    with pytest.raises(ModelLoadError) as failure:
        Runtime.load(path, None, LoadOptions(n_threads=1))
    message = str(failure.value)
    assert "\n" not in message
    assert message.startswith("model.gguf: llama.cpp could not load model.gguf: check_tensor_dims: tensor ")
    assert "'token_embd.weight' has wrong shape" in message
