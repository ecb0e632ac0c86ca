"""Writer for small synthetic Step3.5-architecture GGUF files.

Real Step Flash files are 90-200 GB, so the demo model and the test fixtures are
built here with crafted weights whose behaviour is known. A model is a trunk of
Step3.5 decoder blocks plus up to three MTP heads, each a full decoder block with
the NextN wiring (enorm, hnorm, eh_proj, shared head). Trunk blocks have a dense
SwiGLU FFN, or, as in the real model after its leading dense layers, a mixture of
experts: a sigmoid router with a selection bias picks a few routed SwiGLU experts
per token, and one shared expert always runs. MTP blocks are dense, as in the real model.

Tokens use a SentencePiece-style vocabulary: control tokens, the 256 byte
tokens, printable ASCII characters and caller-chosen pieces.
"""

from __future__ import annotations

import contextlib
import math
import os
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import gguf
import numpy as np
import numpy.typing as npt

ARCH = "step35"
F32 = npt.NDArray[np.float32]

SPACE = "\u2581"  # SentencePiece's visible space
CONTROL_TOKENS = ("<unk>", "<s>", "</s>", "<|im_start|>", "<|im_end|>")
USER_TOKENS = ("<think>", "</think>")  # rendered in text so reasoning can be split

# A ChatML template whose generation prompt opens a reasoning block, as Step 3.5 does.
STEP_LIKE_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<|im_start|>{{ m['role'] }}\n"
    "{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n<think>\n{% endif %}"
)


@dataclass(frozen=True)
class Vocab:
    """A SentencePiece vocabulary: token texts with their GGUF token types."""

    tokens: tuple[str, ...]
    types: tuple[int, ...]

    @classmethod
    def build(cls, pieces: Sequence[str]) -> Vocab:
        tokens: list[str] = []
        types: list[int] = []

        def add(text: str, kind: gguf.TokenType) -> None:
            if text not in tokens:
                tokens.append(text)
                types.append(int(kind))

        add("<unk>", gguf.TokenType.UNKNOWN)
        for text in CONTROL_TOKENS[1:]:
            add(text, gguf.TokenType.CONTROL)
        for text in USER_TOKENS:
            add(text, gguf.TokenType.USER_DEFINED)
        for byte in range(256):
            add(f"<0x{byte:02X}>", gguf.TokenType.BYTE)
        add(SPACE, gguf.TokenType.NORMAL)
        for code in range(0x21, 0x7F):
            add(chr(code), gguf.TokenType.NORMAL)
        for piece in pieces:
            add(piece.replace(" ", SPACE), gguf.TokenType.NORMAL)
        return cls(tuple(tokens), tuple(types))

    def __len__(self) -> int:
        return len(self.tokens)

    def id(self, text: str) -> int:
        return self.tokens.index(text.replace(" ", SPACE))

    def byte_id(self, value: int) -> int:
        return self.tokens.index(f"<0x{value:02X}>")

    @property
    def bos(self) -> int:
        return self.id("<s>")

    @property
    def eos(self) -> int:
        return self.id("<|im_end|>")


@dataclass
class StepShape:
    """Hyperparameters of a synthetic Step3.5 model."""

    n_vocab: int
    n_embd: int
    n_layer: int = 2
    n_head: int = 4
    n_head_kv: int = 2
    n_ff: int = 256
    n_swa: int = 16
    n_mtp: int = 3
    context_length: int = 4096
    head_dim: int = 0  # 0: n_embd // n_head
    # Sliding-window flag of each trunk layer; () alternates, even layers sliding.
    swa_layers: tuple[bool, ...] = ()
    # Mixture of experts: with n_expert > 0, trunk layers from n_dense_lead on are MoE layers.
    n_expert: int = 0
    n_expert_used: int = 0
    n_ff_exp: int = 0
    n_ff_shexp: int = 0
    n_dense_lead: int = 0
    expert_weights_norm: bool = True  # the chosen experts' weights are scaled to sum to 1...
    expert_weights_scale: float = 1.0  # ...then multiplied by this

    def __post_init__(self) -> None:
        if self.head_dim == 0:
            self.head_dim = self.n_embd // self.n_head
        if self.swa_layers and len(self.swa_layers) != self.n_layer:
            raise ValueError(f"swa_layers has {len(self.swa_layers)} flags for {self.n_layer} trunk layers")
        if self.n_expert and not 0 < self.n_expert_used <= self.n_expert:
            raise ValueError(f"n_expert_used {self.n_expert_used} does not fit n_expert {self.n_expert}")

    @property
    def n_layer_all(self) -> int:
        return self.n_layer + self.n_mtp

    def is_swa(self, layer: int) -> bool:
        # MTP blocks slide, as in Step 3.5.
        if layer >= self.n_layer:
            return True
        return self.swa_layers[layer] if self.swa_layers else layer % 2 == 0

    def is_moe(self, layer: int) -> bool:
        return self.n_expert > 0 and self.n_dense_lead <= layer < self.n_layer


