"""Benchmark fixtures: compute-bound Step3.5-shaped GGUFs with a known head agreement.

The default is about 0.5B parameters in f16: 24 layers, width 1024, vocabulary
32k, three MTP heads. Trunk blocks have zero weights (they cost the same compute
as any others) so the trunk follows a successor table exactly, and each head
agrees with the trunk except on a chosen fraction of tokens: the acceptance a
benchmark sees is then set by design, not by luck.

    python -m benchmarks.fixtures OUT.gguf [--disagree 0.1] [--dtype f16|f32] [--layers 24]

The benchmarks use the named fixtures in `CATALOGUE`, built once into ~/.cache/stride/bench.
"""

from __future__ import annotations

import argparse
import subprocess
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from engine import synth

N_VOCAB = 32_000
N_EMBD = 1024
LOGIT_GAP = 8.0
CACHE = Path.home() / ".cache" / "stride" / "bench"
PROMPT = "Once upon a time"
PROMPT_LAST_PIECE = "e"  # the reply walks the successor cycle from the prompt's last token
SHIFT_AT = 384  # reply tokens before the "shift" fixture's head agreement changes


@dataclass(frozen=True)
class Spec:
    disagree: float  # fraction of tokens on which each head disagrees with the trunk
    shift: float | None = None  # from reply token SHIFT_AT on, this fraction instead
    quant: str | None = None  # quantized from the f16 fixture of the same spec by llama-quantize
    logit_gap: float = LOGIT_GAP  # how far the best token's logit stands above the rest
    # Step Flash's shape scaled down: a dense block, then MoE blocks of MOE_EXPERTS experts (top-8) and
    # a shared expert; routing differs per token, so verifying k tokens reads up to 8k experts.
    moe: bool = False
    # Calibrated heads, as real ones are: where they disagree they split between the trunk's token and
    # another (top probability about 0.45, right half the time) instead of being confidently wrong.
    calibrated: bool = False


CATALOGUE = {
    "main": Spec(0.1),
    "high": Spec(0.02),
    "low": Spec(0.5),
    "off": Spec(0.8),  # heads mostly wrong: plain decoding is the fastest depth
    "shift-down": Spec(0.02, shift=0.8),  # heads agree, then stop agreeing, in the middle of a reply
    "shift-up": Spec(0.8, shift=0.02),
    "q8": Spec(0.1, quant="Q8_0"),
    # Spread distributions at temperature 0.8 (top token about half the top-40 mass): for
    # comparing greedy and probabilistic drafting.
    "soft": Spec(0.1, logit_gap=3.0),
    # Mixture of experts, calibrated heads (issue: dynamic drafting and Auto on MoE).
    "moe-q4km": Spec(0.1, quant="Q4_K_M", moe=True, calibrated=True),
    "moe-q8": Spec(0.1, quant="Q8_0", moe=True, calibrated=True),
    "moe-low-q4km": Spec(0.5, quant="Q4_K_M", moe=True, calibrated=True),
    "moe-off-q4km": Spec(0.8, quant="Q4_K_M", moe=True, calibrated=True),
    "cal": Spec(0.1, calibrated=True),
}
MOE_EXPERTS = 128
MOE_LAYERS = 10  # after one dense block
# Proportions as in Step Flash, where the 8 routed experts are about half of a token's weights (the rest
# attention and the shared expert), so verifying 2 tokens reads about 1.5x one token's weights; and a
# head (one dense block and the output projection) costs about a tenth of a token's trunk.
MOE_FF = 256  # each routed expert's width (widths are multiples of 256: K-quants apply)
MOE_SHARED_FF = 512
MOE_HEAD_DIM = 128  # 16 query heads of 128: attention twice the width, as Step's 64-96 heads of 128 are
MOE_DENSE_FF = 1024
MOE_VOCAB = 8192


def fixture_path(name: str, quantize_tool: str | None = None) -> Path:
    """The named fixture, built on first use (quantized ones need llama-quantize's path)."""
    return _built(CATALOGUE[name], name, quantize_tool)


def _built(spec: Spec, name: str, quantize_tool: str | None) -> Path:
    if spec.quant:
        path = CACHE / f"bench-{name}.gguf"
        if not path.exists():
            if quantize_tool is None:
                raise SystemExit(f"fixture {name} needs llama-quantize: run benchmarks/build_native.sh")
            source_spec = replace(spec, quant=None)
            source_name = next((n for n, s in CATALOGUE.items() if s == source_spec), f"{name}-source")
            source = _built(source_spec, source_name, None)
            subprocess.run([quantize_tool, str(source), str(path), spec.quant], check=True, capture_output=True)
        return path
    path = CACHE / f"bench-{name}-f16.gguf"
    if not path.exists():
        build(
            path,
            disagree=spec.disagree,
            shift=spec.shift,
            logit_gap=spec.logit_gap,
            moe=spec.moe,
            calibrated=spec.calibrated,
        )
    return path


def bench_vocab(n_vocab: int) -> synth.Vocab:
    base = len(synth.Vocab.build([]))
    return synth.Vocab.build([f" w{i}" for i in range(n_vocab - base)])


