"""The built-in demo model: a tiny Step3.5-shaped GGUF with three MTP heads.

It has "memorised" one passage: every token of the passage leads to the next,
and any other token leads to the passage's start, so whatever you say, it
answers with the passage (reasoning first, then the answer, as Step Flash does).
Its heads agree with the trunk on most tokens, so MTP visibly drafts, accepts
and rejects. It is generated on first use into the user data folder: nothing is
downloaded, and Stride works offline on a fresh machine.
"""

from __future__ import annotations

import contextlib
import itertools
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import platformdirs

from engine import synth

DEMO_VERSION = 4
REASONING = (
    "The user wrote to me. I am the tiny demo model, so I will explain what Stride does and how to load a real model."
)
ANSWER = (
    "Hello! I am Stride's built-in demo model: a small Step 3.5-shaped network with three MTP heads, "
    "made so that Stride works offline on a fresh machine. I can only recite this passage, but what "
    "you see is real: the trunk verifies every token the heads draft, so the text is identical with MTP "
    "on or off. Watch the statistics panel, where accepted drafts arrive several tokens per step. "
    "To chat for real, open a Step 3.5 or 3.7 Flash GGUF from the model menu. Enjoy \u2014 and have fun!"
)
# Each head misses one passage token in fifteen, at its own offset: chains of three drafts then survive
# often enough (about 80 % of drafts accepted) for depth 3 to show its worth, and rejections stay visible.
WRONG_EVERY = 15


def demo_path() -> Path:
    return Path(platformdirs.user_data_dir("Stride", appauthor=False)) / "models" / f"stride-demo-v{DEMO_VERSION}.gguf"


def ensure_demo_model(path: Path | None = None) -> Path:
    """Build the demo model if it is not there yet; return its path. Safe to call from several
    threads and processes at once: one builds, the others wait for it and find the file there."""
    path = path or demo_path()
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    with _file_lock(path.with_name(path.name + ".lock")):  # threads too: each opens its own handle
        if not path.exists():
            build_demo_model(path)
            _remove_older_versions(path)
    return path


def _remove_older_versions(path: Path) -> None:
    """Earlier demo versions beside this one are 190 MB each that nothing opens: settings and
    conversations name the demo as DEMO_NAME, never by file."""
    for old in path.parent.glob("stride-demo-v*.gguf"):
        version = old.stem.removeprefix("stride-demo-v")
        if version.isdigit() and int(version) < DEMO_VERSION:
            old.unlink(missing_ok=True)


@contextlib.contextmanager
def _file_lock(lock_path: Path) -> Iterator[None]:
    """Hold an exclusive lock on lock_path until the block ends; the OS drops it if the process dies."""
    with open(lock_path, "a+b") as handle:
        if sys.platform == "win32":
            import msvcrt

            handle.seek(0)
            while True:
                try:
                    msvcrt.locking(handle.fileno(), msvcrt.LK_LOCK, 1)  # retries for 10 s, then raises
                    break
                except OSError:
                    continue
            try:
                yield
            finally:
                handle.seek(0)
                msvcrt.locking(handle.fileno(), msvcrt.LK_UNLCK, 1)
        else:
            import fcntl

            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def passage_units() -> list[str | bytes]:
    """The passage as vocabulary units: text pieces, raw UTF-8 bytes for non-ASCII.

    Each unit must appear once, since the next token is a function of the current
    one; a repeated word is joined to its neighbour until the piece is unique.
    """
    units: list[str | bytes] = []
    seen: set[str] = set()

    def add_words(text: str, *, first_space: bool) -> None:
        words = [" " + w for w in text.split(" ")]
        if not first_space:
            words[0] = words[0][1:]
        i = 0
        while i < len(words):
            piece = words[i]
            i += 1
            while piece in seen and i < len(words):
                piece += words[i]
                i += 1
            if piece in seen or not piece.isascii():
                raise ValueError(f"the demo passage cannot be made of unique ASCII pieces at {piece!r}")
            seen.add(piece)
            units.append(piece)

    head, dash, tail = ANSWER.partition("\u2014")
    add_words(REASONING, first_space=False)
    units.append("</think>")
    units.append("\n\n")
    add_words(head.rstrip(), first_space=False)
    units.append(" ")
    units.extend(bytes([b]) for b in dash.encode())
    add_words(tail.lstrip(), first_space=True)
    units.append("<|im_end|>")
    return units


def build_demo_model(path: Path) -> Path:
    units = passage_units()
    pieces = [u for u in units if isinstance(u, str) and u not in ("</think>", "<|im_end|>", " ")]
    vocab = synth.Vocab.build(pieces)
    ids = [vocab.byte_id(u[0]) if isinstance(u, bytes) else vocab.id(u) for u in units]
    if len(set(ids)) != len(ids):
        raise AssertionError("demo passage repeats a token")
    succ = [ids[0]] * len(vocab)
    for a, b in itertools.pairwise(ids):
        succ[a] = b
    # Shaped so MTP shows what it does on a real model: the trunk (12 blocks, about 140 MB of f16
    # weights) is read once per verification however many drafts it checks, while a head is one
    # block, so verifying drafts costs far more than drafting them. A 2-block demo drafted as
    # slowly as it verified, and MTP made it slower.
    n_embd = 1024
    shape = synth.StepShape(n_vocab=len(vocab), n_embd=n_embd, n_layer=12, n_head=8, n_head_kv=2, n_ff=1024, n_swa=64)
    embd = synth.one_hot_embeddings(len(vocab), n_embd)
    heads = []
    for k in range(shape.n_mtp):
        wrong = {ids[i] for i in range(k * 3, len(ids) - 1, WRONG_EVERY)}
        heads.append(
            synth.lookup_head(shape, embd, [succ[succ[t]] if t in wrong else succ[t] for t in range(len(vocab))], 8.0)
        )
    weights = synth.StepWeights(
        token_embd=embd,
        output_norm=np.ones(n_embd, dtype=np.float32),
        output=synth.readout(embd, succ, 8.0),
        blocks=[synth.zero_block(shape) for _ in range(shape.n_layer)],
        heads=heads,
    )
    # write_step35 writes to a temporary name of its own and renames: a half-written demo is never picked up.
    return synth.write_step35(
        path, shape, vocab, weights, name="Stride demo (Step3.5-shaped, 3 MTP heads)", dtype=np.float16
    )