@dataclass
class MoeFfn:
    """A mixture-of-experts FFN, numpy row-major: experts stacked on the first axis."""

    gate_inp: F32  # router (n_expert, n_embd)
    exp_probs_b: F32  # (n_expert,): added to the router's sigmoid scores to choose experts, not to weigh them
    gate_exps: F32  # (n_expert, n_ff_exp, n_embd)
    up_exps: F32  # (n_expert, n_ff_exp, n_embd)
    down_exps: F32  # (n_expert, n_embd, n_ff_exp)
    gate_shexp: F32  # (n_ff_shexp, n_embd)
    up_shexp: F32  # (n_ff_shexp, n_embd)
    down_shexp: F32  # (n_embd, n_ff_shexp)

    def tensors(self) -> dict[str, F32]:
        """GGUF tensor names (after "blk.N.") and data."""
        return {
            "ffn_gate_inp.weight": self.gate_inp,
            "exp_probs_b.bias": self.exp_probs_b,
            "ffn_gate_exps.weight": self.gate_exps,
            "ffn_up_exps.weight": self.up_exps,
            "ffn_down_exps.weight": self.down_exps,
            "ffn_gate_shexp.weight": self.gate_shexp,
            "ffn_up_shexp.weight": self.up_shexp,
            "ffn_down_shexp.weight": self.down_shexp,
        }


@dataclass
class Block:
    """Weights of one decoder block, numpy row-major (out, in).

    The FFN is dense (ffn_gate, ffn_up, ffn_down) or, with moe set, a mixture of
    experts; llama.cpp tells the two apart by the router tensor, so a block has one.
    """

    wq: F32
    wk: F32
    wv: F32
    wo: F32
    ffn_gate: F32 | None
    ffn_up: F32 | None
    ffn_down: F32 | None
    attn_norm: F32
    ffn_norm: F32
    moe: MoeFfn | None = None

    def ffn_tensors(self) -> dict[str, F32]:
        """The FFN's GGUF tensor names (after "blk.N.") and data."""
        if self.moe is not None:
            return self.moe.tensors()
        if self.ffn_gate is None or self.ffn_up is None or self.ffn_down is None:
            raise ValueError("a block without experts needs ffn_gate, ffn_up and ffn_down")
        return {"ffn_gate.weight": self.ffn_gate, "ffn_up.weight": self.ffn_up, "ffn_down.weight": self.ffn_down}


@dataclass
class MtpHead:
    """One MTP head: its decoder block plus the NextN wiring."""

    block: Block
    eh_proj: F32  # (n_embd, 2 * n_embd)
    enorm: F32
    hnorm: F32
    shared_head_norm: F32
    shared_head_head: F32  # (n_vocab, n_embd)


@dataclass
class StepWeights:
    token_embd: F32  # (n_vocab, n_embd)
    output_norm: F32
    output: F32  # (n_vocab, n_embd)
    blocks: list[Block]
    heads: list[MtpHead] = field(default_factory=list)


def zero_block(shape: StepShape, *, layer: int = 0) -> Block:
    """A decoder block of zero weights: it leaves the residual unchanged. Zero weights cost the
    same compute as any others, which benchmarks rely on. The block at trunk index `layer` of a
    mixture-of-experts shape gets experts, with a zero router and selection bias that the caller
    sets to route."""
    return _block(shape, None, 0.0, layer)


