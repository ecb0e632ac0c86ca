"""engine.gguf: what a GGUF holds, every way it can be broken, and what running it costs."""

from __future__ import annotations

import json
import os
import random
import re
import struct
import subprocess
import sys
import time
from pathlib import Path

import gguf
import numpy as np
import pytest

from engine import synth
from engine.api import ModelFileError
from engine.gguf import estimate_memory, free_memory_bytes, hparams, inspect_model, memory, memory_verdict
from tests.capabilities import as_unprivileged_user
from tests.fixtures import builders
from tests.fixtures.builders import patch_kv, tiny
from tests.sdist import read_sdist_member

MiB = 1 << 20


def sections(path: Path) -> tuple[int, int, int]:
    """Where the metadata, the tensor directory and the tensor data start, per gguf's own reader."""
    reader = gguf.GGUFReader(path)
    return 24, reader.tensors[0].field.offset, reader.data_offset


def error_of(path: Path, mtp_path: Path | None = None) -> ModelFileError:
    with pytest.raises(ModelFileError) as info:
        inspect_model(path, mtp_path)
    message = str(info.value)
    assert "\n" not in message and path.name in message
    return info.value


# --- where the MTP heads are ---


def test_embedded_heads(oracle_gguf: Path) -> None:
    info = inspect_model(oracle_gguf)
    assert (info.mtp_weights, info.n_mtp_heads, info.mtp_path, info.mtp_file_bytes) == ("embedded", 3, None, None)
    assert (info.architecture, info.name, info.n_layer, info.n_embd) == ("step35", "oracle", 2, builders.N_EMBD)
    assert (info.n_vocab, info.context_length, info.n_swa) == (len(builders.vocab()), 4096, 16)
    assert info.has_chat_template and (info.parts, info.n_parts, info.opened_part) == ((oracle_gguf,), 1, 0)
    assert info.file_bytes == oracle_gguf.stat().st_size
    assert info.weights_bytes == info.trunk_bytes + info.mtp_bytes < info.file_bytes
    assert [layer.swa for layer in info.layers] == [True, False, True, True, True]


def test_declared_heads_without_weights_are_absent(absent_gguf: Path) -> None:
    info = inspect_model(absent_gguf)
    assert (info.mtp_weights, info.n_mtp_heads, info.n_layer, info.mtp_bytes) == ("absent", 3, 2, 0)


def test_no_heads_declared(noheads_gguf: Path) -> None:
    info = inspect_model(noheads_gguf)
    assert (info.mtp_weights, info.n_mtp_heads, info.n_layer, len(info.layers)) == ("none", 0, 2, 2)


def test_split_pair_is_separate(split_pair: tuple[Path, Path]) -> None:
    trunk, heads = split_pair
    info = inspect_model(trunk, heads)
    assert (info.mtp_weights, info.n_mtp_heads, info.mtp_path) == ("separate", 3, heads)
    assert info.mtp_file_bytes == heads.stat().st_size
    # llama.cpp loads the MTP-only file as a model of its own: all of it is mapped.
    assert info.mtp_bytes == sum(t.n_bytes for t in gguf.GGUFReader(heads).tensors)
    # Parameters count the shared embedding once; bytes count both files.
    reader_main, reader_mtp = gguf.GGUFReader(trunk), gguf.GGUFReader(heads)
    main_names = {t.name for t in reader_main.tensors}
    assert info.n_params == sum(t.n_elements for t in reader_main.tensors) + sum(
        t.n_elements for t in reader_mtp.tensors if t.name not in main_names
    )
    assert info.weights_bytes == sum(t.n_bytes for r in (reader_main, reader_mtp) for t in r.tensors)


def test_embedded_heads_win_over_a_separate_file(oracle_gguf: Path, split_pair: tuple[Path, Path]) -> None:
    info = inspect_model(oracle_gguf, split_pair[1])
    assert (info.mtp_weights, info.mtp_path, info.mtp_file_bytes) == ("embedded", None, None)


def test_mtp_only_file_as_main_model_is_refused(split_pair: tuple[Path, Path]) -> None:
    err = error_of(split_pair[1])
    assert err.kind == "mtp_only"
    assert "MTP-only" in str(err) and "separate MTP file" in str(err)


