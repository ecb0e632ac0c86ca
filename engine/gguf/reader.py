"""Read a GGUF file's metadata and tensor directory, bounds-checked, without its weights.

The file is parsed here rather than with `gguf.GGUFReader`: the reader builds numpy
views per array element, which takes about 19 s on a file with a 262k-token vocabulary
and 300k merges, and it cannot say *which* byte of a truncated file is missing. This
parser reads only the metadata and tensor directory (a few MB even for 100 GB models),
checks every length against the file size before trusting it, and applies the limits
that llama.cpp 0.3.36 applies (ggml/src/gguf.cpp).

Every problem surfaces as ModelFileError, whose message is one line that names the
file, the problem and the fix.
"""

from __future__ import annotations

import stat
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import gguf

from engine.api import ModelFileError

LLAMA_CPP_VERSION = "0.3.36"

# --- limits (llama.cpp 0.3.36: ggml/src/gguf.cpp, ggml/include/ggml.h, src/llama-hparams.h) ---

_GGUF_MAGIC = b"GGUF"
_MAX_STRING = 1 << 30
_MAX_ARRAY = 1 << 30
_MAX_NAME = 64
_MAX_DIMS = 4
MAX_LAYERS = 512  # also what llama.cpp asserts on block_count
_MIN_KV_BYTES = 12  # key length (8) + type (4), before key text and value
_MIN_TENSOR_INFO_BYTES = 24  # name length (8) + n_dims (4) + type (4) + offset (8)
_HEADER_BYTES = 24  # magic, version, tensor count, kv count
# Ours, not llama.cpp's: no real vocabulary or merge list comes near this, and a corrupt
# count over zero-filled bytes would otherwise keep the walk busy for minutes.
_MAX_STRING_ARRAY = 1 << 24
_SMALL_ARRAY = 4096  # numeric arrays up to this length are decoded (per-layer values)

# ggml types: gguf's table plus what the vendored ggml knows and gguf 0.19 does not.
_GGML_TYPES: dict[int, tuple[str, int, int]] = {
    int(t): (t.name, block, size) for t, (block, size) in gguf.GGML_QUANT_SIZES.items()
}
_GGML_TYPES[42] = ("Q2_0", 64, 18)  # GGML_TYPE_Q2_0: 64 weights in 2 + 16 bytes

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
TOKENS_KEY = "tokenizer.ggml.tokens"


# --- reading ---


@dataclass(frozen=True)
class Array:
    item_type: int
    count: int
    items: tuple[int | float | bool, ...] | None  # decoded only for short numeric arrays


@dataclass(frozen=True)
class Tensor:
    name: str
    type_name: str
    n_elements: int
    n_bytes: int
    n_dims: int


@dataclass(frozen=True)
class Value:
    type: int
    value: object  # int | float | bool | str | Array


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
class GgufFile:
    """The parsed metadata and tensor directory of one file."""

    path: Path
    size: int
    kv: dict[str, Value]
    tensors: list[Tensor]
    n_tokens: int | None
    token_texts: frozenset[bytes]  # the vocabulary as llama.cpp keys it (see _check_tokens)
    parts: tuple[Path, ...]  # the files it was read from: itself, or a multi-part set merged (parts.py)

    @property
    def name(self) -> str:
        return self.path.name

    def damaged(self, problem: str) -> ModelFileError:
        return ModelFileError(f"{self.name}: {problem}; the file is damaged", "damaged")

    def _wrong_type(self, key: str, found: Value, expected: str) -> ModelFileError:
        return self.damaged(f"key {key} has type {type_name(found)}, expected {expected}")

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
        if not isinstance(arr, Array) or arr.item_type not in (_VT.UINT32, _VT.INT32, _VT.BOOL):
            raise self._wrong_type(key, v, "UINT32 or an array of integers")
        if arr.count != n or arr.items is None:
            raise self.damaged(f"key {key} has {arr.count:,} entries for {n} layers")
        return [int(x) for x in arr.items]


