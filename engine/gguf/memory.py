"""What running a model costs in memory, and how much the machine has free."""

from __future__ import annotations

import ctypes
import os
import re
import subprocess
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from engine.gguf.hparams import LayerShape
from engine.gguf.inspect import ModelInfo

Verdict = Literal["fits", "tight", "wont_fit"]


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes of memory, by what uses them."""

    weights: int
    kv_cache: int  # the target context's cache
    compute: int  # target compute and output buffers plus runtime overhead (vocab tables, graph metadata)
    mtp_context: int  # draft context: its KV cache (head layers only) and compute buffer
    total: int


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
    if info.n_expert and not draft:  # the MTP heads are dense blocks, even in an MoE model
        ff = max(ff, info.n_expert_used * info.n_ff_exp + info.n_ff_shexp)
    attn_rows, ffn_rows = (2, 2) if draft else (3, 4)
    per_token = max(
        attn_rows * e + max(2 * q, q + kv),  # Q, K, V and the attention output
        3 * ff + ffn_rows * e + info.n_expert,  # gate, up, activation; router logits
    )
    masks = (n_ctx if any(not x.swa for x in layers) else 0) + (swa_cells if any(x.swa for x in layers) else 0)
    logits = rows * (info.n_vocab + e)
    return n_ubatch * (per_token * _F32 + masks * _F16) + logits * _F32


def effective_context(requested: int, context_length: int) -> int:
    """The context a model runs with: what was asked (0: the trained context), at most the trained context.

    The runtime creates exactly this context, and the memory check and `inspect` count on it.
    context_length 0 (a file that does not say) leaves the request as it is.
    """
    if context_length <= 0:
        return requested
    return min(requested, context_length) if requested > 0 else context_length


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
