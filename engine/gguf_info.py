"""Inspect a GGUF model file without loading its weights, and estimate what running it costs.

The file is parsed here rather than with `gguf.GGUFReader`: the reader builds numpy
views per array element, which takes about 19 s on a file with a 262k-token vocabulary
and 300k merges, and it cannot say *which* byte of a truncated file is missing. This
parser reads only the metadata and tensor directory (a few MB even for 100 GB models),
checks every length against the file size before trusting it, and applies the limits
that llama.cpp 0.3.36 applies (ggml/src/gguf.cpp), plus the checks where llama.cpp
would abort the whole process instead of returning an error (src/llama-model.cpp
GGML_ASSERTs, duplicate vocabulary entries in src/llama-vocab.cpp).

Every problem surfaces as ModelFileError, whose message is one line that names the
file, the problem and the fix.
"""

from __future__ import annotations

import ctypes
import os
import re
import stat
import struct
import subprocess
import sys
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Literal

import gguf

LLAMA_CPP_VERSION = "0.3.36"

ErrorKind = Literal["missing", "unreadable", "not_gguf", "truncated", "damaged", "unsupported", "mtp_only", "mismatch"]
MtpWeights = Literal["embedded", "separate", "absent", "none"]
Verdict = Literal["fits", "tight", "wont_fit"]


class ModelFileError(Exception):
    """A model file llama.cpp would refuse (or crash on). str(e) is one line: problem and fix.

    `kind` lets a caller react without parsing the text, e.g. offer to use an
    MTP-only file as the separate MTP file ("mtp_only").
    """

    def __init__(self, message: str, kind: ErrorKind = "damaged") -> None:
        super().__init__(" ".join(message.split()))
        self.kind: ErrorKind = kind


@dataclass(frozen=True)
class LayerShape:
    """One decoder block, as llama.cpp sizes its KV cache and compute graph."""

    n_head: int
    n_head_kv: int
    head_dim_k: int
    head_dim_v: int
    swa: bool  # sliding-window attention: the cache keeps only about n_swa + n_ubatch cells
    n_ff: int  # dense feed-forward width (0 for pure MoE blocks)


@dataclass(frozen=True)
class ModelInfo:
    """What a model file (and its separate MTP file, if any) holds, read without loading weights."""

    path: Path
    architecture: str
    name: str | None
    n_params: int  # tensor elements in the main file, plus those of the MTP file it does not share
    file_bytes: int
    mtp_file_bytes: int | None
    quantization: str
    context_length: int
    n_layer: int  # trunk layers: block_count - nextn_predict_layers
    n_embd: int
    n_vocab: int
    n_mtp_heads: int  # heads usable for drafting (declared by the file that holds them)
    mtp_weights: MtpWeights
    mtp_path: Path | None
    has_chat_template: bool
    n_swa: int
    is_mtp_only: bool  # always False here: inspect_model refuses MTP-only files as the main model
    weights_bytes: int  # tensor data in the main file plus the whole MTP file
    # What estimate_memory needs:
    layers: tuple[LayerShape, ...]  # trunk blocks, then the MTP heads that will run
    trunk_bytes: int  # weights llama.cpp maps without MTP (heads are skipped)
    mtp_bytes: int  # weights that loading the heads adds: embedded head blocks, or the whole MTP file
    n_expert: int
    n_expert_used: int
    n_ff_exp: int
    n_ff_shexp: int


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes of memory, by what uses them."""

    weights: int
    kv_cache: int  # the target context's cache
    compute: int  # target compute and output buffers plus runtime overhead (vocab tables, graph metadata)
    mtp_context: int  # draft context: its KV cache (head layers only) and compute buffer
    total: int


# --- limits (llama.cpp 0.3.36: ggml/src/gguf.cpp, ggml/include/ggml.h, src/llama-hparams.h) ---

_GGUF_MAGIC = b"GGUF"
_MAX_STRING = 1 << 30
_MAX_ARRAY = 1 << 30
_MAX_NAME = 64
_MAX_DIMS = 4
_MAX_LAYERS = 512
_MAX_EXPERTS = 1024
_MIN_KV_BYTES = 12  # key length (8) + type (4), before key text and value
_MIN_TENSOR_INFO_BYTES = 24  # name length (8) + n_dims (4) + type (4) + offset (8)
_HEADER_BYTES = 24  # magic, version, tensor count, kv count
# Ours, not llama.cpp's: no real vocabulary or merge list comes near this, and a corrupt
# count over zero-filled bytes would otherwise keep the walk busy for minutes.
_MAX_STRING_ARRAY = 1 << 24
_SMALL_ARRAY = 4096  # numeric arrays up to this length are decoded (per-layer values)
_ROPE_SCALING_TYPES = frozenset({"none", "linear", "yarn", "longrope"})

# ggml types: gguf's table plus what the vendored ggml knows and gguf 0.19 does not.
_GGML_TYPES: dict[int, tuple[str, int, int]] = {
    int(t): (t.name, block, size) for t, (block, size) in gguf.GGML_QUANT_SIZES.items()
}
_GGML_TYPES[42] = ("Q2_0", 64, 18)  # GGML_TYPE_Q2_0: 64 weights in 2 + 16 bytes
_FILE_TYPES: dict[int, str] = {
    int(ft): ft.name.removeprefix("MOSTLY_").removeprefix("ALL_")
    for ft in gguf.LlamaFileType
    if ft != gguf.LlamaFileType.GUESSED
}
_FILE_TYPES[41] = "Q2_0"  # LLAMA_FTYPE_MOSTLY_Q2_0
_FTYPE_GUESSED = int(gguf.LlamaFileType.GUESSED)

# LLM_ARCH_NAMES from the vendored src/llama-arch.cpp. gguf 0.19's MODEL_ARCH_NAMES lacks
# 27 of these (deepseek4, minimax-m3, ...), so it would refuse models llama.cpp runs.
_LLAMA_ARCH_NAMES = """
    clip llama llama4 deci falcon grok gpt2 gptj gptneox mpt baichuan starcoder refact bert
    modern-bert nomic-bert nomic-bert-moe neo-bert jina-bert-v2 jina-bert-v3 eurobert bloom
    stablelm qwen qwen2 qwen2moe qwen2vl qwen3 qwen3moe qwen3next qwen3vl qwen3vlmoe qwen35
    qwen35moe qwen4exp phi2 phi3 phimoe plamo plamo2 plamo3 codeshell orion internlm2 minicpm
    minicpm3 gemma gemma2 gemma3 gemma3n gemma4 gemma4-assistant gemma-embedding starcoder2
    mamba mamba2 maple jamba falcon-h1 xverse command-r cohere2 cohere2moe dbrx olmo olmo2
    olmoe muse-glimmer openelm arctic deepseek deepseek2 deepseek2-ocr deepseek32 deepseek4
    chatglm glm4 glm4moe glm-dsa bitnet t5 t5encoder jais jais2 nemotron nemotron_h
    nemotron_h_moe exaone exaone4 exaone-moe rwkv6 rwkv6qwen2 rwkv7 arwkv7 granite granitemoe
    granitehybrid graniteswitch granite_swa chameleon wavtokenizer-dec plm bailingmoe
    bailingmoe2 bailingmoe3 dots1 dots3note arcee afmoe laguna ernie4_5 ernie4_5-moe
    hunyuan-moe hunyuan-dense hunyuan_vl hy_v3 hy_v4 smollm3 gpt-oss lfm2 lfm2moe dream
    smallthinker llada llada-moe seed_oss grovemoe apertus minimax-01 hrm_text minimax-m2
    minimax-m3 cogvlm rnd1 pangu-embedded mistral3 eagle3 dflash mistral4 paddleocr mimo2
    step35 spark2_5 llama-embed maincoder kimi-linear kimi-k3 glm5-next talkie mellum
    nanbeige qwen3tts pockettts