def type_name(v: Value) -> str:
    if isinstance(v.value, Array):
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
        raise unreadable(name, "permission denied") from None
    except OSError as e:
        raise unreadable(name, e.strerror or str(e)) from None
    if stat.S_ISDIR(st.st_mode):
        raise ModelFileError(f"{name} is a directory; choose the .gguf file inside it", "not_gguf")
    if not stat.S_ISREG(st.st_mode):  # a FIFO or device would block or never end
        raise ModelFileError(f"{name} is not a regular file; choose a .gguf model file", "not_gguf")
    if st.st_size == 0:
        raise ModelFileError(f"{name} is empty; download it again", "truncated")
    return st.st_size


def read_gguf(path: Path) -> GgufFile:
    """Parse one file's header; every failure, foreseen or not, becomes a ModelFileError."""
    size = _check_path(path)
    try:
        with path.open("rb") as f:
            return _parse(_Reader(f, size, path.name), path)
    except ModelFileError:
        raise
    except PermissionError:
        raise unreadable(path.name, "permission denied") from None
    except OSError as e:
        raise unreadable(path.name, e.strerror or str(e)) from None
    except Exception as e:  # anything else is a shape of damage we did not foresee; never crash on it
        raise ModelFileError(
            f"{path.name} could not be read as GGUF ({type(e).__name__}: {e}); the file is damaged"
        ) from None


def unreadable(name: str, reason: str) -> ModelFileError:
    fix = "check the file's permissions" if reason == "permission denied" else "check the disk and the path"
    return ModelFileError(f"{name} cannot be read ({reason}); {fix}", "unreadable")


def _parse(r: _Reader, path: Path) -> GgufFile:
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

    kv: dict[str, Value] = {}
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
            if key == TOKENS_KEY and item_type == _VT.STRING:
                n_tokens = count
                token_texts = _check_tokens(r, count)
                value: object = Array(item_type, count, None)
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
        kv[key] = Value(vtype, value)

    alignment = gguf.GGUF_DEFAULT_ALIGNMENT
    if (v := kv.get("general.alignment")) is not None:
        if v.type != _VT.UINT32:
            raise ModelFileError(
                f"{name}: key general.alignment has type {type_name(v)}, expected UINT32; the file is damaged"
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
    return GgufFile(path, r.size, kv, [t for t, _ in infos], n_tokens, token_texts, (path,))


def _read_array(r: _Reader, key: str, item_type: int, count: int) -> Array:
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
        return Array(item_type, count, None)
    fmt = _SCALARS.get(item_type)
    if fmt is None:
        raise ModelFileError(f"{r.name}: key {key} has arrays of unknown type {item_type}; the file is damaged")
    if count > _SMALL_ARRAY:
        r.skip(count * fmt.size, what)
        return Array(item_type, count, None)
    items = struct.unpack(f"<{count}{fmt.format[1:]}", r.read(count * fmt.size, what))
    if item_type == _VT.BOOL:
        items = tuple(bool(x) for x in items)
    return Array(item_type, count, items)


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
    _check_string_array_fits(r, TOKENS_KEY, count)
    seen: set[bytes] = set()
    what = f"the value of key {TOKENS_KEY}"
    for i in range(count):
        raw = r.string(what)
        text = raw.split(b"\0", 1)[0] or f"[EMPTY_{i}]".encode()
        if text in seen:
            shown = text.decode("utf-8", "replace")[:40]
            cut = " (llama.cpp reads a token up to its first NUL byte)" if b"\0" in raw else ""
            raise ModelFileError(
                f"{r.name}: token {i} {shown!r} appears twice in its vocabulary ({TOKENS_KEY}){cut}, "
                "which makes llama.cpp abort; the file is damaged"
            )
        seen.add(text)
    return frozenset(seen)


def _read_tensor_info(r: _Reader, i: int, n_tensors: int) -> tuple[Tensor, int]:
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
    return Tensor(name, type_name, n_elements, n_elements // block * type_size, n_dims), offset