def build(
    path: Path,
    *,
    disagree: float = 0.1,
    n_layer: int = 24,
    n_embd: int = N_EMBD,
    n_vocab: int = N_VOCAB,
    dtype: str = "f16",
    seed: int = 5,
    shift: float | None = None,
    logit_gap: float = LOGIT_GAP,
    moe: bool = False,
    calibrated: bool = False,
) -> Path:
    """Write the fixture; heads 1-3 each disagree with the trunk on `disagree` of all tokens.

    With `shift`, the first SHIFT_AT tokens a reply to PROMPT produces keep `disagree` and every
    other token gets `shift` instead, so agreement changes at a known point of that reply.
    """
    rng = np.random.default_rng(seed)
    if moe:
        n_layer, n_vocab = 1 + MOE_LAYERS, MOE_VOCAB
    vocab = bench_vocab(n_vocab)
    moe_shape = {
        "n_expert": MOE_EXPERTS,
        "n_expert_used": 8,
        "n_ff_exp": MOE_FF,
        "n_ff_shexp": MOE_SHARED_FF,
        "n_dense_lead": 1,
        "head_dim": MOE_HEAD_DIM,
    }
    shape = synth.StepShape(
        n_vocab=len(vocab),
        n_embd=n_embd,
        n_layer=n_layer,
        n_head=16,
        n_head_kv=4,
        n_ff=MOE_DENSE_FF if moe else 4 * n_embd,
        n_swa=512,
        context_length=8192,
        **(moe_shape if moe else {}),  # type: ignore[arg-type]
    )
    embd = rng.standard_normal((len(vocab), n_embd)).astype(np.float32)
    # Successor of every token along one random cycle through the whole vocabulary.
    order = rng.permutation(len(vocab))
    succ = [0] * len(vocab)
    for a, b in zip(order, np.roll(order, -1)):
        succ[int(a)] = int(b)
    first_part: set[int] = set()
    if shift is not None:
        walk = [vocab.id(PROMPT_LAST_PIECE)]
        for _ in range(SHIFT_AT - 1):
            walk.append(succ[walk[-1]])
        first_part = set(walk)  # the tokens after which heads draft the reply's first SHIFT_AT tokens
    heads = []
    for _ in range(shape.n_mtp):
        wrong = set(rng.choice(len(vocab), size=round(disagree * len(vocab)), replace=False).tolist())
        if shift is not None:
            later = set(rng.choice(len(vocab), size=round(shift * len(vocab)), replace=False).tolist())
            wrong = (wrong & first_part) | (later - first_part)
        table = [succ[succ[t]] if t in wrong else succ[t] for t in range(len(vocab))]
        head = synth.lookup_head(shape, embd, table, logit_gap)
        if calibrated:  # split where wrong: the trunk's token on half of those, just ahead of the other
            unsure = np.zeros(len(vocab), dtype=bool)
            unsure[list(wrong)] = True
            first = [succ[t] if t in wrong and t % 2 else table[t] for t in range(len(vocab))]
            second = [succ[succ[t]] if first[t] == succ[t] else succ[t] for t in range(len(vocab))]
            head.shared_head_head = synth.calibrated_readout(embd, first, second, unsure)
        heads.append(head)
    blocks = [synth.zero_block(shape, layer=i) for i in range(n_layer)]
    for block in blocks:  # zero experts (the text follows the table) but routing that differs per token
        if block.moe is not None:
            block.moe.gate_inp = (rng.standard_normal(block.moe.gate_inp.shape) / np.sqrt(n_embd)).astype(np.float32)
    weights = synth.StepWeights(
        token_embd=embd,
        output_norm=np.ones(n_embd, dtype=np.float32),
        output=synth.readout(embd, succ, logit_gap),
        blocks=blocks,
        heads=heads,
    )
    np_dtype = np.float16 if dtype == "f16" else np.float32
    then = f"-then{shift:g}" if shift is not None else ""
    gap = f"-gap{logit_gap:g}" if logit_gap != LOGIT_GAP else ""
    kind = f"-moe{MOE_EXPERTS}x8" if moe else ""
    cal = "-calibrated" if calibrated else ""
    name = f"bench-{n_layer}L-{n_embd}{kind}-disagree{disagree:g}{cal}{then}{gap}-{dtype}"
    return synth.write_step35(path, shape, vocab, weights, name=name, dtype=np_dtype, chat_template=None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path)
    parser.add_argument("--disagree", type=float, default=0.1)
    parser.add_argument("--layers", type=int, default=24)
    parser.add_argument("--embd", type=int, default=N_EMBD)
    parser.add_argument("--vocab", type=int, default=N_VOCAB)
    parser.add_argument("--dtype", choices=["f16", "f32"], default="f16")
    args = parser.parse_args()
    path = build(
        args.out, disagree=args.disagree, n_layer=args.layers, n_embd=args.embd, n_vocab=args.vocab, dtype=args.dtype
    )
    print(path)


if __name__ == "__main__":
    main()