def random_block(shape: StepShape, rng: np.random.Generator, scale: float, *, layer: int = 0) -> Block:
    """A decoder block that writes to the residual: attention and FFN (every expert, and the shared
    one) get random weights whose outputs onto the residual (wo, down projections) have size about
    `scale`, so the text depends on the context. Experts as in zero_block."""
    return _block(shape, rng, scale, layer)


def _block(shape: StepShape, rng: np.random.Generator | None, scale: float, layer: int) -> Block:
    e, hd = shape.n_embd, shape.head_dim
    q_dim, kv_dim = shape.n_head * hd, shape.n_head_kv * hd

    def mat(size: float, *dims: int) -> F32:
        if rng is None:
            return np.zeros(dims, dtype=np.float32)
        return np.asarray(rng.standard_normal(dims) * size / np.sqrt(dims[-1]), dtype=np.float32)

    moe = None
    if shape.is_moe(layer):
        n, ff, sh = shape.n_expert, shape.n_ff_exp, shape.n_ff_shexp
        moe = MoeFfn(
            gate_inp=np.zeros((n, e), dtype=np.float32),
            exp_probs_b=np.zeros(n, dtype=np.float32),
            gate_exps=mat(1.0, n, ff, e),
            up_exps=mat(1.0, n, ff, e),
            down_exps=mat(scale, n, e, ff),
            gate_shexp=mat(1.0, sh, e),
            up_shexp=mat(1.0, sh, e),
            down_shexp=mat(scale, e, sh),
        )
    return Block(
        wq=mat(1.0, q_dim, e),
        wk=mat(1.0, kv_dim, e),
        wv=mat(1.0, kv_dim, e),
        wo=mat(scale, e, q_dim),
        ffn_gate=None if moe is not None else mat(1.0, shape.n_ff, e),
        ffn_up=None if moe is not None else mat(1.0, shape.n_ff, e),
        ffn_down=None if moe is not None else mat(scale, e, shape.n_ff),
        attn_norm=np.ones(e, dtype=np.float32),
        ffn_norm=np.ones(e, dtype=np.float32),
        moe=moe,
    )


def lookup_head(shape: StepShape, embd: F32, head_map: Sequence[int], logit_gap: float) -> MtpHead:
    """An MTP head that reads only its input token and predicts head_map[token].

    eh_proj keeps the normalised token embedding and drops the trunk state; the
    block adds nothing, so the shared head sees RMSNorm(embed(token)).
    """
    e = shape.n_embd
    eh_proj = np.zeros((e, 2 * e), dtype=np.float32)
    eh_proj[:, :e] = np.eye(e, dtype=np.float32)
    return MtpHead(
        block=zero_block(shape, layer=shape.n_layer),
        eh_proj=eh_proj,
        enorm=np.ones(e, dtype=np.float32),
        hnorm=np.ones(e, dtype=np.float32),
        shared_head_norm=np.ones(e, dtype=np.float32),
        shared_head_head=readout(embd, head_map, logit_gap),
    )


def readout(embd: F32, next_of: Sequence[int], logit_gap: float | npt.NDArray[np.float64]) -> F32:
    """Output rows such that RMSNorm(embed(x)) scores next_of[x] highest by about logit_gap
    (one gap for all tokens, or one per token x).

    Row j is the sum of the (unit-RMS) embeddings of every token whose successor is j:
    with orthogonal embeddings token x scores exactly logit_gap on next_of[x] and 0
    elsewhere; with random wide embeddings the others are small noise around 0.
    """
    n_vocab, n_embd = embd.shape
    normed = embd / np.sqrt(np.mean(embd.astype(np.float64) ** 2, axis=1, keepdims=True))
    gaps = np.broadcast_to(np.asarray(logit_gap, dtype=np.float64), (n_vocab,))
    out = np.zeros((n_vocab, n_embd), dtype=np.float64)
    np.add.at(out, np.asarray(next_of), normed * (gaps / n_embd)[:, None])
    return np.asarray(out, dtype=np.float32)


