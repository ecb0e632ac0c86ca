"""GGUF model files read without loading their weights: one job a module.

reader   the bounds-checked parser of one file's header
parts    multi-part sets (`NAME-00001-of-0000N.gguf`), merged and checked as llama.cpp loads them
hparams  hyperparameters validated as llama.cpp reads them, and what would make it abort
inspect  what a model (+ separate MTP file) or a vision projector holds
memory   what running it costs, and what the machine has free
"""

from engine.gguf.hparams import LayerShape
from engine.gguf.inspect import (
    ModelInfo,
    ModelPaths,
    MtpWeights,
    ProjectorInfo,
    inspect_model,
    inspect_projector,
    is_projector,
    projector_beside,
)
from engine.gguf.memory import (
    MemoryEstimate,
    Verdict,
    effective_context,
    estimate_memory,
    free_memory_bytes,
    memory_verdict,
)
from engine.gguf.parts import first_part, looks_like_part
from engine.gguf.reader import LLAMA_CPP_VERSION

__all__ = [
    "LLAMA_CPP_VERSION",
    "LayerShape",
    "MemoryEstimate",
    "ModelInfo",
    "ModelPaths",
    "MtpWeights",
    "ProjectorInfo",
    "Verdict",
    "effective_context",
    "estimate_memory",
    "first_part",
    "free_memory_bytes",
    "inspect_model",
    "inspect_projector",
    "is_projector",
    "looks_like_part",
    "memory_verdict",
    "projector_beside",
]
