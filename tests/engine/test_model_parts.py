"""Multi-part GGUF sets: any part opens the set, and every way a set can be broken has one clear message."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import gguf
import pytest

from engine.api import GenerationParams, ModelFileError
from engine.gguf import first_part, inspect_model, looks_like_part
from engine.gguf.reader import read_gguf
from engine.runtime import Runtime
from tests.engine.test_cli import run_cli, run_json
from tests.engine.test_lossless import PROMPT
from tests.fixtures import builders
from tests.fixtures.parts import part_name, renamed, split_file
from tests.fixtures.projector import header_only_projector


@pytest.fixture
def whole(tmp_path: Path) -> Path:
    return builders.tiny(tmp_path / "whole" / "model.gguf")


def parts_of(whole: Path, out: Path, n: int = 3, **kw: object) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    return split_file(whole, out, n, prefix="model", **kw)  # type: ignore[arg-type]


def error_of(*paths: Path) -> ModelFileError:
    with pytest.raises(ModelFileError) as info:
        inspect_model(list(paths))
    message = str(info.value)
    assert "\n" not in message
    return info.value


def test_a_set_inspects_as_the_whole_file(whole: Path, tmp_path: Path) -> None:
    parts = parts_of(whole, tmp_path / "set")
    one = inspect_model(whole)
    for chosen in parts:  # any part opens the set
        info = inspect_model(chosen)
        assert info.parts == tuple(parts) and info.path == parts[0] and info.n_parts == 3
        assert info.opened_part == parts.index(chosen)
        assert (info.n_params, info.weights_bytes, info.trunk_bytes, info.mtp_bytes) == (
            one.n_params,
            one.weights_bytes,
            one.trunk_bytes,
            one.mtp_bytes,
        )
        assert info.file_bytes == sum(p.stat().st_size for p in parts)
        assert (info.mtp_weights, info.n_mtp_heads, info.quantization) == ("embedded", 3, one.quantization)
    # The heads are the last layers: only the last part holds them.
    assert any(t.name.endswith("nextn.eh_proj.weight") for t in read_gguf(parts[-1]).tensors)
    assert not any("nextn" in t.name for t in read_gguf(parts[0]).tensors)


def test_several_parts_picked_together_open_the_set_once(whole: Path, tmp_path: Path) -> None:
    parts = parts_of(whole, tmp_path / "set")
    info = inspect_model([parts[2], parts[0], parts[1]])
    assert info.parts == tuple(parts) and info.opened_part == 2


def test_renamed_parts_load_when_given_together(whole: Path, tmp_path: Path) -> None:
    parts = renamed(parts_of(whole, tmp_path / "set"), ["a.gguf", "b.gguf", "c.gguf"])
    assert inspect_model(parts).parts == tuple(parts)
    message = str(error_of(parts[0]))
    assert "a.gguf is part 1 of 3" in message and "open all 3 parts together" in message


def test_first_part_without_tensors(whole: Path, tmp_path: Path) -> None:
    parts = parts_of(whole, tmp_path / "set", first_empty=True)
    assert read_gguf(parts[0]).tensors == []
    assert inspect_model(parts[0]).n_params == inspect_model(whole).n_params


def test_a_missing_part_is_named(whole: Path, tmp_path: Path) -> None:
    parts = parts_of(whole, tmp_path / "set")
    parts[1].unlink()
    e = error_of(parts[0])
    assert e.kind == "missing"
    assert str(e) == (
        f"the split model {parts[0].name} is missing part 2 of 3 ({part_name('model', 1, 3)}); "
        "download it into the same folder as the other parts"
    )


def test_a_later_part_alone_says_which_file_to_open(whole: Path, tmp_path: Path) -> None:
    parts = parts_of(whole, tmp_path / "set", 7)
    parts[0].unlink()
    message = str(error_of(parts[2]))
    assert message.startswith(f"{parts[2].name} is part 3 of 7 of a split model")
    assert f"open {part_name('model', 0, 7)}" in message


def test_a_part_from_another_set(whole: Path, tmp_path: Path) -> None:
    three = parts_of(whole, tmp_path / "three")
    four = parts_of(whole, tmp_path / "four", 4)
    e = error_of(three[0], four[1])
    assert e.kind == "mismatch" and "set of 3 parts" in str(e) and "one of 4" in str(e)
    # Under part 3's name, a part that says it is part 2 of 3.
    shutil.copy(three[1], three[2])
    assert str(error_of(three[0])).startswith(
        f"{three[2].name}, part 3 of the split model {three[0].name}, is part 2 of 3: it comes from another set"
    )


def test_overlapping_and_missing_tensors(whole: Path, tmp_path: Path) -> None:
    n = len(read_gguf(whole).tensors)
    overlap = parts_of(whole, tmp_path / "overlap", 2, groups=[range(10), range(5, n)])
    e = error_of(overlap[0])
    assert e.kind == "mismatch"
    assert str(e).startswith(
        f"the parts of the split model {overlap[0].name} overlap: "
        f"tensor blk.0.attn_k.weight is in both {overlap[0].name} and {overlap[1].name}"
    )
    short = parts_of(whole, tmp_path / "short", 2, groups=[range(10), range(10, n - 1)])
    assert f"should hold {n} tensors but its 2 parts hold {n - 1}" in str(error_of(short[1]))


def test_a_part_listed_twice(whole: Path, tmp_path: Path) -> None:
    parts = parts_of(whole, tmp_path / "set")
    assert str(error_of(parts[0], parts[0])) == f"{parts[0].name} was given twice; give each part once"
    copy = shutil.copy(parts[1], tmp_path / "copy.gguf")
    e = error_of(parts[1], Path(copy))
    assert "are both part 2 of 3" in str(e)


def test_a_truncated_part_is_named(whole: Path, tmp_path: Path) -> None:
    parts = parts_of(whole, tmp_path / "set")
    data = parts[2].read_bytes()
    parts[2].write_bytes(data[: len(data) - 100])
    e = error_of(parts[0])
    assert e.kind == "truncated"
    assert str(e).startswith(f"part 3 of 3 of the split model {parts[0].name}: {parts[2].name} is truncated")


def test_split_keys_of_the_wrong_type(whole: Path, tmp_path: Path) -> None:
    parts = parts_of(whole, tmp_path / "set")
    builders.patch_kv(parts[0], "split.count", gguf.GGUFValueType.INT16, (3).to_bytes(2, "little"))
    assert "key split.count has type INT16, expected UINT16" in str(error_of(parts[0]))


def test_part_names() -> None:
    part = Path("/m/Step-3.5-Flash-Q4_K_M-00003-of-00007.gguf")
    assert looks_like_part(part) and first_part(part) == part.with_name("Step-3.5-Flash-Q4_K_M-00001-of-00007.gguf")
    single = Path("/m/model.gguf")
    assert not looks_like_part(single) and first_part(single) == single


# --- loading: llama.cpp gets the same set ---


def reply_of(runtime: Runtime, depth: int) -> tuple[list[int], list[int]]:
    runtime.generator.reset()
    reply = runtime.generate(runtime.tokenize(PROMPT), GenerationParams(max_tokens=64, mtp_depth=depth))
    return reply.token_ids, reply.stats.accepted_per_position


@pytest.mark.parametrize("layout", ["named", "renamed", "first-empty"])
def test_a_set_loads_with_its_heads(load: Callable[..., Runtime], live_gguf: Path, tmp_path: Path, layout: str) -> None:
    """Heads in the last part run: the same tokens and the same accepted drafts as the single file."""
    parts = split_file(live_gguf, tmp_path, 3, prefix="live", first_empty=layout == "first-empty")
    chosen: list[Path] = parts[1:2]
    if layout == "renamed":
        chosen = renamed(parts, ["c.gguf", "a.gguf", "b.gguf"])
    runtime = load(chosen)
    assert runtime.n_heads == 3 and runtime.info.mtp_weights == "embedded"
    single = load(live_gguf)
    assert reply_of(runtime, 3) == reply_of(single, 3)
    assert sum(reply_of(runtime, 3)[1]) > 0
    assert reply_of(runtime, 0)[0] == reply_of(single, 3)[0]


def test_a_separate_mtp_file_may_itself_be_split(
    load: Callable[..., Runtime], split_pair: tuple[Path, Path], tmp_path: Path
) -> None:
    trunk, heads = split_pair
    heads_parts = split_file(heads, tmp_path, 2, prefix="heads")
    runtime = load(trunk, heads_parts[0])
    assert runtime.info.mtp_weights == "separate" and runtime.info.mtp_parts == tuple(heads_parts)
    assert reply_of(runtime, 3) == reply_of(load(trunk, heads), 3)


# --- the command line ---


def test_cli_inspects_a_set_from_any_part(live_gguf: Path, tmp_path: Path) -> None:
    parts = split_file(live_gguf, tmp_path, 3, prefix="live")
    projector = header_only_projector(tmp_path / "mmproj-live-f16.gguf", n_embd_out=builders.N_EMBD)
    single = run_json("inspect", str(live_gguf))
    data = run_json("inspect", str(parts[2]))
    assert (data["n_parts"], data["parts"], data["path"]) == (3, [str(p) for p in parts], str(parts[0]))
    assert data["mtp_weights"] == "embedded" and data["n_mtp_heads"] == 3
    for key in ("n_params", "estimated_memory_bytes", "quantization", "quantization_types"):
        assert data[key] == single[key], key
    assert data["mmproj"] == str(projector) and single["mmproj"] is None
    text = run_cli("inspect", str(parts[2])).stdout
    assert f"{parts[2].name} is part 3 of 3: the whole set is read" in text
    assert "in 3 parts" in text and "mmproj-live-f16.gguf (beside the model)" in text


def test_cli_generates_from_part_one_with_the_heads_in_the_last_part(live_gguf: Path, tmp_path: Path) -> None:
    parts = split_file(live_gguf, tmp_path, 3, prefix="live")
    run = ("generate", "--prompt", PROMPT, "--max-tokens", "48", "--threads", "1", "--mtp-depth", "3")
    from_set = run_json(*run, "--model", str(parts[0]))
    single = run_json(*run, "--model", str(live_gguf))
    assert from_set["mtp_depth"] == 3 and from_set["mtp_note"] is None
    assert from_set["n_accepted"] > 0
    for key in ("token_ids", "n_drafted", "n_accepted", "accepted_per_position"):
        assert from_set[key] == single[key], key


def test_cli_says_what_is_wrong_with_a_set(live_gguf: Path, tmp_path: Path) -> None:
    parts = split_file(live_gguf, tmp_path, 3, prefix="live")
    parts[1].unlink()
    proc = run_cli("generate", "--model", str(parts[0]), "--prompt", "x")
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr == (
        f"error: the split model {parts[0].name} is missing part 2 of 3 ({parts[1].name}); "
        "download it into the same folder as the other parts\n"
    )


def test_cli_recognises_a_vision_projector(tmp_path: Path) -> None:
    projector = header_only_projector(tmp_path / "mmproj-model.gguf", n_embd_out=4096)
    data = run_json("inspect", str(projector))
    assert data["kind"] == "vision_projector" and data["projector_type"] == "step3vl"
    assert (data["n_embd_out"], data["image_size"]) == (4096, 504)
    proc = run_cli("generate", "--model", str(projector), "--prompt", "x")
    assert proc.returncode == 2 and "is a vision projector (mmproj), not a language model" in proc.stderr
