"""A loaded model, its contexts (decode, hidden rows, MTP head selection) and the sampler chain."""

from __future__ import annotations

import ctypes
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import llama_cpp
import numpy as np
import numpy.typing as npt
from llama_cpp import llama_cpp_ext

from engine.api import KV_TYPES, LoadCancelled, SamplerParams
from engine.llama.backend import LlamaError, cpu_has_amx, init_backend, load_logged


class Model:
    """A loaded GGUF model (weights, vocabulary, metadata)."""

    def __init__(
        self,
        parts: Sequence[Path],
        *,
        load_mtp: bool,
        n_gpu_layers: int = 0,
        progress: Callable[[float], bool] | None = None,
    ) -> None:
        init_backend()
        params = llama_cpp.llama_model_default_params()
        params.n_gpu_layers = n_gpu_layers
        params.load_mtp = load_mtp
        params.use_extra_bufts = not cpu_has_amx()
        cancelled = False

        def on_progress(fraction: float, _user: ctypes.c_void_p) -> bool:
            nonlocal cancelled
            keep_going = progress(float(fraction)) if progress else True
            cancelled = not keep_going
            return keep_going

        callback = llama_cpp.llama_progress_callback(on_progress)
        params.progress_callback = callback
        if len(parts) == 1:
            ptr, reason = load_logged(lambda: llama_cpp.llama_model_load_from_file(str(parts[0]).encode(), params))
        else:  # the parts in order, so renamed parts load too
            names = (ctypes.c_char_p * len(parts))(*(str(p).encode() for p in parts))
            ptr, reason = load_logged(lambda: llama_cpp.llama_model_load_from_splits(names, len(parts), params))
        if not ptr:
            if cancelled:
                raise LoadCancelled(str(parts[0]))
            raise LlamaError(f"llama.cpp could not load {parts[0].name}: {reason}")
        self.ptr = ptr
        self.path = parts[0]
        self.vocab = llama_cpp.llama_model_get_vocab(ptr)
        self.n_vocab = int(llama_cpp.llama_vocab_n_tokens(self.vocab))
        self.n_embd_out = int(llama_cpp.llama_model_n_embd_out(ptr))
        self.n_mtp_layers = int(llama_cpp.llama_model_n_layer_nextn(ptr))
        self.n_swa = int(llama_cpp.llama_model_n_swa(ptr))
        self.add_bos = bool(llama_cpp.llama_vocab_get_add_bos(self.vocab))
        self.bos = int(llama_cpp.llama_vocab_bos(self.vocab))
        self.eos = int(llama_cpp.llama_vocab_eos(self.vocab))
        self._pieces: dict[int, bytes] = {}

    def close(self) -> None:
        if self.ptr:
            llama_cpp.llama_model_free(self.ptr)
            self.ptr = None

    def chat_template(self) -> str | None:
        raw = llama_cpp.llama_model_chat_template(self.ptr, None)
        return raw.decode("utf-8", "replace") if raw else None

    def tokenize(self, text: str, *, add_special: bool, parse_special: bool) -> list[int]:
        data = text.encode("utf-8")
        capacity = len(data) + 8
        out = (llama_cpp.llama_token * capacity)()
        n = llama_cpp.llama_tokenize(self.vocab, data, len(data), out, capacity, add_special, parse_special)
        if n < 0:
            capacity = -n
            out = (llama_cpp.llama_token * capacity)()
            n = llama_cpp.llama_tokenize(self.vocab, data, len(data), out, capacity, add_special, parse_special)
        if n < 0:
            raise LlamaError("tokenization failed")
        return list(out[:n])

    def piece(self, token: int) -> bytes:
        """Raw bytes of one token, special tokens rendered (cached: the hot path calls it per token)."""
        cached = self._pieces.get(token)
        if cached is None:
            buf = ctypes.create_string_buffer(256)
            n = llama_cpp.llama_token_to_piece(self.vocab, token, buf, len(buf), 0, True)
            if n < 0:
                buf = ctypes.create_string_buffer(-n)
                n = llama_cpp.llama_token_to_piece(self.vocab, token, buf, len(buf), 0, True)
            cached = buf.raw[: max(n, 0)]
            self._pieces[token] = cached
        return cached

    def is_eog(self, token: int) -> bool:
        return bool(llama_cpp.llama_vocab_is_eog(self.vocab, token))