def calibrated_readout(
    embd: F32,
    first: Sequence[int],
    second: Sequence[int],
    unsure: npt.NDArray[np.bool_],
    sure_p: float = 0.97,
    unsure_p: float = 0.45,
    split: float = 0.2,
) -> F32:
    """Output rows of a calibrated head, its probabilities set over the whole vocabulary: sure of
    first[x] (top probability about sure_p) where unsure[x] is False; elsewhere first[x] only `split`
    above second[x] (top probability about unsure_p, the runner-up close behind).

    A fixed logit gap would not do: a gap of 8 over 8,192 other tokens at about 0 leaves the top
    token a probability of 0.27, so "sure" heads would look unsure to dynamic drafting.
    """
    n = embd.shape[0]
    # top = e^g / (e^g + n - 1) = sure_p
    sure_gap = math.log(sure_p / (1.0 - sure_p) * (n - 1))
    # top = e^(b + split) / (e^(b + split) + e^b + n - 2) = unsure_p
    pair = math.log(unsure_p * (n - 2) / (math.exp(split) * (1.0 - unsure_p) - unsure_p))
    top = np.where(unsure, pair + split, sure_gap)
    runner = np.where(unsure, pair, 0.0)
    return readout(embd, first, top) + readout(embd, second, runner)


def one_hot_embeddings(n_vocab: int, n_embd: int) -> F32:
    if n_embd < n_vocab:
        raise ValueError(f"one-hot embeddings need n_embd >= n_vocab ({n_embd} < {n_vocab})")
    embd = np.zeros((n_vocab, n_embd), dtype=np.float32)
    embd[np.arange(n_vocab), np.arange(n_vocab)] = 1.0
    return embd


def write_step35(
    path: Path,
    shape: StepShape,
    vocab: Vocab,
    weights: StepWeights,
    *,
    name: str,
    chat_template: str | None = STEP_LIKE_TEMPLATE,
    trunk: bool = True,
    mtp: bool = True,
    declare_mtp: bool = True,
    dtype: type[np.floating] = np.float32,
    extra_kv: Mapping[str, str | int | float] | None = None,
) -> Path:
    """Write a Step3.5 GGUF: trunk and/or MTP tensors, as llama.cpp expects them.

    trunk=False, mtp=True gives an MTP-only file (embeddings, output norm and head
    blocks only); trunk=True, mtp=False with declare_mtp gives a trunk-only file,
    or a file that declares heads but ships none of their weights.
    """
    n_mtp = shape.n_mtp if declare_mtp else 0
    path.parent.mkdir(parents=True, exist_ok=True)
    with _part_file(path) as tmp:
        writer = step35_writer(tmp, shape, vocab, name=name, n_mtp=n_mtp, dtype=dtype, chat_template=chat_template)
        for key, value in (extra_kv or {}).items():
            if isinstance(value, str):
                writer.add_string(key, value)
            elif isinstance(value, int):
                writer.add_uint32(key, value)
            else:
                writer.add_float32(key, value)

        def tensor(tname: str, data: F32, keep_f32: bool = False) -> None:
            out_type = np.float32 if (keep_f32 or data.ndim == 1) else dtype
            writer.add_tensor(tname, np.ascontiguousarray(data, dtype=out_type))

        def block(i: int, b: Block) -> None:
            if (b.moe is not None) != shape.is_moe(i):
                raise ValueError(f"block {i} {'has' if b.moe else 'lacks'} experts; the shape says otherwise")
            tensor(f"blk.{i}.attn_norm.weight", b.attn_norm)
            tensor(f"blk.{i}.attn_q.weight", b.wq)
            tensor(f"blk.{i}.attn_k.weight", b.wk)
            tensor(f"blk.{i}.attn_v.weight", b.wv)
            tensor(f"blk.{i}.attn_output.weight", b.wo)
            tensor(f"blk.{i}.ffn_norm.weight", b.ffn_norm)
            for tname, data in b.ffn_tensors().items():
                # Routers stay F32, as converted Step models keep them: llama-quantize leaves them as they are.
                tensor(f"blk.{i}.{tname}", data, keep_f32=tname == "ffn_gate_inp.weight")

        tensor("token_embd.weight", weights.token_embd)
        tensor("output_norm.weight", weights.output_norm)
        if trunk:
            tensor("output.weight", weights.output)
            for i, b in enumerate(weights.blocks):
                block(i, b)
        if mtp and declare_mtp:
            for k, head in enumerate(weights.heads[: shape.n_mtp]):
                i = shape.n_layer + k
                block(i, head.block)
                tensor(f"blk.{i}.nextn.eh_proj.weight", head.eh_proj)
                tensor(f"blk.{i}.nextn.enorm.weight", head.enorm)
                tensor(f"blk.{i}.nextn.hnorm.weight", head.hnorm)
                tensor(f"blk.{i}.nextn.shared_head_norm.weight", head.shared_head_norm)
                tensor(f"blk.{i}.nextn.shared_head_head.weight", head.shared_head_head)

        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
    return path