def test_mismatched_pair_names_both_files(tmp_path: Path) -> None:
    main = tiny(tmp_path / "model.gguf", mtp=False)
    wide = tiny(tmp_path / "wide-mtp.gguf", n_embd=64, trunk=False)
    err = error_of(main, wide)
    assert err.kind == "mismatch"
    assert str(err).startswith("wide-mtp.gguf does not match model.gguf: width 64 vs 32;")

    other_vocab = synth.Vocab.build([" " + w for w in builders.WORDS] + [" extra"])
    bigger = tiny(tmp_path / "vocab-mtp.gguf", vocab=other_vocab, trunk=False)
    assert "vocabulary size" in str(error_of(main, bigger))

    no_heads = tiny(tmp_path / "plain.gguf", declare_mtp=False)
    assert "declares no MTP heads" in str(error_of(main, no_heads))
    empty_heads = tiny(tmp_path / "empty-mtp.gguf", mtp=False)
    assert "none of their weights" in str(error_of(main, empty_heads))


def test_broken_mtp_file_is_reported_by_its_own_name(tmp_path: Path) -> None:
    main = tiny(tmp_path / "model.gguf", mtp=False)
    broken = tmp_path / "mtp.gguf"
    broken.write_bytes(b"PK\x03\x04 not a model")
    with pytest.raises(ModelFileError, match=r"^mtp\.gguf is not a GGUF file"):
        inspect_model(main, broken)


# --- what the file holds ---


def test_n_params_is_the_sum_of_the_written_tensors(tmp_path: Path) -> None:
    o = builders.oracle()
    s = builders.shape(o)
    w = builders.weights(o, s)
    arrays = [w.token_embd, w.output_norm, w.output]
    for block in [*w.blocks, *(h.block for h in w.heads)]:
        arrays += [getattr(block, f) for f in ("wq", "wk", "wv", "wo", "ffn_gate", "ffn_up", "ffn_down")]
        arrays += [block.attn_norm, block.ffn_norm]
    arrays += [a for h in w.heads for a in (h.eh_proj, h.enorm, h.hnorm, h.shared_head_norm, h.shared_head_head)]
    path = builders.build(tmp_path / "model.gguf", o)
    assert inspect_model(path).n_params == sum(a.size for a in arrays)


def test_tensor_directory_agrees_with_gguf_reader(oracle_gguf: Path) -> None:
    reader = gguf.GGUFReader(oracle_gguf)
    info = inspect_model(oracle_gguf)
    assert info.weights_bytes == sum(t.n_bytes for t in reader.tensors)
    assert info.n_params == sum(t.n_elements for t in reader.tensors)
    heads = [t for t in reader.tensors if re.match(r"blk\.[234]\.", t.name)]  # blocks 2-4 are the heads
    assert info.mtp_bytes == sum(t.n_bytes for t in heads)


def test_quantization_from_file_type_or_tensor_types(tmp_path: Path) -> None:
    assert inspect_model(tiny(tmp_path / "f32.gguf")).quantization == "F32"
    f16 = tiny(tmp_path / "f16.gguf", dtype=np.float16)
    assert inspect_model(f16).quantization == "F16"
    # An unknown file type falls back to the type holding the most bytes.
    patch_kv(f16, "general.file_type", gguf.GGUFValueType.UINT32, struct.pack("<I", 999))
    assert inspect_model(f16).quantization == "F16"


def test_vocabulary_only_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "vocab.gguf"
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_block_count(1)
    writer.add_embedding_length(8)
    writer.add_context_length(16)
    writer.add_token_list(["a", "b"])
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    err = error_of(path)
    assert err.kind == "unsupported" and "no weights" in str(err)


# --- files that are not models ---


NOT_GGUF = "model.gguf is not a GGUF file"


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"PK\x03\x04" + bytes(100), f"{NOT_GGUF} (it starts with b'PK\\x03\\x04'); choose a .gguf model file"),
        (b"hello, this is a text file\n", f"{NOT_GGUF} (it starts with b'hell'); choose a .gguf model file"),
        (b"", "model.gguf is empty; download it again"),
    ],
)
def test_not_a_gguf(tmp_path: Path, content: bytes, expected: str) -> None:
    path = tmp_path / "model.gguf"
    path.write_bytes(content)
    assert str(error_of(path)) == expected


def test_missing_file_and_directory(tmp_path: Path) -> None:
    missing = error_of(tmp_path / "model.gguf")
    assert (str(missing), missing.kind) == ("model.gguf does not exist; check the path", "missing")
    folder = tmp_path / "models.gguf"
    folder.mkdir()
    assert "is a directory" in str(error_of(folder))


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="POSIX only")
def test_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "model.gguf"
    os.mkfifo(fifo)
    assert "not a regular file" in str(error_of(fifo))