"""
_LLAMA_ARCHS = frozenset(_LLAMA_ARCH_NAMES.split())

# Architectures whose sliding-window layout llama.cpp hard-codes when the file has no
# sliding_window_pattern key: (n_pattern, dense_first), from load_swa_pattern() calls in
# the vendored src/models/*.cpp.
_SWA_DEFAULT_PATTERNS: dict[str, tuple[int, bool]] = {
    "afmoe": (4, False),
    "cohere2": (4, False),
    "cohere2moe": (4, True),
    "exaone-moe": (4, False),
    "exaone4": (4, False),
    "gemma-embedding": (6, False),
    "gemma2": (2, False),
    "gemma3": (6, False),
    "gemma3n": (5, False),
    "laguna": (4, True),
    "llama4": (4, False),
    "mellum": (4, False),
    "modern-bert": (3, True),
    "muse-glimmer": (4, False),
    "olmo2": (4, False),
    "gpt-oss": (2, False),
    "plamo3": (8, False),
    "smallthinker": (4, True),
    "phi3": (1, False),
}

_VT = gguf.GGUFValueType
_SCALARS: dict[int, struct.Struct] = {
    _VT.UINT8: struct.Struct("<B"),
    _VT.INT8: struct.Struct("<b"),
    _VT.UINT16: struct.Struct("<H"),
    _VT.INT16: struct.Struct("<h"),
    _VT.UINT32: struct.Struct("<I"),
    _VT.INT32: struct.Struct("<i"),
    _VT.FLOAT32: struct.Struct("<f"),
    _VT.BOOL: struct.Struct("<b"),
    _VT.UINT64: struct.Struct("<Q"),
    _VT.INT64: struct.Struct("<q"),
    _VT.FLOAT64: struct.Struct("<d"),
}
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")
_BLOCK_RE = re.compile(r"blk\.(\d+)\.")
_TOKENS_KEY = "tokenizer.ggml.tokens"


# --- reading ---


@dataclass(frozen=True)
class _Array:
    item_type: int
    count: int
    items: tuple[int | float | bool, ...] | None  # decoded only for short numeric arrays


@dataclass(frozen=True)
class _Tensor:
    name: str
    type_name: str
    n_elements: int
    n_bytes: int


@dataclass(frozen=True)
class _Value:
    type: int
    value: object  # int | float | bool | str | _Array


class _Reader:
    """Bounds-checked little-endian reads through a window over the file.

    Plain reads rather than mmap: a mapped file that shrinks while we read it would
    kill the process with SIGBUS.
    """

    _CHUNK = 1 << 20

    def __init__(self, f: BinaryIO, size: int, name: str) -> None:
        self._f = f
        self.size = size
        self.name = name
        self.pos = 0
        self._window = b""
        self._window_start = 0

    def truncated(self, what: str, end: int) -> ModelFileError:
        return ModelFileError(
            f"{self.name} is truncated: {what} ends at byte {end:,} but the file has {self.size:,} bytes; "
            "download it again",
            "truncated",
        )

    def _advance(self, n: int, what: str) -> int:
        start, end = self.pos, self.pos + n
        if end > self.size:
            raise self.truncated(what, end)
        self.pos = end
        return start

    def skip(self, n: int, what: str) -> None:
        self._advance(n, what)

    def read(self, n: int, what: str) -> bytes:
        start = self._advance(n, what)
        off = start - self._window_start
        if off < 0 or off + n > len(self._window):
            self._f.seek(start)
            self._window = self._f.read(max(n, self._CHUNK))
            self._window_start = start
            off = 0
            if len(self._window) < n:  # the file shrank since we measured it
                raise self.truncated(what, start + n)
        return self._window[off : off + n]

    def unpack(self, fmt: struct.Struct, what: str) -> int | float:
        value: int | float = fmt.unpack(self.read(fmt.size, what))[0]
        return value

    def u32(self, what: str) -> int:
        return int(self.unpack(_U32, what))

    def u64(self, what: str) -> int:
        return int(self.unpack(_U64, what))

    def string_len(self, what: str) -> int:
        n = self.u64(what)
        if n > _MAX_STRING:
            raise ModelFileError(
                f"{self.name} is damaged: {what} claims {n:,} bytes (llama.cpp reads at most {_MAX_STRING:,}); "
                "download it again",
            )
        return n

    def string(self, what: str) -> bytes:
        return self.read(self.string_len(what), what)


@dataclass
class _Gguf:
    """The parsed metadata and tensor directory of one file."""

    path: Path
    size: int
    kv: dict[str, _Value]
    tensors: list[_Tensor]
    n_tokens: int | None
    token_texts: frozenset[bytes]  # the vocabulary as llama.cpp keys it (see _check_tokens)

    @property
    def name(self) -> str:
        return self.path.name

    def damaged(self, problem: str) -> ModelFileError:
        return ModelFileError(f"{self.name}: {problem}; the file is damaged", "damaged")

    def _wrong_type(self, key: str, found: _Value, expected: str) -> ModelFileError:
        return self.damaged(f"key {key} has type {_type_name(found)}, expected {expected}")

    def string(self, key: str) -> str | None:
        v = self.kv.get(key)
        if v is None:
            return None
        if v.type != _VT.STRING:
            raise self._wrong_type(key, v, "STRING")
        assert isinstance(v.value, str)
        return v.value

    def uint(self, key: str) -> int | None:
        """A UINT32 key: llama.cpp's get_key<uint32_t> takes no other integer type."""
        v = self.kv.get(key)
        if v is None:
            return None
        if v.type != _VT.UINT32:
            raise self._wrong_type(key, v, "UINT32 (an integer)")
        assert isinstance(v.value, int)
        return v.value

    def required_uint(self, key: str) -> int:
        value = self.uint(key)
        if value is None:
            raise self.damaged(f"key {key}, which llama.cpp requires, is missing")
        return value

    def per_layer(self, key: str, n: int, default: Sequence[int]) -> list[int]:
        """llama.cpp's get_key_or_arr: one UINT32 for all layers, or one integer per layer."""
        v = self.kv.get(key)
        if v is None:
            return list(default)
        if v.type == _VT.UINT32:
            assert isinstance(v.value, int)
            return [v.value] * n
        arr = v.value
        if not isinstance(arr, _Array) or arr.item_type not in (_VT.UINT32, _VT.INT32, _VT.BOOL):
            raise self._wrong_type(key, v, "UINT32 or an array of integers")
        if arr.count != n or arr.items is None:
            raise self.damaged(f"key {key} has {arr.count:,} entries for {n} layers")
        return [int(x) for x in arr.items]


