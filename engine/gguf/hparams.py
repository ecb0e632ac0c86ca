"""A GGUF's hyperparameters, validated the way llama.cpp 0.3.36 loads them.

Besides llama.cpp's own refusals, this catches what would make llama.cpp abort the
whole process instead of returning an error (src/llama-model.cpp GGML_ASSERTs,
duplicate vocabulary entries in src/llama-vocab.cpp, rope shapes ggml asserts on).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import gguf

from engine.api import ModelFileError
from engine.gguf.reader import LLAMA_CPP_VERSION, MAX_LAYERS, TOKENS_KEY, Array, GgufFile, Tensor, type_name

_MAX_EXPERTS = 1024
_ROPE_SCALING_TYPES = frozenset({"none", "linear", "yarn", "longrope"})
_VT = gguf.GGUFValueType
_BLOCK_RE = re.compile(r"blk\.(\d+)\.")

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
class ModelHeader:
    """The hyperparameters of one file, validated the way llama.cpp loads them."""

    file: GgufFile
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

    def head_tensors(self) -> list[Tensor]:
        return [t for t in self.file.tensors if (m := _BLOCK_RE.match(t.name)) and int(m.group(1)) >= self.n_layer]


def interpret(f: GgufFile) -> ModelHeader:
    """Validate a file's hyperparameters the way llama.cpp loads them."""
    arch = f.string("general.architecture")
    if arch is None:
        raise f.damaged("it has no general.architecture key")
    if arch == "clip":
        raise ModelFileError(
            f"{f.name} is a vision projector (mmproj), not a language model; choose the main model file", "projector"
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
    if not 0 < n_layer_all <= MAX_LAYERS:  # llama.cpp asserts (aborts) on this
        raise f.damaged(f"{arch}.block_count is {n_layer_all:,}, outside 1..{MAX_LAYERS}")
    n_mtp = f.uint(f"{arch}.nextn_predict_layers") or 0
    if n_mtp > n_layer_all:
        raise f.damaged(f"{arch}.nextn_predict_layers ({n_mtp}) exceeds {arch}.block_count ({n_layer_all})")
    n_embd = f.required_uint(f"{arch}.embedding_length")
    context_length = f.required_uint(f"{arch}.context_length")

    tokens = f.kv.get(TOKENS_KEY)
    if tokens is None:
        raise f.damaged(f"the vocabulary ({TOKENS_KEY}) is missing")
    if f.n_tokens is None:
        raise f.damaged(f"key {TOKENS_KEY} has type {type_name(tokens)}, expected ARRAY of STRING")
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
    return ModelHeader(
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


def _swa_layers(f: GgufFile, arch: str, n_layer_all: int, n_layer: int, n_swa: int) -> list[bool]:
    if n_swa == 0:
        return [False] * n_layer_all
    key = f"{arch}.attention.sliding_window_pattern"
    v = f.kv.get(key)
    if v is not None and isinstance(v.value, Array):
        arr = v.value
        if arr.item_type not in (_VT.BOOL, _VT.UINT32, _VT.INT32) or arr.items is None or arr.count > MAX_LAYERS:
            raise f.damaged(
                f"key {key} has type {type_name(v)} with {arr.count:,} entries, expected up to {MAX_LAYERS} booleans"
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