@pytest.mark.skipif(sys.platform == "win32", reason="needs POSIX permissions")
def test_unreadable_file() -> None:
    def check(folder: Path) -> None:  # as a user root's powers do not reach past chmod
        path = tiny(folder / "model.gguf")
        path.chmod(0)
        err = error_of(path)
        assert err.kind == "unreadable"
        assert str(err) == "model.gguf cannot be read (permission denied); check the file's permissions"

    as_unprivileged_user(check)


def test_unknown_architecture_and_vision_projector(tmp_path: Path) -> None:
    path = tiny(tmp_path / "model.gguf")
    data = path.read_bytes()
    at = data.index(b"general.architecture")
    path.write_bytes(data[:at] + data[at:].replace(b"step35", b"fooarc", 1))
    err = error_of(path)
    assert (str(err), err.kind) == (
        "model.gguf has architecture 'fooarc', which llama.cpp 0.3.36 cannot run; "
        "choose a model of a supported architecture",
        "unsupported",
    )
    mmproj = tmp_path / "mmproj.gguf"
    writer = gguf.GGUFWriter(str(mmproj), "clip")
    writer.add_tensor("v.patch_embd.weight", np.zeros((4, 4), np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    assert "vision projector" in str(error_of(mmproj))


def test_version_and_byte_order(tmp_path: Path) -> None:
    path = tiny(tmp_path / "model.gguf")
    data = path.read_bytes()
    for version, words in ((1, "version 1"), (4, "version 4"), (0x03000000, "big-endian")):
        path.write_bytes(data[:4] + struct.pack("<I", version) + data[8:])
        err = error_of(path)
        assert words in str(err) and err.kind == "unsupported"


# --- damage ---


def test_truncated_tensor_data_names_the_tensor(tmp_path: Path) -> None:
    path = tiny(tmp_path / "model.gguf")
    size = path.stat().st_size
    os.truncate(path, size - 1000)
    err = error_of(path)
    assert err.kind == "truncated"
    assert re.fullmatch(
        rf"model\.gguf is truncated: tensor blk\.\d+\.\S+ ends at byte [\d,]+ but the file has {size - 1000:,} bytes; "
        "download it again",
        str(err),
    ), str(err)


def test_truncation_anywhere_gives_model_file_error(tmp_path: Path) -> None:
    """Every cut in the header, metadata, tensor directory or data is caught, and nothing else is raised."""
    path = tiny(tmp_path / "model.gguf")
    size = path.stat().st_size
    kv_start, infos_start, data_start = sections(path)
    offsets = set(range(1, 64))
    offsets |= set(range(kv_start, infos_start, max(1, (infos_start - kv_start) // 150)))
    offsets |= set(range(infos_start, data_start, max(1, (data_start - infos_start) // 150)))
    offsets |= set(range(data_start, size, max(1, (size - data_start) // 40)))
    offsets |= {infos_start - 1, infos_start, data_start - 1, data_start, size - 1}
    truncated_kinds = set()
    for cut in sorted(offsets, reverse=True):  # shrinking one copy in place
        os.truncate(path, cut)
        with pytest.raises(ModelFileError) as info:
            inspect_model(path)
        truncated_kinds.add(info.value.kind)
        assert "\n" not in str(info.value) and "model.gguf" in str(info.value)
    assert truncated_kinds == {"truncated"}


def test_random_corruption_never_escapes_as_another_exception(tmp_path: Path) -> None:
    original = tiny(tmp_path / "original.gguf")
    data = original.read_bytes()
    _, _, data_start = sections(original)
    path = tmp_path / "model.gguf"
    rng = random.Random(1234)
    outcomes = {"ok": 0, "error": 0}
    for _ in range(400):
        damaged = bytearray(data)
        for _ in range(rng.randint(1, 4)):
            damaged[rng.randrange(data_start)] = rng.randrange(256)
        path.write_bytes(bytes(damaged))
        try:
            inspect_model(path)
            outcomes["ok"] += 1
        except ModelFileError as e:
            assert "\n" not in str(e)
            outcomes["error"] += 1
    assert outcomes["error"] > 100


@pytest.mark.parametrize(("field", "value"), [("tensors", 1 << 62), ("kv", 1 << 40), ("kv", 2**64 - 1)])
def test_absurd_counts_fail_fast(tmp_path: Path, field: str, value: int) -> None:
    path = tiny(tmp_path / "model.gguf")
    data = bytearray(path.read_bytes())
    at = 8 if field == "tensors" else 16
    data[at : at + 8] = struct.pack("<Q", value)
    path.write_bytes(bytes(data))
    start = time.perf_counter()
    err = error_of(path)
    assert time.perf_counter() - start < 1.0
    assert f"{value:,}" in str(err) and "download it again" in str(err)


def test_huge_string_and_array_lengths_are_damage_not_allocations(tmp_path: Path) -> None:
    path = tiny(tmp_path / "model.gguf")
    data = bytearray(path.read_bytes())
    key = b"tokenizer.ggml.tokens"
    at = data.index(struct.pack("<Q", len(key)) + key) + 8 + len(key) + 8  # after the key, ARRAY and item type
    for count, words in ((1 << 40, "claims an array"), (5_000_000, "is truncated")):
        data[at : at + 8] = struct.pack("<Q", count)
        path.write_bytes(bytes(data))
        assert words in str(error_of(path))
    name = b"general.architecture"
    at = data.index(struct.pack("<Q", len(name)) + name) + 8 + len(name) + 4
    data[at : at + 8] = struct.pack("<Q", 1 << 50)
    path.write_bytes(bytes(data))
    assert "llama.cpp reads at most" in str(error_of(path))


@pytest.mark.parametrize(
    ("key", "vtype", "value", "expected"),
    [
        ("step35.block_count", gguf.GGUFValueType.FLOAT32, struct.pack("<f", 5.0), "has type FLOAT32, expected UINT32"),
        ("step35.embedding_length", gguf.GGUFValueType.INT32, struct.pack("<i", 32), "has type INT32, expected UINT32"),
        ("step35.context_length", gguf.GGUFValueType.INT32, struct.pack("<i", 9), "has type INT32, expected UINT32"),
        ("step35.block_count", gguf.GGUFValueType.UINT32, struct.pack("<I", 0), "outside 1..512"),
        ("step35.block_count", gguf.GGUFValueType.UINT32, struct.pack("<I", 2), "exceeds step35.block_count"),
        ("step35.expert_used_count", gguf.GGUFValueType.UINT32, struct.pack("<I", 2), "does not fit"),
        ("step35.rope.dimension_count", gguf.GGUFValueType.UINT32, struct.pack("<I", 190), "exceeds the attention"),
        # Found by the fuzzer: ggml's rope aborts on an odd count (GGML_ASSERT(n_dims % 2 == 0)).
        ("step35.rope.dimension_count", gguf.GGUFValueType.UINT32, struct.pack("<I", 7), "is odd"),
    ],
)
def test_wrong_key_types_and_values_are_damage(
    tmp_path: Path, key: str, vtype: int, value: bytes, expected: str
) -> None:
    path = tiny(tmp_path / "model.gguf")
    patch_kv(path, key, gguf.GGUFValueType(vtype), value)
    err = error_of(path)
    assert err.kind == "damaged" and expected in str(err) and str(err).endswith("; the file is damaged")
    if "type" in expected:
        assert str(err).startswith(f"model.gguf: key {key} has type")


def test_duplicate_tokens_are_damage(tmp_path: Path) -> None:
    v = builders.vocab()
    tokens = list(v.tokens)
    tokens[-1] = tokens[-2]
    err = error_of(tiny(tmp_path / "model.gguf", vocab=synth.Vocab(tuple(tokens), v.types)))
    assert "appears twice in its vocabulary" in str(err) and repr(tokens[-2]) in str(err)


def test_tokens_equal_up_to_a_nul_byte_are_duplicates(tmp_path: Path) -> None:
    """Found by the fuzzer: llama.cpp keys tokens as C strings, so "x\\0a" and "x\\0b" are both "x"
    (GGML_ASSERT in llama-vocab.cpp). An empty text becomes "[EMPTY_<id>]", which must not clash either."""
    v = builders.vocab()
    tokens = list(v.tokens)
    tokens[-2], tokens[-1] = "kilo\0one", "kilo\0two"
    err = error_of(tiny(tmp_path / "nul.gguf", vocab=synth.Vocab(tuple(tokens), v.types)))
    assert "'kilo' appears twice" in str(err) and "first NUL byte" in str(err)
    tokens = list(v.tokens)
    tokens[-2], tokens[-1] = "", f"[EMPTY_{len(tokens) - 2}]"
    assert "appears twice" in str(error_of(tiny(tmp_path / "empty.gguf", vocab=synth.Vocab(tuple(tokens), v.types))))


def test_sentencepiece_vocabulary_must_spell_every_byte(tmp_path: Path) -> None:
    """Found by the fuzzer: with a byte that has neither a <0xXX> token nor a one-character token,
    llama.cpp's SentencePiece tokenizer throws std::out_of_range through its C API and the process
    aborts at the first text that needs that byte."""
    v = builders.vocab()
    tokens = list(v.tokens)
    tokens[v.byte_id(0x0A)] = "<0x0A-renamed>"
    err = error_of(tiny(tmp_path / "model.gguf", vocab=synth.Vocab(tuple(tokens), v.types)))
    assert "no token for byte 0x0a (1 of 256 bytes missing)" in str(err)
    # A one-character token stands in for its byte, as in llama_vocab::byte_to_token.
    tokens[v.byte_id(ord("A"))] = "<0x41-renamed>"
    assert "byte 0x0a" in str(error_of(tiny(tmp_path / "model.gguf", vocab=synth.Vocab(tuple(tokens), v.types))))


def test_misplaced_tensor_offset_is_damage(tmp_path: Path) -> None:
    path = tiny(tmp_path / "model.gguf")
    reader = gguf.GGUFReader(path)
    field = reader.tensors[1].field  # its last part is the data offset
    at = field.offset + sum(int(part.nbytes) for part in field.parts) - 8
    data = bytearray(path.read_bytes())
    data[at : at + 8] = struct.pack("<Q", 1 << 40)
    path.write_bytes(bytes(data))
    assert "is at data offset" in str(error_of(path))


def test_unknown_tensor_type(tmp_path: Path) -> None:
    path = tiny(tmp_path / "model.gguf")
    reader = gguf.GGUFReader(path)
    field = reader.tensors[0].field
    at = field.offset + sum(int(part.nbytes) for part in field.parts) - 12  # type, then offset
    data = bytearray(path.read_bytes())
    data[at : at + 4] = struct.pack("<I", 4)  # GGML_TYPE_Q4_2, long removed
    path.write_bytes(bytes(data))
    err = error_of(path)
    assert "ggml type 4" in str(err) and err.kind == "unsupported"


# --- the architecture list ---


def test_architecture_list_matches_vendored_llama_cpp() -> None:
    source = read_sdist_member("vendor/llama.cpp/src/llama-arch.cpp")
    table = re.search(r"LLM_ARCH_NAMES\s*=\s*\{(.*?)\n\};", source, re.S)
    assert table is not None
    names = set(re.findall(r'\{\s*LLM_ARCH_\w+\s*,\s*"([^"]+)"', table.group(1))) - {"(unknown)"}
    assert names == hparams._LLAMA_ARCHS
    assert set(gguf.MODEL_ARCH_NAMES.values()) <= hparams._LLAMA_ARCHS


# --- memory ---


def test_kv_cache_matches_llama_cpp_sizes(oracle_gguf: Path) -> None:
    """llama.cpp 0.3.36 reports for this fixture at n_ctx 1000 (padded to 1024), n_ubatch 512:
    target KV 0.75 MiB (1 full layer x 1024 cells) + 0.56 MiB (1 sliding layer x 768 cells),
    draft KV 1.69 MiB (3 sliding head layers x 768 cells)."""
    info = inspect_model(oracle_gguf)
    est = estimate_memory(info, 1000)
    cell = 2 * 96 * 2 * 2  # 2 KV heads of 96 values, K and V, f16
    assert est.kv_cache == cell * (1024 + 768)
    assert est.weights == info.weights_bytes
    without = estimate_memory(info, 1000, mtp=False)
    assert (without.mtp_context, without.weights) == (0, info.trunk_bytes)
    assert est.mtp_context > cell * 3 * 768
    full = estimate_memory(info, 1000, swa_full=True)
    assert full.kv_cache == cell * 2 * 1024
    q8 = estimate_memory(info, 1000, kv_type_bytes=34 / 32)
    assert q8.kv_cache < est.kv_cache
    assert est.total == est.weights + est.kv_cache + est.compute + est.mtp_context


def test_estimate_without_usable_heads_has_no_draft_context(absent_gguf: Path, noheads_gguf: Path) -> None:
    for path in (absent_gguf, noheads_gguf):
        est = estimate_memory(inspect_model(path), 2048)
        assert est.mtp_context == 0


def test_only_full_attention_layers_grow_with_context(oracle_gguf: Path) -> None:
    info = inspect_model(oracle_gguf)
    cell = 2 * 96 * 2 * 2
    assert estimate_memory(info, 65536).kv_cache == cell * (65536 + 768)
    assert estimate_memory(info, 65536, n_ubatch=64).kv_cache == cell * (65536 + 256)
    assert estimate_memory(info, 0).kv_cache == estimate_memory(info, info.context_length).kv_cache


MEASURE = r"""
import json, sys
from pathlib import Path
from engine import llama
from engine.gguf import inspect_model

def rss():
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmRSS:"))

path, n_ctx = Path(sys.argv[1]), int(sys.argv[2])
before = rss()
model = llama.Model(inspect_model(path).parts, load_mtp=True)
params = llama.ContextParams(n_ctx=n_ctx, n_threads=2)
target = llama.Context(model, params, mtp=False)
draft = llama.Context(model, params, mtp=True)
target.keep_hidden_rows(True)
prompt = [(7 * i) % model.n_vocab for i in range(params.n_ubatch)]
target.decode(prompt, 0, outputs="last")  # one full ubatch: every weight and activation page is touched
hidden = target.hidden_rows(len(prompt))
for head in range(model.n_mtp_layers):  # each head runs its own weights
    draft.select_head(head)
    draft.remove_from(0)
    draft.decode(prompt, 0, outputs="none", hidden=hidden)
target.decode(prompt[:4], len(prompt), outputs="all")  # a verify batch
print(json.dumps({"growth": rss() - before}))
"""


@pytest.fixture(scope="module")
def measured_gguf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Weights dominate (183 MB of random F32), as in a real model; three heads, eight trunk layers."""
    path = tmp_path_factory.mktemp("measured") / "measured.gguf"
    v = builders.vocab()
    s = synth.StepShape(n_vocab=len(v), n_embd=512, n_layer=8, n_ff=2048, n_swa=16, n_mtp=3)
    rng = np.random.default_rng(0)

    def matrix(rows: int, cols: int) -> synth.F32:
        return (rng.standard_normal((rows, cols)) * 0.02).astype(np.float32)

    def block() -> synth.Block:
        return synth.random_block(s, rng, 0.02)

    ones = np.ones(s.n_embd, np.float32)
    heads = [
        synth.MtpHead(block(), matrix(s.n_embd, 2 * s.n_embd), ones, ones, ones, matrix(len(v), s.n_embd))
        for _ in range(s.n_mtp)
    ]
    blocks = [block() for _ in range(s.n_layer)]
    weights = synth.StepWeights(matrix(len(v), s.n_embd), ones, matrix(len(v), s.n_embd), blocks, heads)
    return synth.write_step35(path, s, v, weights, name="measured")


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads VmRSS from /proc")
@pytest.mark.parametrize("n_ctx", [1024, 4096])
def test_estimate_matches_llama_cpp_resident_memory(measured_gguf: Path, n_ctx: int) -> None:
    path = measured_gguf
    info = inspect_model(path)
    est = estimate_memory(info, n_ctx)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    cmd = [sys.executable, "-c", MEASURE, str(path), str(n_ctx)]
    run = subprocess.run(cmd, capture_output=True, text=True, env=env)
    assert run.returncode == 0, run.stderr[-2000:]
    growth = json.loads(run.stdout.strip().splitlines()[-1])["growth"]
    ratio = est.total / growth
    print(f"n_ctx {n_ctx}: estimate {est.total / MiB:.1f} MiB, resident {growth / MiB:.1f} MiB, ratio {ratio:.3f}")
    assert 0.85 <= ratio <= 1.15


def test_free_memory_and_verdict(monkeypatch: pytest.MonkeyPatch) -> None:
    free = free_memory_bytes()
    assert isinstance(free, int) and free >= 0
    if sys.platform.startswith("linux"):
        assert free > 0
    assert memory_verdict(50, 100) == "fits"
    assert memory_verdict(81, 100) == "tight"
    assert memory_verdict(101, 100) == "wont_fit"
    assert memory_verdict(1, 0) == "tight"  # unknown free memory: warn, do not block

    def broken() -> int:
        raise OSError("no /proc")

    monkeypatch.setattr(memory, "_linux_available", broken)
    monkeypatch.setattr(memory, "_macos_available", broken)
    monkeypatch.setattr(memory, "_windows_available", broken)
    assert free_memory_bytes() >= 0  # never raises
