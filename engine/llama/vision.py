"""llama.cpp's mtmd: a vision projector beside its model, pictures tokenized into chunks and encoded."""

from __future__ import annotations

import ctypes
import weakref
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import llama_cpp
import numpy as np
import numpy.typing as npt
from llama_cpp import mtmd_cpp

from engine.llama.backend import LlamaError, init_backend, load_logged
from engine.llama.context import Model

# --- vision: llama.cpp's mtmd ---------------------------------------------------------------------

MTMD_CHUNK_IMAGE = 1  # mtmd_input_chunk_type: 0 text, 1 image, 2 audio


class Picture(Protocol):
    """One picture for the projector: an encoded file's bytes, or raw RGB rows when `rgb_size` is set."""

    @property
    def data(self) -> bytes: ...

    @property
    def rgb_size(self) -> tuple[int, int] | None: ...  # (width, height) of raw RGB data


class ImageChunk:
    """A picture, or one slice of it, tokenized by mtmd and not yet encoded: `n_tokens` positions in the prompt.

    `picture` is the index of the picture it comes from in the list given to Projector.tokenize.
    """

    def __init__(self, projector: Projector, ptr: int, n_tokens: int, picture: int) -> None:
        self._projector = projector
        self._ptr = ptr
        self.n_tokens = n_tokens
        self.picture = picture
        self._release = weakref.finalize(self, mtmd_cpp.mtmd_input_chunk_free, ptr)

    def encode(self) -> npt.NDArray[np.float32]:
        """Run the vision encoder: one embedding row per position, (n_tokens, n_embd), copied."""
        return self._projector.encode(self._ptr, self.n_tokens)


class Projector:
    """A vision projector (mmproj) loaded with mtmd beside its language model.

    `marker` is the text that stands for a picture in a prompt: a caller-chosen string the user
    cannot type by accident (the template's own `<im_patch>` can be typed).
    """

    def __init__(self, path: Path, model: Model, *, n_threads: int, marker: str) -> None:
        init_backend()
        params = mtmd_cpp.mtmd_context_params_default()
        params.use_gpu = False
        params.n_threads = n_threads
        params.print_timings = False
        params.warmup = False
        self._marker = marker.encode()  # kept alive: mtmd reads the pointer while it initialises
        params.media_marker = self._marker
        ptr, reason = load_logged(lambda: mtmd_cpp.mtmd_init_from_file(str(path).encode(), model.ptr, params))
        if not ptr:
            raise LlamaError(f"llama.cpp could not load the vision projector {path.name}: {reason}")
        self.ptr = ptr
        self.path = path
        self.model = model
        self.marker = marker
        self.n_embd = int(llama_cpp.llama_model_n_embd_inp(model.ptr))  # the rows mtmd gives: input width
        # Pictures are decoded as plain causal embedding batches, split at n_batch like text.
        unsupported = (
            "has no vision encoder"
            if not mtmd_cpp.mtmd_support_vision(ptr)
            else "needs M-RoPE positions"
            if mtmd_cpp.mtmd_decode_use_mrope(ptr)
            else "needs non-causal attention over a picture"
            if mtmd_cpp.mtmd_decode_use_non_causal(ptr, None)
            else None
        )
        if unsupported:
            self.close()
            raise LlamaError(f"{path.name} is a vision projector Stride cannot run: it {unsupported}")

    def close(self) -> None:
        if self.ptr:
            mtmd_cpp.mtmd_free(self.ptr)
            self.ptr = None

    def tokenize(self, text: str, pictures: Sequence[Picture]) -> list[list[int] | ImageChunk]:
        """Split a prompt at its markers: text tokens and picture chunks, in order (BOS added when the model wants it).
        A large picture gives several chunks (its slices, then its overview), with text tokens between.

        Raises LlamaError when a picture cannot be decoded.
        """
        bitmaps = [self._bitmap(p, i) for i, p in enumerate(pictures)]
        chunks = mtmd_cpp.mtmd_input_chunks_init()
        try:
            data = text.encode("utf-8")
            text_in = mtmd_cpp.mtmd_input_text()
            text_in.text = data
            text_in.text_len = len(data)
            text_in.add_special = True
            text_in.parse_special = True
            array = (mtmd_cpp.mtmd_bitmap_p_ctypes * max(len(bitmaps), 1))(*bitmaps)
            rc = mtmd_cpp.mtmd_tokenize(self.ptr, chunks, ctypes.byref(text_in), array, len(bitmaps))
            if rc != 0:
                what = "the pictures and the prompt's markers do not match" if rc == 1 else "preprocessing failed"
                raise LlamaError(f"could not tokenize the prompt with its pictures: {what}")
            out: list[list[int] | ImageChunk] = []
            for i in range(mtmd_cpp.mtmd_input_chunks_size(chunks)):
                chunk = mtmd_cpp.mtmd_input_chunks_get(chunks, i)
                n = int(mtmd_cpp.mtmd_input_chunk_get_n_tokens(chunk))
                if mtmd_cpp.mtmd_input_chunk_get_type(chunk) == MTMD_CHUNK_IMAGE:
                    picture = int(mtmd_cpp.mtmd_input_chunk_get_id(chunk) or b"0")  # the id _bitmap gave it
                    out.append(ImageChunk(self, mtmd_cpp.mtmd_input_chunk_copy(chunk), n, picture))
                else:
                    n_text = ctypes.c_size_t()
                    tokens = mtmd_cpp.mtmd_input_chunk_get_tokens_text(chunk, ctypes.byref(n_text))
                    out.append([int(tokens[j]) for j in range(n_text.value)])
            return out
        finally:
            mtmd_cpp.mtmd_input_chunks_free(chunks)
            for bitmap in bitmaps:
                mtmd_cpp.mtmd_bitmap_free(bitmap)

    def _bitmap(self, picture: Picture, index: int) -> int:
        if picture.rgb_size is not None:
            width, height = picture.rgb_size
            raw = (ctypes.c_uint8 * len(picture.data)).from_buffer_copy(picture.data)
            bitmap = mtmd_cpp.mtmd_bitmap_init(width, height, raw)
        else:
            buf = (ctypes.c_uint8 * len(picture.data)).from_buffer_copy(picture.data)
            bitmap = mtmd_cpp.mtmd_helper_bitmap_init_from_buf(self.ptr, buf, len(picture.data), False)
        if not bitmap:
            raise LlamaError(f"picture {index + 1} could not be decoded")
        mtmd_cpp.mtmd_bitmap_set_id(bitmap, str(index).encode())
        return int(bitmap)

    def encode(self, chunk: int, n_tokens: int) -> npt.NDArray[np.float32]:
        if not self.ptr:  # a prompt kept past its model's unloading
            raise LlamaError("the vision projector was closed; render the prompt again")
        if mtmd_cpp.mtmd_encode_chunk(self.ptr, chunk) != 0:
            raise LlamaError("the vision encoder failed; see the log")
        out = mtmd_cpp.mtmd_get_output_embd(self.ptr)
        if not out:
            raise LlamaError("the vision encoder gave no output")
        return np.ctypeslib.as_array(out, shape=(n_tokens, self.n_embd)).copy()
