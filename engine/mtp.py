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

from engine.llama import Context

F32 = npt.NDArray[np.float32]
DRAFT_TOP_K = 10  # p_min is measured over the top 10 candidates, as llama.cpp does


@dataclass
class Draft:
    tokens: list[int]
    probs: list[float]


class MtpDrafter:
    """Owns the draft context's state for one sequence."""

    def __init__(self, draft: Context, n_heads: int) -> None:
        self.ctx = draft
        self.n_heads = n_heads
        self.n_embd = draft.n_embd
        # Trunk hidden state at the position just before the next token to pair with.
        self.pending_h: F32 = np.zeros(self.n_embd, dtype=np.float32)
        self._verify_h: F32 = np.zeros((0, self.n_embd), dtype=np.float32)
        self.valid_upto = 0  # draft KV holds positions [0, valid_upto) for every head

    def reset(self) -> None:
        self.ctx.clear()
        self.pending_h = np.zeros(self.n_embd, dtype=np.float32)
        self.valid_upto = 0

    def rollback(self, pos: int) -> None:
        self.ctx.remove_from(pos)
        self.valid_upto = min(self.valid_upto, pos)

    def catch_up(self, tokens: list[int], pos0: int, hidden: F32) -> None:
        """Feed every head the tokens the trunk just decoded at pos0.. with their hidden rows.

        hidden[i] is the trunk's state at pos0+i; token i pairs with the state before it,
        so the first token takes the carried-over pending row.
        """
        n = len(tokens)
        if n == 0:
            return
        paired = np.empty((n, self.n_embd), dtype=np.float32)
        paired[0] = self.pending_h
        paired[1:] = hidden[: n - 1]
        try:
            for head in range(self.n_heads):
                # Cells are per position across all head layers: clear the batch's positions
                # so the next head writes its own layer's K/V there (llama.cpp PR 24340).
                self.ctx.remove_from(pos0)
                self.ctx.select_head(head)
                self.ctx.decode(tokens, pos0, outputs="none", hidden=paired)
        finally:
            self.ctx.select_head(0)
        self._verify_h = hidden
        self.pending_h = hidden[n - 1].copy()
        self.valid_upto = pos0 + n

    def accept(self, n_accepted: int) -> None:
        """After verification, carry the hidden row of the last accepted position."""
        if len(self._verify_h):
            self.pending_h = self._verify_h[min(n_accepted, len(self._verify_h) - 1)].copy()

    def draft(self, last: int, pos0: int, depth: int, p_min: float) -> Draft:
        """Draft up to `depth` tokens after `last` (at pos0), one head per token."""
        tokens: list[int] = []
        probs: list[float] = []
        chain = np.empty((depth + 1, self.n_embd), dtype=np.float32)
        chain[0] = self.pending_h
        try:
            for head in range(depth):
                # Each head rebuilds its own layer's KV over the draft region, so drop it first.
                self.ctx.remove_from(pos0)
                self.ctx.select_head(head)
                self.ctx.decode([last, *tokens], pos0, outputs="last", hidden=chain[: head + 1])
                token, prob = top_candidate(self.ctx.logits(head))
                if prob < p_min:
                    break
                tokens.append(token)
                probs.append(prob)
                chain[head + 1] = self.ctx.hidden_row(head)
        finally:
            self.ctx.select_head(0)
        self.valid_upto = min(self.valid_upto, pos0)
        return Draft(tokens, probs)


def top_candidate(logits: F32) -> tuple[int, float]:
    """The best token and its probability among the top DRAFT_TOP_K candidates."""
    k = min(DRAFT_TOP_K, logits.shape[0])
    top = np.argpartition(logits, -k)[-k:]
    values = logits[top].astype(np.float64)
    best = int(top[int(np.argmax(values))])
    prob = float(1.0 / np.exp(values - values.max()).sum())
    return best, prob