@dataclass(frozen=True)
class ContextParams:
    n_ctx: int
    n_threads: int
    n_batch: int = 512
    n_ubatch: int = 512
    type_k: str = "f16"
    type_v: str = "f16"


class Context:
    """A llama.cpp context: the target (trunk) or an MTP draft context."""

    def __init__(self, model: Model, params: ContextParams, *, mtp: bool) -> None:
        cparams = llama_cpp.llama_context_default_params()
        cparams.n_ctx = params.n_ctx
        cparams.n_batch = params.n_batch
        cparams.n_ubatch = params.n_ubatch
        cparams.n_seq_max = 1
        cparams.n_threads = params.n_threads
        cparams.n_threads_batch = params.n_threads
        cparams.no_perf = True
        # llama.cpp defaults to a full-size sliding-window cache; Step 3.5 is 3/4 SWA layers,
        # so the small n_swa + n_ubatch cache saves most of the KV memory.
        cparams.swa_full = False
        cparams.type_k = KV_TYPES[params.type_k]
        cparams.type_v = KV_TYPES[params.type_v]
        if mtp:
            cparams.ctx_type = llama_cpp.LLAMA_CONTEXT_TYPE_MTP
        ptr = llama_cpp.llama_init_from_model(model.ptr, cparams)
        if not ptr:
            kind = "MTP draft" if mtp else "main"
            raise LlamaError(f"llama.cpp could not create the {kind} context (n_ctx={params.n_ctx}); see the log")
        self.ptr = ptr
        self.model = model
        # llama.cpp rounds its cache up (to a multiple of 256); Stride uses the positions asked for.
        self.n_ctx_allocated = int(llama_cpp.llama_n_ctx(ptr))
        self.n_ctx = min(params.n_ctx, self.n_ctx_allocated) if params.n_ctx > 0 else self.n_ctx_allocated
        self.n_batch = min(params.n_batch, int(llama_cpp.llama_n_batch(ptr)))  # llama.cpp caps it by n_ctx
        self.n_vocab = model.n_vocab
        self.n_embd = model.n_embd_out
        self.mem = llama_cpp.llama_get_memory(ptr)
        self.batch = llama_cpp.llama_batch_ext_init(ptr)
        self._pos = llama_cpp.llama_pos(0)
        self._abort: Callable[[], bool] | None = None
        self._abort_cb = llama_cpp.ggml_abort_callback(self._on_abort)
        if mtp:
            llama_cpp_ext.llama_set_embeddings_nextn(ptr, True, True)

    def close(self) -> None:
        if self.ptr:
            llama_cpp.llama_batch_ext_free(self.batch)
            llama_cpp.llama_free(self.ptr)
            self.ptr = None

    def keep_hidden_rows(self, on: bool) -> None:
        """Keep every batch row's pre-norm hidden state (the MTP heads read them); off costs nothing."""
        llama_cpp_ext.llama_set_embeddings_nextn(self.ptr, on, False)

    def _on_abort(self, _data: ctypes.c_void_p) -> bool:
        return bool(self._abort and self._abort())

    def set_abort(self, should_abort: Callable[[], bool] | None) -> None:
        """Let a long decode stop mid-way (used for prompt processing only: it costs a call per graph node)."""
        self._abort = should_abort
        if should_abort is None:
            llama_cpp.llama_set_abort_callback(self.ptr, llama_cpp.ggml_abort_callback(0), None)
        else:
            llama_cpp.llama_set_abort_callback(self.ptr, self._abort_cb, None)

    def decode(
        self,
        tokens: Sequence[int],
        pos0: int,
        *,
        outputs: str | int = "last",
        hidden: npt.NDArray[np.float32] | None = None,
    ) -> None:
        """Decode tokens at positions pos0.. in one batch.

        outputs: "all" rows, the "last" row, "none", or a count of last rows. hidden: one state
        row per token (MTP contexts only), each token paired with the trunk's hidden state.
        """
        batch = self.batch
        llama_cpp.llama_batch_ext_clear(batch)
        n = len(tokens)
        n_outputs = {"all": n, "last": 1, "none": 0}[outputs] if isinstance(outputs, str) else outputs
        embd = llama_cpp.llama_embd()
        if hidden is not None:
            hidden = np.ascontiguousarray(hidden, dtype=np.float32)
            embd.n_rows = 1
            embd.n_embd = self.n_embd
        for i, token in enumerate(tokens):
            idx = llama_cpp.llama_batch_ext_add_token(batch, 0, token)
            if idx < 0:
                raise LlamaError(f"batch rejected token {token} (code {idx})")
            self._pos.value = pos0 + i
            llama_cpp.llama_batch_ext_set_pos(batch, idx, ctypes.byref(self._pos))
            if i >= n - n_outputs:
                llama_cpp.llama_batch_ext_set_output_logits(batch, idx, True)
            if hidden is not None:
                embd.data = hidden[i].ctypes.data_as(ctypes.POINTER(ctypes.c_float))
                if not llama_cpp.llama_batch_ext_set_embd_token(batch, idx, embd):
                    raise LlamaError("MTP hidden-state row rejected")
        self._process(batch, pos0)

    def logits(self, i: int) -> npt.NDArray[np.float32]:
        """Logits of output row i (a view into llama.cpp's buffer, valid until the next decode)."""
        ptr = llama_cpp.llama_get_logits_ith(self.ptr, i)
        if not ptr:
            raise LlamaError(f"no logits for row {i}")
        return np.ctypeslib.as_array(ptr, shape=(self.n_vocab,))

    def hidden_rows(self, n: int) -> npt.NDArray[np.float32]:
        """Pre-norm hidden states of all n rows of the last batch (target context), copied."""
        ptr = llama_cpp_ext.llama_get_embeddings_nextn(self.ptr)
        if not ptr:
            raise LlamaError("the model gave no hidden states for MTP")
        return np.ctypeslib.as_array(ptr, shape=(n, self.n_embd)).copy()

    def hidden_row(self, i: int) -> npt.NDArray[np.float32]:
        ptr = llama_cpp_ext.llama_get_embeddings_nextn_ith(self.ptr, i)
        if not ptr:
            raise LlamaError(f"no hidden state for row {i}")
        return np.ctypeslib.as_array(ptr, shape=(self.n_embd,)).copy()

    def select_head(self, head: int) -> None:
        llama_cpp_ext.llama_set_nextn_layer_offset(self.ptr, head)

    def decode_embeddings(self, rows: npt.NDArray[np.float32], pos0: int) -> None:
        """Decode input embedding rows (a picture's, from a Projector) at positions pos0.., no logits."""
        rows = np.ascontiguousarray(rows, dtype=np.float32)
        batch = self.batch
        llama_cpp.llama_batch_ext_clear(batch)
        embd = llama_cpp.llama_embd()
        embd.n_rows = 1
        embd.n_embd = rows.shape[1]
        for i in range(rows.shape[0]):
            embd.data = rows[i].ctypes.data_as(ctypes.POINTER(ctypes.c_float))
            idx = llama_cpp.llama_batch_ext_add_embd(batch, 0, embd)
            if idx < 0:
                raise LlamaError(f"batch rejected an image embedding row (code {idx})")
            self._pos.value = pos0 + i
            llama_cpp.llama_batch_ext_set_pos(batch, idx, ctypes.byref(self._pos))
        self._process(batch, pos0)

    def _process(self, batch: llama_cpp.llama_batch_ext_p, pos0: int) -> None:
        rc = llama_cpp.llama_process(self.ptr, llama_cpp.LLAMA_PROCESS_TYPE_DECODE, batch)
        if rc == 2:
            raise DecodeAborted()
        if rc != 0:
            reason = "no free KV-cache slot (context full)" if rc == 1 else f"error code {rc}"
            raise LlamaError(f"decode failed at position {pos0}: {reason}")

    def remove_from(self, pos: int) -> bool:
        """Forget positions >= pos (KV rollback). False when the cache cannot do it."""
        return bool(llama_cpp.llama_memory_seq_rm(self.mem, 0, pos, -1))

    def clear(self) -> None:
        llama_cpp.llama_memory_clear(self.mem, True)

    def pos_min(self) -> int:
        return int(llama_cpp.llama_memory_seq_pos_min(self.mem, 0))