def _type_name(v: _Value) -> str:
    if isinstance(v.value, _Array):
        return f"ARRAY of {_VT(v.value.item_type).name}"
    return _VT(v.type).name


def _check_path(path: Path) -> int:
    """The file's size, after ruling out what is not a readable regular file."""
    name = path.name or str(path)
    try:
        st = path.stat()
    except FileNotFoundError:
        raise ModelFileError(f"{name} does not exist; check the path", "missing") from None
    except PermissionError:
        raise _unreadable(name, "permission denied") from None
    except OSError as e:
        raise _unreadable(name, e.strerror or str(e)) from None
    if stat.S_ISDIR(st.st_mode):
        raise ModelFileError(f"{name} is a directory; choose the .gguf file inside it", "not_gguf")
    if not stat.S_ISREG(st.st_mode):  # a FIFO or device would block or never end
        raise ModelFileError(f"{name} is not a regular file; choose a .gguf model file", "not_gguf")
    if st.st_size == 0:
        raise ModelFileError(f"{name} is empty; download it again", "truncated")
    return st.st_size


def _load(path: Path) -> _Model:
    """Parse and validate one file; every failure, foreseen or not, becomes a ModelFileError."""
    size = _check_path(path)
    try:
        with path.open("rb") as f:
            parsed = _parse(_Reader(f, size, path.name), path)
        return _model(parsed)
    except ModelFileError:
        raise
    except PermissionError:
        raise _unreadable(path.name, "permission denied") from None
    except OSError as e:
        raise _unreadable(path.name, e.strerror or str(e)) from None
    except Exception as e:  # anything else is a shape of damage we did not foresee; never crash on it
        raise ModelFileError(
            f"{path.name} could not be read as GGUF ({type(e).__name__}: {e}); the file is damaged"
        ) from None


def _unreadable(name: str, reason: str) -> ModelFileError:
    fix = "check the file's permissions" if reason == "permission denied" else "check the disk and the path"
    return ModelFileError(f"{name} cannot be read ({reason}); {fix}", "unreadable")


