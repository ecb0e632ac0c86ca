"""Benchmark fixtures: compute-bound Step3.5-shaped GGUFs with a known head agreement.

The default is about 0.5B parameters in f16: 24 layers, width 1024, vocabulary
32k, three MTP heads. Trunk blocks have zero weights (they cost the same compute
as any others) so the trunk follows a successor table exactly, and each head
agrees with the trunk except on a chosen fraction of tokens: the acceptance a
benchmark sees is then set by design, not by luck.

    python -m benchmarks.fixtures OUT.gguf [--disagree 0.1] [--dtype f16|f32] [--layers 24]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from engine import synth

N_VOCAB = 32_000
N_EMBD = 1024
LOGIT_GAP = 8.0


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
) -> Path:
    """Write the fixture; heads 1-3 each disagree with the trunk on `disagree` of all tokens."""
    rng = np.random.default_rng(seed)
    vocab = bench_vocab(n_vocab)
    shape = synth.StepShape(
        n_vocab=len(vocab),
        n_embd=n_embd,
        n_layer=n_layer,
        n_head=16,
        n_head_kv=4,
        n_ff=4 * n_embd,
        n_swa=512,
        context_length=8192,
    )
    embd = rng.standard_normal((len(vocab), n_embd)).astype(np.float32)
    # Successor of every token along one random cycle through the whole vocabulary.
    order = rng.permutation(len(vocab))
    succ = [0] * len(vocab)
    for a, b in zip(order, np.roll(order, -1)):
        succ[int(a)] = int(b)
    heads = []
    for _ in range(shape.n_mtp):
        wrong = set(rng.choice(len(vocab), size=round(disagree * len(vocab)), replace=False).tolist())
        table = [succ[succ[t]] if t in wrong else succ[t] for t in range(len(vocab))]
        heads.append(synth.lookup_head(shape, embd, table, LOGIT_GAP))
    weights = synth.StepWeights(
        token_embd=embd,
        output_norm=np.ones(n_embd, dtype=np.float32),
        output=synth.readout(embd, succ, LOGIT_GAP),
        blocks=[synth.zero_block(shape) for _ in range(n_layer)],
        heads=heads,
    )
    np_dtype = np.float16 if dtype == "f16" else np.float32
    name = f"bench-{n_layer}L-{n_embd}-disagree{disagree:g}-{dtype}"
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