@contextlib.contextmanager
def _part_file(path: Path) -> Iterator[Path]:
    """A temporary name of this writer's own beside `path`, renamed to it once the block completes:
    a half-written file is never found under its name, and two writers never share bytes."""
    tmp = path.with_name(f"{path.name}.{os.getpid()}-{threading.get_ident()}.part")
    try:
        yield tmp
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


def step35_writer(
    path: Path,
    shape: StepShape,
    vocab: Vocab,
    *,
    name: str,
    n_mtp: int,
    dtype: type[np.floating] = np.float32,
    chat_template: str | None = STEP_LIKE_TEMPLATE,
) -> gguf.GGUFWriter:
    """A GGUF writer holding a Step3.5 model's metadata; the caller adds the tensors and writes."""
    n_layer_all = shape.n_layer + n_mtp
    writer = gguf.GGUFWriter(str(path), ARCH)
    writer.add_name(name)
    writer.add_context_length(shape.context_length)
    writer.add_embedding_length(shape.n_embd)
    writer.add_block_count(n_layer_all)
    writer.add_feed_forward_length(shape.n_ff)
    writer.add_head_count([shape.n_head] * n_layer_all)
    writer.add_head_count_kv([shape.n_head_kv] * n_layer_all)
    writer.add_key_length(shape.head_dim)
    writer.add_value_length(shape.head_dim)
    writer.add_rope_dimension_count(shape.head_dim)
    writer.add_rope_freq_base(10000.0)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_sliding_window(shape.n_swa)
    writer.add_sliding_window_pattern([shape.is_swa(i) for i in range(n_layer_all)])
    if shape.n_expert:
        writer.add_expert_count(shape.n_expert)
        writer.add_expert_used_count(shape.n_expert_used)
        writer.add_expert_feed_forward_length(shape.n_ff_exp)
        writer.add_expert_shared_feed_forward_length(shape.n_ff_shexp)
        writer.add_expert_gating_func(gguf.ExpertGatingFuncType.SIGMOID)
        writer.add_expert_weights_norm(shape.expert_weights_norm)
        writer.add_expert_weights_scale(shape.expert_weights_scale)
        writer.add_leading_dense_block_count(shape.n_dense_lead)
    else:
        writer.add_expert_count(0)
        writer.add_expert_used_count(0)
        writer.add_expert_feed_forward_length(shape.n_ff)
        writer.add_leading_dense_block_count(n_layer_all)
    if n_mtp:
        writer.add_nextn_predict_layers(n_mtp)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32 if dtype is np.float32 else gguf.LlamaFileType.MOSTLY_F16)

    writer.add_tokenizer_model("llama")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(list(vocab.tokens))
    writer.add_token_scores(
        [0.0 if t != int(gguf.TokenType.NORMAL) else float(len(tok)) for tok, t in zip(vocab.tokens, vocab.types)]
    )
    writer.add_token_types(list(vocab.types))
    writer.add_bos_token_id(vocab.bos)
    writer.add_eos_token_id(vocab.eos)
    writer.add_unk_token_id(0)
    writer.add_add_bos_token(True)
    writer.add_add_eos_token(False)
    if chat_template is not None:
        writer.add_chat_template(chat_template)
    return writer