def _parse(r: _Reader, path: Path) -> _Gguf:
    name = path.name
    head = r.read(min(4, r.size), "the magic number")
    if head != _GGUF_MAGIC:
        if _GGUF_MAGIC.startswith(head):
            raise r.truncated("the file header", _HEADER_BYTES)
        raise ModelFileError(
            f"{name} is not a GGUF file (it starts with {head!r}); choose a .gguf model file", "not_gguf"
        )
    version = r.u32("the file header")
    if version == 0:
        raise ModelFileError(f"{name} has GGUF version 0; the file is damaged")
    if version & 0xFFFF == 0:
        raise ModelFileError(
            f"{name} is a big-endian GGUF file, which llama.cpp cannot run on this computer; "
            "download the little-endian version",
            "unsupported",
        )
    if version == 1:
        raise ModelFileError(
            f"{name} is a GGUF version 1 file, which llama.cpp no longer reads; download a current conversion",
            "unsupported",
        )
    if version not in (2, 3):
        raise ModelFileError(
            f"{name} is GGUF version {version}; llama.cpp {LLAMA_CPP_VERSION} reads versions 2 and 3; "
            "download a file made for this llama.cpp",
            "unsupported",
        )
    n_tensors = r.u64("the file header")
    n_kv = r.u64("the file header")
    needed = _HEADER_BYTES + n_kv * _MIN_KV_BYTES + n_tensors * _MIN_TENSOR_INFO_BYTES
    if needed > r.size:
        raise ModelFileError(
            f"{name} is damaged or truncated: its header lists {n_tensors:,} tensors and {n_kv:,} metadata keys, "
            f"which need at least {needed:,} bytes, but the file has {r.size:,}; download it again",
            "truncated",
        )

    kv: dict[str, _Value] = {}
    n_tokens: int | None = None
    token_texts: frozenset[bytes] = frozenset()
    for i in range(n_kv):
        key = r.string(f"metadata key {i + 1} of {n_kv}").decode("utf-8", "replace")
        if not key:
            raise ModelFileError(f"{name}: metadata key {i + 1} is empty; the file is damaged")
        if key in kv:
            raise ModelFileError(f"{name}: metadata key {key} appears twice; the file is damaged")
        vtype = r.u32(f"the type of key {key}")
        if vtype == _VT.ARRAY:
            item_type = r.u32(f"the value of key {key}")
            count = r.u64(f"the value of key {key}")
            if key == _TOKENS_KEY and item_type == _VT.STRING:
                n_tokens = count
                token_texts = _check_tokens(r, count)
                value: object = _Array(item_type, count, None)
            else:
                value = _read_array(r, key, item_type, count)
        elif vtype == _VT.STRING:
            value = r.string(f"the value of key {key}").decode("utf-8", "replace")
        elif vtype in _SCALARS:
            value = r.unpack(_SCALARS[vtype], f"the value of key {key}")
            if vtype == _VT.BOOL:
                value = bool(value)
        else:
            raise ModelFileError(f"{name}: key {key} has unknown value type {vtype}; the file is damaged")
        kv[key] = _Value(vtype, value)

    alignment = gguf.GGUF_DEFAULT_ALIGNMENT
    if (v := kv.get("general.alignment")) is not None:
        if v.type != _VT.UINT32:
            raise ModelFileError(
                f"{name}: key general.alignment has type {_type_name(v)}, expected UINT32; the file is damaged"
            )
        assert isinstance(v.value, int)
        alignment = v.value
        if alignment == 0 or alignment & (alignment - 1):
            raise ModelFileError(f"{name}: alignment {alignment} is not a power of two; the file is damaged")

    infos = [_read_tensor_info(r, i, n_tensors) for i in range(n_tensors)]
    seen: set[str] = set()
    for t, _ in infos:
        if t.name in seen:
            raise ModelFileError(f"{name}: tensor {t.name} appears twice; the file is damaged")
        seen.add(t.name)

    data_start = -(-r.pos // alignment) * alignment
    expected = 0
    for t, offset in infos:
        # llama.cpp requires the tensors back to back, in directory order, each padded to the alignment.
        if offset != expected:
            raise ModelFileError(
                f"{name}: tensor {t.name} is at data offset {offset:,}, expected {expected:,}; the file is damaged"
            )
        end = data_start + offset + t.n_bytes
        if end > r.size:
            raise r.truncated(f"tensor {t.name}", end)
        expected += -(-t.n_bytes // alignment) * alignment
    return _Gguf(path, r.size, kv, [t for t, _ in infos], n_tokens, token_texts)


def _read_array(r: _Reader, key: str, item_type: int, count: int) -> _Array:
    what = f"the value of key {key}"
    if item_type == _VT.ARRAY:
        raise ModelFileError(
            f"{r.name}: key {key} holds nested arrays, which llama.cpp cannot read; the file is damaged"
        )
    if count > _MAX_ARRAY:
        raise ModelFileError(f"{r.name}: key {key} claims an array of {count:,} items; the file is damaged")
    if item_type == _VT.STRING:
        _check_string_array_fits(r, key, count)
        for _ in range(count):
            r.skip(r.string_len(what), what)
        return _Array(item_type, count, None)
    fmt = _SCALARS.get(item_type)
    if fmt is None:
        raise ModelFileError(f"{r.name}: key {key} has arrays of unknown type {item_type}; the file is damaged")
    if count > _SMALL_ARRAY:
        r.skip(count * fmt.size, what)
        return _Array(item_type, count, None)
    items = struct.unpack(f"<{count}{fmt.format[1:]}", r.read(count * fmt.size, what))
    if item_type == _VT.BOOL:
        items = tuple(bool(x) for x in items)
    return _Array(item_type, count, items)


def _check_string_array_fits(r: _Reader, key: str, count: int) -> None:
    if count > _MAX_STRING_ARRAY:
        raise ModelFileError(f"{r.name}: key {key} claims an array of {count:,} items; the file is damaged")
    if r.pos + 8 * count > r.size:  # each string has an 8-byte length: fail before walking
        raise r.truncated(f"the value of key {key}", r.pos + 8 * count)


def _check_tokens(r: _Reader, count: int) -> frozenset[bytes]:
    """Walk the vocabulary and return its texts as llama.cpp keys them.

    llama.cpp aborts the process on a repeated token text. It reads each text as a C
    string, so a text ends at its first NUL byte ("ab\0x" and "ab\0y" are both "ab"),
    and an empty text becomes "[EMPTY_<id>]" (llama_vocab::impl::load).
    """
    _check_string_array_fits(r, _TOKENS_KEY, count)
    seen: set[bytes] = set()
    what = f"the value of key {_TOKENS_KEY}"
    for i in range(count):
        raw = r.string(what)
        text = raw.split(b"\0", 1)[0] or f"[EMPTY_{i}]".encode()
        if text in seen:
            shown = text.decode("utf-8", "replace")[:40]
            cut = " (llama.cpp reads a token up to its first NUL byte)" if b"\0" in raw else ""
            raise ModelFileError(
                f"{r.name}: token {i} {shown!r} appears twice in its vocabulary ({_TOKENS_KEY}){cut}, "
                "which makes llama.cpp abort; the file is damaged"
            )
        seen.add(text)
    return frozenset(seen)


def _read_tensor_info(r: _Reader, i: int, n_tensors: int) -> tuple[_Tensor, int]:
    what = f"the description of tensor {i + 1} of {n_tensors}"
    raw = r.string(what)
    name = raw.decode("utf-8", "replace")
    if len(raw) >= _MAX_NAME:
        raise ModelFileError(
            f"{r.name}: tensor name {name[:40]!r}... is {len(raw)} bytes "
            f"(llama.cpp allows {_MAX_NAME - 1}); the file is damaged"
        )
    what = f"the description of tensor {name}"
    n_dims = r.u32(what)
    if n_dims > _MAX_DIMS:
        raise ModelFileError(
            f"{r.name}: tensor {name} has {n_dims:,} dimensions (at most {_MAX_DIMS}); the file is damaged"
        )
    dims = [r.u64(what) for _ in range(n_dims)]
    if any(d >= 1 << 63 for d in dims):  # llama.cpp reads them as int64: negative
        raise ModelFileError(f"{r.name}: tensor {name} has a negative dimension; the file is damaged")
    n_elements = 1
    for d in dims:
        n_elements *= d
    if n_elements >= 1 << 63:
        raise ModelFileError(f"{r.name}: tensor {name} has shape {dims}, too many elements; the file is damaged")
    type_id = r.u32(what)
    known = _GGML_TYPES.get(type_id)
    if known is None:
        raise ModelFileError(
            f"{r.name}: tensor {name} has ggml type {type_id}, which llama.cpp {LLAMA_CPP_VERSION} does not know; "
            "the file is damaged or needs a newer Stride",
            "unsupported",
        )
    type_name, block, type_size = known
    row = dims[0] if dims else 1
    if row % block:
        raise ModelFileError(
            f"{r.name}: tensor {name} has rows of {row} {type_name} values, not whole {block}-value blocks; "
            "the file is damaged"
        )
    offset = r.u64(what)
    return _Tensor(name, type_name, n_elements, n_elements // block * type_size), offset


# --- interpreting ---


@dataclass(frozen=True)
class _Model:
    """The hyperparameters of one file, validated the way llama.cpp loads them."""

    file: _Gguf
    arch: str
    n_layer_all: int
    n_mtp: int
    n_embd: int
    context_length: int
    n_vocab: int
    layers: tuple[LayerShape, ...]
    n_swa: int
    n_expert: int
    n_expert_used: int
    n_ff_exp: int
    n_ff_shexp: int

    @property
    def n_layer(self) -> int:
        return self.n_layer_all - self.n_mtp

    @property
    def tensor_names(self) -> set[str]:
        return {t.name for t in self.file.tensors}

    @property
    def is_mtp_only(self) -> bool:
        return self.n_mtp > 0 and "blk.0.attn_norm.weight" not in self.tensor_names

    def has_head_weights(self) -> bool:
        return f"blk.{self.n_layer}.nextn.eh_proj.weight" in self.tensor_names

    def head_tensors(self) -> list[_Tensor]:
        return [t for t in self.file.tensors if (m := _BLOCK_RE.match(t.name)) and int(m.group(1)) >= self.n_layer]


def _model(f: _Gguf) -> _Model:
    arch = f.string("general.architecture")
    if arch is None:
        raise f.damaged("it has no general.architecture key")
    if arch == "clip":
        raise ModelFileError(
            f"{f.name} is a vision projector (mmproj), not a language model; choose the main model file", "unsupported"
        )
    if arch not in _LLAMA_ARCHS:
        raise ModelFileError(
            f"{f.name} has architecture {arch!r}, which llama.cpp {LLAMA_CPP_VERSION} cannot run; "
            "choose a model of a supported architecture",
            "unsupported",
        )
    if not f.tensors:
        raise ModelFileError(
            f"{f.name} holds no weights (it is a vocabulary-only file); choose a model file", "unsupported"
        )
    # llama.cpp reads these with fixed types and fails the load on any other.
    f.string("general.name")
    f.uint("general.file_type")

    n_layer_all = f.required_uint(f"{arch}.block_count")
    if not 0 < n_layer_all <= _MAX_LAYERS:  # llama.cpp asserts (aborts) on this
        raise f.damaged(f"{arch}.block_count is {n_layer_all:,}, outside 1..{_MAX_LAYERS}")
    n_mtp = f.uint(f"{arch}.nextn_predict_layers") or 0
    if n_mtp > n_layer_all:
        raise f.damaged(f"{arch}.nextn_predict_layers ({n_mtp}) exceeds {arch}.block_count ({n_layer_all})")
    n_embd = f.required_uint(f"{arch}.embedding_length")
    context_length = f.required_uint(f"{arch}.context_length")

    tokens = f.kv.get(_TOKENS_KEY)
    if tokens is None:
        raise f.damaged(f"the vocabulary ({_TOKENS_KEY}) is missing")
    if f.n_tokens is None:
        raise f.damaged(f"key {_TOKENS_KEY} has type {_type_name(tokens)}, expected ARRAY of STRING")
    if f.string("tokenizer.ggml.model") == "llama" and (missing := _missing_byte_tokens(f.token_texts)):
        # A SentencePiece vocabulary spells text it has no token for byte by byte; llama.cpp
        # aborts the process (std::out_of_range) at the first such text if a byte has no token.
        raise f.damaged(
            f"its SentencePiece vocabulary has no token for byte {missing[0]:#04x} "
            f"({len(missing)} of 256 bytes missing), which makes llama.cpp abort on text it cannot spell"
        )

    n_expert = f.uint(f"{arch}.expert_count") or 0
    used = f.per_layer(f"{arch}.expert_used_count", n_layer_all, [0] * n_layer_all)
    n_expert_used = max(used)
    # Each of these is a GGML_ASSERT in llama_model_base::load_hparams: the process would abort.
    if n_expert > _MAX_EXPERTS:
        raise f.damaged(f"{arch}.expert_count is {n_expert:,}, more than llama.cpp's {_MAX_EXPERTS}")
    if n_expert_used > n_expert or (n_expert > 0 and n_expert_used == 0):
        raise f.damaged(f"{arch}.expert_used_count ({n_expert_used}) does not fit {arch}.expert_count ({n_expert})")
    rope_scaling = f.string(f"{arch}.rope.scaling.type")
    if rope_scaling is not None and rope_scaling not in _ROPE_SCALING_TYPES:
        raise f.damaged(f"{arch}.rope.scaling.type is {rope_scaling!r}, which llama.cpp does not know")

    n_head = f.per_layer(f"{arch}.attention.head_count", n_layer_all, [0] * n_layer_all)
    n_head_kv = f.per_layer(f"{arch}.attention.head_count_kv", n_layer_all, n_head)
    n_ff = f.per_layer(f"{arch}.feed_forward_length", n_layer_all, [0] * n_layer_all)
    head_k = f.uint(f"{arch}.attention.key_length") or (n_embd // n_head[0] if n_head[0] else 0)
    head_v = f.uint(f"{arch}.attention.value_length") or (n_embd // n_head[0] if n_head[0] else 0)
    head_k_swa = f.uint(f"{arch}.attention.key_length_swa") or head_k
    head_v_swa = f.uint(f"{arch}.attention.value_length_swa") or head_v
    # ggml's rope asserts (aborts the process at the first decode) when it rotates more values than a
    # head has, or an odd number of them (it rotates pairs).
    for rope_key, head_size in (("rope.dimension_count", head_k), ("rope.dimension_count_swa", head_k_swa)):
        n_rot = f.uint(f"{arch}.{rope_key}")
        if n_rot is not None and head_size and n_rot > head_size:
            raise f.damaged(f"{arch}.{rope_key} ({n_rot}) exceeds the attention head size ({head_size})")
        if n_rot is not None and n_rot % 2:
            raise f.damaged(f"{arch}.{rope_key} ({n_rot}) is odd, but rotary embedding turns pairs of values")
    n_swa = f.uint(f"{arch}.attention.sliding_window") or 0
    swa = _swa_layers(f, arch, n_layer_all, n_layer_all - n_mtp, n_swa)
    layers = tuple(
        LayerShape(
            n_head=n_head[i],
            n_head_kv=n_head_kv[i],
            head_dim_k=head_k_swa if swa[i] else head_k,
            head_dim_v=head_v_swa if swa[i] else head_v,
            swa=swa[i],
            n_ff=n_ff[i],
        )
        for i in range(n_layer_all)
    )
    return _Model(
        file=f,
        arch=arch,
        n_layer_all=n_layer_all,
        n_mtp=n_mtp,
        n_embd=n_embd,
        context_length=context_length,
        n_vocab=f.n_tokens,
        layers=layers,
        n_swa=n_swa,
        n_expert=n_expert,
        n_expert_used=n_expert_used,
        n_ff_exp=f.uint(f"{arch}.expert_feed_forward_length") or 0,
        n_ff_shexp=f.uint(f"{arch}.expert_shared_feed_forward_length") or 0,
    )


def _missing_byte_tokens(texts: frozenset[bytes]) -> list[int]:
    """Bytes llama_vocab::byte_to_token cannot map: neither "<0xXX>" nor the byte itself is a token."""
    return [b for b in range(256) if f"<0x{b:02X}>".encode() not in texts and (b == 0 or bytes([b]) not in texts)]


def _swa_layers(f: _Gguf, arch: str, n_layer_all: int, n_layer: int, n_swa: int) -> list[bool]:
    if n_swa == 0:
        return [False] * n_layer_all
    key = f"{arch}.attention.sliding_window_pattern"
    v = f.kv.get(key)
    if v is not None and isinstance(v.value, _Array):
        arr = v.value
        if arr.item_type not in (_VT.BOOL, _VT.UINT32, _VT.INT32) or arr.items is None or arr.count > _MAX_LAYERS:
            raise f.damaged(
                f"key {key} has type {_type_name(v)} with {arr.count:,} entries, expected up to {_MAX_LAYERS} booleans"
            )
        flags = [bool(x) for x in arr.items[:n_layer_all]]
        return flags + [False] * (n_layer_all - len(flags))
    n_pattern, dense_first = _SWA_DEFAULT_PATTERNS.get(arch, (-1, False))
    if v is not None:
        n_pattern = f.uint(key) or 0
    if n_pattern < 0:
        # No layout we know of: count every layer as full attention, which over- rather than under-estimates.
        return [False] * n_layer_all
    # llama_hparams::set_swa_pattern
    flags = [
        n_pattern == 0 or (il % n_pattern != 0 if dense_first else il % n_pattern < n_pattern - 1)
        for il in range(n_layer)
    ]
    return flags + [False] * (n_layer_all - n_layer)


def _quantization(m: _Model) -> str:
    ftype = m.file.uint("general.file_type")
    if ftype is not None and (ftype & ~_FTYPE_GUESSED) in _FILE_TYPES:
        return _FILE_TYPES[ftype & ~_FTYPE_GUESSED]
    by_type: Counter[str] = Counter()
    for t in m.file.tensors:
        by_type[t.type_name] += t.n_bytes
    return by_type.most_common(1)[0][0] if by_type else "unknown"


def _mismatch(mtp: _Model, main: _Model) -> str | None:
    for what, a, b in (
        ("architecture", mtp.arch, main.arch),
        ("width", mtp.n_embd, main.n_embd),
        ("vocabulary size", mtp.n_vocab, main.n_vocab),
        ("trunk layers", mtp.n_layer, main.n_layer),
    ):
        if a != b:
            return f"{what} {a} vs {b}"
    return None


def _separate_heads(main: _Model, mtp_path: Path) -> _Model:
    mtp = _load(mtp_path)
    a, b = mtp.file.name, main.file.name
    if (problem := _mismatch(mtp, main)) is not None:
        raise ModelFileError(f"{a} does not match {b}: {problem}; choose the MTP file made for {b}", "mismatch")
    if mtp.n_mtp == 0:
        raise ModelFileError(f"{a} declares no MTP heads; choose the MTP file made for {b}", "mismatch")
    if not mtp.has_head_weights():
        raise ModelFileError(
            f"{a} declares MTP heads but holds none of their weights; choose the MTP file made for {b}", "mismatch"
        )
    return mtp


def inspect_model(path: Path, mtp_path: Path | None = None) -> ModelInfo:
    """Read a model's metadata and tensor directory (no weights) and check that llama.cpp can load it.

    mtp_path is a separate file holding the MTP heads. It is used only when the main
    file does not embed them; embedded heads take precedence and mtp_path is then ignored.
    """
    main = _load(path)
    if main.is_mtp_only:
        raise ModelFileError(
            f"{main.file.name} is an MTP-only file (it has the MTP heads but no trunk); "
            "open the main model file and give this one as the separate MTP file",
            "mtp_only",
        )
    mtp_model: _Model | None = None
    if main.n_mtp > 0 and main.has_head_weights():
        weights: MtpWeights = "embedded"
        heads = main.layers[main.n_layer :]
        mtp_bytes = sum(t.n_bytes for t in main.head_tensors())
    elif mtp_path is not None:
        mtp_model = _separate_heads(main, mtp_path)
        weights = "separate"
        heads = mtp_model.layers[mtp_model.n_layer :]
        # llama.cpp loads an MTP-only file as a model of its own: all its tensors are mapped.
        mtp_bytes = sum(t.n_bytes for t in mtp_model.file.tensors)
    else:
        weights = "absent" if main.n_mtp > 0 else "none"
        heads = main.layers[main.n_layer :]
        mtp_bytes = 0

    head_names = {t.name for t in main.head_tensors()}
    separate_tensors = mtp_model.file.tensors if mtp_model else []
    extra = [t for t in separate_tensors if t.name not in main.tensor_names]
    return ModelInfo(
        path=path,
        architecture=main.arch,
        name=main.file.string("general.name"),
        n_params=sum(t.n_elements for t in main.file.tensors) + sum(t.n_elements for t in extra),
        file_bytes=main.file.size,
        mtp_file_bytes=mtp_model.file.size if mtp_model else None,
        quantization=_quantization(main),
        context_length=main.context_length,
        n_layer=main.n_layer,
        n_embd=main.n_embd,
        n_vocab=main.n_vocab,
        n_mtp_heads=len(heads),
        mtp_weights=weights,
        mtp_path=mtp_path if mtp_model else None,
        has_chat_template="tokenizer.chat_template" in main.file.kv,
        n_swa=main.n_swa,
        is_mtp_only=False,
        weights_bytes=sum(t.n_bytes for t in main.file.tensors) + sum(t.n_bytes for t in separate_tensors),
        layers=main.layers[: main.n_layer] + heads,
        trunk_bytes=sum(t.n_bytes for t in main.file.tensors if t.name not in head_names),
        mtp_bytes=mtp_bytes,
        n_expert=main.n_expert,
        n_expert_used=main.n_expert_used,
        n_ff_exp=main.n_ff_exp,
        n_ff_shexp=main.n_ff_shexp,
    )


# --- memory ---

_F32 = 4
_F16 = 2
# Backend start-up, graph metadata for two contexts and the CPU work buffer (measured
# about 13 MB for a small Step3.5 model), plus the vocabulary: llama.cpp keeps about
# 110 bytes per SentencePiece token; BPE merge tables add as much again.
_OVERHEAD_FIXED = 16 << 20
_OVERHEAD_PER_TOKEN = 256


def _pad(n: int, to: int) -> int:
    return -(-n // to) * to


def _kv_bytes(layers: Iterable[LayerShape], n_ctx: int, swa_cells: int, kv_type_bytes: float) -> int:
    total = 0.0
    for layer in layers:
        cells = swa_cells if layer.swa else n_ctx
        total += cells * layer.n_head_kv * (layer.head_dim_k + layer.head_dim_v) * kv_type_bytes
    return int(total)


def _compute_bytes(
    info: ModelInfo,
    layers: Sequence[LayerShape],
    n_ctx: int,
    swa_cells: int,
    n_ubatch: int,
    *,
    draft: bool,
    rows: int,
) -> int:
    """The part of llama.cpp's compute buffer that Stride's decoding actually touches.

    The activations of one n_ubatch graph peak in attention or in the FFN; the envelope
    below (f32 values per token) was fitted to the "CPU compute buffer size" llama.cpp
    0.3.36 reports for 75 Step3.5 graphs of various shapes (flash attention on, as
    "auto" picks on CPU). Allocator fragmentation adds a few hidden-state rows, more in
    the target graph than in the one-block draft graph. The f16 attention masks add 2
    bytes per cache cell per token for each cache (full, sliding) the layers use.

    llama.cpp also reserves logits for all n_ubatch rows (n_vocab * n_ubatch * 4 bytes,
    264 MB for Step 3.5), but Stride asks for logits of at most `rows` rows per batch,
    so those pages are never touched and take no memory; only `rows` rows are counted.
    """
    if not layers:
        return 0
    e = info.n_embd
    q = max(layer.n_head * max(layer.head_dim_k, layer.head_dim_v) for layer in layers)
    kv = max(layer.n_head_kv * (layer.head_dim_k + layer.head_dim_v) for layer in layers)
    ff = max(layer.n_ff for layer in layers)
    if info.n_expert:
        ff = max(ff, info.n_expert_used * info.n_ff_exp + info.n_ff_shexp)
    attn_rows, ffn_rows = (2, 2) if draft else (3, 4)
    per_token = max(
        attn_rows * e + max(2 * q, q + kv),  # Q, K, V and the attention output
        3 * ff + ffn_rows * e + info.n_expert,  # gate, up, activation; router logits
    )
    masks = (n_ctx if any(not x.swa for x in layers) else 0) + (swa_cells if any(x.swa for x in layers) else 0)
    logits = rows * (info.n_vocab + e)
    return n_ubatch * (per_token * _F32 + masks * _F16) + logits * _F32


def estimate_memory(
    info: ModelInfo,
    n_ctx: int,
    *,
    mtp: bool = True,
    n_batch: int = 512,
    n_ubatch: int = 512,
    kv_type_bytes: float = 2.0,
    swa_full: bool = False,
) -> MemoryEstimate:
    """Bytes llama.cpp will use for this model on the CPU with one target context and,
    when mtp and the heads are available, one MTP draft context of the same size.

    n_ctx 0 means the model's training context. kv_type_bytes is per element: 2 for
    f16, 34/32 for q8_0, 18/32 for q4_0.
    """
    use_mtp = mtp and info.mtp_weights in ("embedded", "separate")
    # llama_context pads n_ctx to 256 and caps the batch sizes by it.
    n_ctx = _pad(max(n_ctx or info.context_length, 1), 256)
    n_batch = min(n_batch, n_ctx)
    n_ubatch = min(n_ubatch, n_batch)
    # llama_kv_cache_iswa: the sliding-window cache keeps n_swa + n_ubatch cells, padded to 256.
    swa_cells = n_ctx if swa_full else _pad(min(n_ctx, info.n_swa + n_ubatch), 256)
    trunk = info.layers[: info.n_layer]
    heads = info.layers[info.n_layer :]

    weights = info.trunk_bytes + (info.mtp_bytes if use_mtp else 0)
    kv_cache = _kv_bytes(trunk, n_ctx, swa_cells, kv_type_bytes)
    # The target returns logits for the verify batch (last token + drafts) and, with MTP, keeps
    # the hidden state of every batch row for the heads; the draft returns one row.
    rows = info.n_mtp_heads + 1 if use_mtp else 1
    outputs = _F32 * (info.n_vocab * rows + (info.n_embd * n_batch if use_mtp else 0))
    overhead = _OVERHEAD_FIXED + _OVERHEAD_PER_TOKEN * info.n_vocab
    compute = _compute_bytes(info, trunk, n_ctx, swa_cells, n_ubatch, draft=False, rows=rows) + outputs + overhead
    mtp_context = 0
    if use_mtp:
        # The draft context caches only the head layers (the layer filter in llama_model::create_memory).
        mtp_context = (
            _kv_bytes(heads, n_ctx, swa_cells, kv_type_bytes)
            + _compute_bytes(info, heads, n_ctx, swa_cells, n_ubatch, draft=True, rows=1)
            + _F32 * (info.n_vocab + info.n_embd)
        )
    total = weights + kv_cache + compute + mtp_context
    return MemoryEstimate(weights=weights, kv_cache=kv_cache, compute=compute, mtp_context=mtp_context, total=total)


def free_memory_bytes() -> int:
    """Memory available without swapping (the machine's size if that cannot be told, else 0). Never raises."""
    try:
        if sys.platform.startswith("linux"):
            return _linux_available()
        if sys.platform == "darwin":
            return _macos_available()
        if sys.platform == "win32":
            return _windows_available()
    except Exception:  # a failed probe falls back to the physical memory size below
        pass
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (AttributeError, ValueError, OSError):
        return 0


def _linux_available() -> int:
    available = 0
    with open("/proc/meminfo", encoding="ascii") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                available = int(line.split()[1]) * 1024
                break
    if available <= 0:
        raise OSError("no MemAvailable in /proc/meminfo")
    # In a container, the cgroup v2 limit may be tighter than the machine's free memory.
    try:
        with open("/proc/self/cgroup", encoding="utf-8") as f:
            rel = next((line.strip()[3:] for line in f if line.startswith("0::")), None)
        if rel is not None:
            base = Path("/sys/fs/cgroup") / rel.lstrip("/")
            limit = (base / "memory.max").read_text().strip()
            if limit != "max":
                used = int((base / "memory.current").read_text())
                available = min(available, max(int(limit) - used, 0))
    except (OSError, ValueError):
        pass  # no cgroup v2 accounting here: the machine's figure stands
    return available


def _macos_available() -> int:
    out = subprocess.run(["vm_stat"], capture_output=True, text=True, timeout=5, check=True).stdout
    m = re.search(r"page size of (\d+) bytes", out)
    page = int(m.group(1)) if m else 4096
    pages = 0
    for label in ("Pages free", "Pages inactive", "Pages speculative"):
        if (m := re.search(rf"{label}:\s+(\d+)", out)) is not None:
            pages += int(m.group(1))
    if pages:
        return pages * page
    total = subprocess.run(["sysctl", "-n", "hw.memsize"], capture_output=True, text=True, timeout=5, check=True)
    return int(total.stdout.strip())


def _windows_available() -> int:
    class MemoryStatusEx(ctypes.Structure):
        _fields_ = [
            ("dwLength", ctypes.c_ulong),
            ("dwMemoryLoad", ctypes.c_ulong),
            ("ullTotalPhys", ctypes.c_ulonglong),
            ("ullAvailPhys", ctypes.c_ulonglong),
            ("ullTotalPageFile", ctypes.c_ulonglong),
            ("ullAvailPageFile", ctypes.c_ulonglong),
            ("ullTotalVirtual", ctypes.c_ulonglong),
            ("ullAvailVirtual", ctypes.c_ulonglong),
            ("ullAvailExtendedVirtual", ctypes.c_ulonglong),
        ]

    status = MemoryStatusEx()
    status.dwLength = ctypes.sizeof(MemoryStatusEx)
    if not ctypes.windll.kernel32.GlobalMemoryStatusEx(ctypes.byref(status)):  # type: ignore[attr-defined]
        raise OSError("GlobalMemoryStatusEx failed")
    return int(status.ullAvailPhys)


def memory_verdict(estimate_total: int, free: int) -> Verdict:
    """ "wont_fit" above free memory, "tight" above 80 % of it (or when free is unknown, 0), else "fits"."""
    if free <= 0:
        return "tight"
    if estimate_total > free:
        return "wont_fit"
    if estimate_total > 0.8 * free:
        return "tight"
    return "fits"
