"""The only package that touches llama_cpp: a thin, typed layer over the pinned 0.3.36 API.

llama-cpp-python's MTP support lives in low-level and experimental bindings (`llama_cpp_ext`) and
its vision in `mtmd_cpp`; they may change between releases, so every call stays here and an
upgrade touches this package only. backend: the process-wide side (log, CPU backend, init);
context: models, contexts, the sampler; vision: mtmd projectors and pictures.
"""

from engine.llama.backend import (
    LLAMA_CPP_PYTHON_VERSION,
    LlamaError,
    cpu_has_amx,
    cpu_variant,
    init_backend,
)
from engine.llama.context import Context, ContextParams, DecodeAborted, Model, Sampler
from engine.llama.vision import ImageChunk, Picture, Projector

__all__ = [
    "LLAMA_CPP_PYTHON_VERSION",
    "Context",
    "ContextParams",
    "DecodeAborted",
    "ImageChunk",
    "LlamaError",
    "Model",
    "Picture",
    "Projector",
    "Sampler",
    "cpu_has_amx",
    "cpu_variant",
    "init_backend",
]