class DecodeAborted(Exception):
    """A decode stopped early because the abort check said so."""


_TOKEN_DATA = np.dtype([("id", np.int32), ("logit", np.float32), ("p", np.float32)])  # llama_token_data
assert _TOKEN_DATA.itemsize == ctypes.sizeof(llama_cpp.llama_token_data)


class Sampler:
    """The target's own llama.cpp sampler chain; it both samples and verifies drafts.

    With `explicit=True` the chain stops before the final random draw: `distribution` returns
    the probabilities llama.cpp would draw from (after penalties, top-k/p, min-p, temperature),
    and the draw is made here with a seeded generator. Probabilistic drafting needs those
    probabilities to verify drafts by rejection sampling.
    """

    def __init__(self, params: SamplerParams, *, explicit: bool = False) -> None:
        chain_params = llama_cpp.llama_sampler_chain_default_params()
        chain_params.no_perf = True
        self.ptr = llama_cpp.llama_sampler_chain_init(chain_params)
        self.explicit = explicit and not params.greedy
        # llama.cpp's default seed means "pick one at random"; so does numpy's None.
        self.rng = np.random.default_rng(None if params.seed == llama_cpp.LLAMA_DEFAULT_SEED else params.seed)
        add = llama_cpp.llama_sampler_chain_add
        if params.repeat_penalty != 1.0:
            add(self.ptr, llama_cpp.llama_sampler_init_penalties(params.repeat_last_n, params.repeat_penalty, 0.0, 0.0))
        if params.greedy:
            add(self.ptr, llama_cpp.llama_sampler_init_greedy())
        else:
            if params.top_k > 0:
                add(self.ptr, llama_cpp.llama_sampler_init_top_k(params.top_k))
            if params.top_p < 1.0:
                add(self.ptr, llama_cpp.llama_sampler_init_top_p(params.top_p, 1))
            if params.min_p > 0.0:
                add(self.ptr, llama_cpp.llama_sampler_init_min_p(params.min_p, 1))
            add(self.ptr, llama_cpp.llama_sampler_init_temp(params.temperature))
            if not self.explicit:
                add(self.ptr, llama_cpp.llama_sampler_init_dist(params.seed))

    def sample(self, ctx: Context, row: int) -> int:
        """Sample from output row `row` and record the token in the chain's history."""
        if self.explicit:
            token = self.draw(self.distribution(ctx.logits(row)))
            self.accept(token)
            return token
        return int(llama_cpp.llama_sampler_sample(self.ptr, ctx.ptr, row))

    def distribution(self, logits: npt.NDArray[np.float32]) -> npt.NDArray[np.float64]:
        """The probability of every token after the chain's shaping (explicit chains only)."""
        assert self.explicit, "only an explicit chain stops before the draw"
        data = np.empty(logits.shape[0], dtype=_TOKEN_DATA)
        data["id"] = np.arange(logits.shape[0], dtype=np.int32)
        data["logit"] = logits
        data["p"] = 0.0
        array = llama_cpp.llama_token_data_array(
            data=data.ctypes.data_as(ctypes.POINTER(llama_cpp.llama_token_data)),
            size=logits.shape[0],
            selected=-1,
            sorted=False,
        )
        llama_cpp.llama_sampler_apply(self.ptr, ctypes.byref(array))
        kept = data[: array.size]  # the samplers filter and reorder in place
        weights = np.exp(kept["logit"].astype(np.float64) - kept["logit"].max())
        probs = np.zeros(logits.shape[0], dtype=np.float64)
        probs[kept["id"]] = weights / weights.sum()
        return probs

    def draw(self, probs: npt.NDArray[np.float64]) -> int:
        return int(self.rng.choice(probs.shape[0], p=probs))

    def accept(self, token: int) -> None:
        """Record a token in the chain's history (the prompt, or a token verified outside the chain)."""
        llama_cpp.llama_sampler_accept(self.ptr, token)

    def close(self) -> None:
        if self.ptr:
            llama_cpp.llama_sampler_free(self.ptr)
            self.ptr = None
