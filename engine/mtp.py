"""The chained-head MTP drafter: catch-up, draft, accept.

Step 3.5/3.7 Flash carry three MTP heads; head k drafts token t+k+1 from the
token before it and a hidden state (the trunk's for head 0, the previous head's
after that). Every head is one decoder block with its own KV cache layer in the
draft context, so each head must see every position the trunk has seen
("catch-up"): token p paired with the trunk's pre-norm hidden state at p-1.

This follows llama.cpp's `common_speculative_impl_draft_mtp` (chain_heads mode).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from engine.llama import Context, Sampler

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]
DRAFT_TOP_K = 10  # p_min is measured over the top 10 candidates, as llama.cpp does


@dataclass
class Draft:
    tokens: list[int]
    probs: list[float]
    # With probabilistic drafting: the distribution each token was drawn from, for the verifier.
    dists: list[F64] | None = None


class MtpDrafter:
    """Owns the draft context's state for one sequence.

    Unlike llama.cpp's driver, which runs a separate catch-up call per head over the
    whole verification batch (rejected drafts included), confirmed positions wait in
    `_tokens`/`_hidden` and each head catches up inside its next draft call: the
    confirmed rows and the new draft rows are contiguous positions, so a head costs one
    decode per step instead of two, and rejected drafts are never decoded again.
    """

    def __init__(self, draft: Context, n_heads: int) -> None:
        self.ctx = draft
        self.n_heads = n_heads
        self.n_embd = draft.n_embd
        # Trunk hidden state at the position just before the next token to pair with.
        self.pending_h: F32 = np.zeros(self.n_embd, dtype=np.float32)
        self.valid_upto = 0  # draft KV holds positions [0, valid_upto) for every head
        # Confirmed positions valid_upto.. not yet seen by the heads, each token paired with
        # the trunk's hidden row of the position before it.
        self._tokens: list[int] = []
        self._hidden: list[F32] = []

    def reset(self) -> None:
        self.ctx.clear()
        self.pending_h = np.zeros(self.n_embd, dtype=np.float32)
        self.valid_upto = 0
        self._tokens, self._hidden = [], []

    def rollback(self, pos: int) -> None:
        self.ctx.remove_from(pos)
        self.valid_upto = min(self.valid_upto, pos)
        keep = max(pos - self.valid_upto, 0)
        del self._tokens[keep:], self._hidden[keep:]

    def catch_up(self, tokens: list[int], pos0: int, hidden: F32) -> None:
        """Feed every head tokens the trunk decoded at pos0.. (a prompt chunk) with their hidden rows.

        hidden[i] is the trunk's state at pos0+i; token i pairs with the state before it,
        so the first token takes the carried-over pending row.
        """
        if not tokens:
            return
        self.confirm(tokens, pos0, hidden)
        self.flush()

    def confirm(self, tokens: list[int], pos0: int, hidden: F32) -> None:
        """Positions pos0.. now hold `tokens` in the trunk; hidden[i] is its state at pos0+i."""
        n = len(tokens)
        assert pos0 == self.valid_upto + len(self._tokens), "confirmed positions must be contiguous"
        self._tokens.extend(tokens)
        self._hidden.append(self.pending_h)
        self._hidden.extend(hidden[: n - 1])
        self.pending_h = hidden[n - 1].copy()
        if len(self._tokens) + self.n_heads + 1 > self.ctx.n_batch:
            # A long run without drafting (auto depth at Off): the next draft call must fit a batch.
            self.flush()

    def flush(self) -> None:
        """Catch every head up on the confirmed positions it has not seen yet."""
        while self._tokens:
            n = min(len(self._tokens), self.ctx.n_batch)
            self._run_heads(range(self.n_heads), self._tokens[:n], np.asarray(self._hidden[:n], dtype=np.float32))
            self.valid_upto += n
            del self._tokens[:n], self._hidden[:n]

    def _run_heads(self, heads: range, tokens: list[int], hidden: F32) -> None:
        try:
            for head in heads:
                # Cells are per position across all head layers: clear the batch's positions
                # so this head writes its own layer's K/V there (llama.cpp PR 24340).
                self.ctx.remove_from(self.valid_upto)
                self.ctx.select_head(head)
                self.ctx.decode(tokens, self.valid_upto, outputs="none", hidden=hidden)
        finally:
            self.ctx.select_head(0)

    def _done(self) -> None:
        self.valid_upto += len(self._tokens)
        self._tokens, self._hidden = [], []

    def draft(self, last: int, pos0: int, depth: int, p_min: float, sampler: Sampler | None = None) -> Draft:
        """Draft up to `depth` tokens after `last` (at pos0), one head per token.

        Greedy by default (each head's top token); with an explicit `sampler`, each token is
        drawn from the head's distribution shaped like the target's (probabilistic drafting).
        Each head's call also covers the confirmed positions it has not seen yet.
        """
        n_old = len(self._tokens)
        assert pos0 == self.valid_upto + n_old, "draft must start right after the confirmed positions"
        rows = np.empty((n_old + depth + 1, self.n_embd), dtype=np.float32)
        if n_old:
            rows[:n_old] = self._hidden
        rows[n_old] = self.pending_h
        tokens: list[int] = []
        probs: list[float] = []
        dists: list[F64] = []
        heads_run = 0
        try:
            for head in range(depth):
                # Each head rebuilds its own layer's KV from the first unseen position on.
                self.ctx.remove_from(self.valid_upto)
                self.ctx.select_head(head)
                last_row = n_old + head
                self.ctx.decode(
                    [*self._tokens, last, *tokens], self.valid_upto, outputs="last", hidden=rows[: last_row + 1]
                )
                heads_run += 1
                if sampler is None:
                    token, prob = top_candidate(self.ctx.logits(last_row))
                else:
                    dist = sampler.distribution(self.ctx.logits(last_row))
                    token = sampler.draw(dist)
                    prob = float(dist[token])
                    dists.append(dist)
                if prob < p_min:
                    break
                tokens.append(token)
                probs.append(prob)
                rows[last_row + 1] = self.ctx.hidden_row(last_row)
        finally:
            self.ctx.select_head(0)
        if n_old:
            # Heads that drafted nothing this step still need the confirmed positions.
            self._run_heads(range(heads_run, self.n_heads), self._tokens, rows[:n_old])
        self._done()
        return Draft(tokens, probs, dists[: len(tokens)] if sampler is not None else None)


def top_candidate(logits: F32) -> tuple[int, float]:
    """The best token and its probability among the top DRAFT_TOP_K candidates."""
    k = min(DRAFT_TOP_K, logits.shape[0])
    top = np.argpartition(logits, -k)[-k:]
    values = logits[top].astype(np.float64)
    best = int(top[int(np.argmax(values))])
    prob = float(1.0 / np.exp(values - values.max()).sum())
    return best, prob
