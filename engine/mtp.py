"""The chained-head MTP drafter: catch-up, draft, accept.

Step 3.5/3.7 Flash carry three MTP heads, numbered here as in the README and the speed panel
from 1: head k drafts the token k places after the last accepted one, from the token before
it and a hidden state (the trunk's for head 1, the previous head's after that); in code the
head index runs from 0, as llama.cpp's does. Every head is one decoder block with its own
KV cache layer in the draft context, so each head must see every position the trunk has
seen ("catch-up"): token p paired with the trunk's pre-norm hidden state at p-1.

This follows llama.cpp's `common_speculative_impl_draft_mtp` (chain_heads mode).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import numpy.typing as npt

from engine.llama import Context, Sampler

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]
DRAFT_TOP_K = 10  # p_min is measured over the top 10 candidates, as llama.cpp does
# Confirmed positions a head may fall behind before it catches up on its own: each waits with
# the trunk's hidden row (16 KiB on Step 3.5 Flash), so 8 MiB at most.
LAZY_ROWS = 512
# A head further behind than this at its draft call catches up in a call of its own first: a
# drafting head is normally at most a step behind, and a head call's cost (what dynamic drafting times)
# should not include rows the depth did not cause.
LAG_IN_DRAFT = 8
# Positions heads keep when dynamic drafting rests them (engine.draftcost: the first head was not worth
# calling for a while): catching three heads up on every position cost about 4 % of a mixture-of-experts
# reply drafting almost nothing; resting heads start afresh on the last RESTING_CONTEXT positions instead.
RESTING_CONTEXT = 16
NO_ROWS = np.empty((0, 0), np.float32)


@dataclass
class Draft:
    tokens: list[int]
    # With probabilistic drafting: the distribution each token was drawn from, for the verifier.
    dists: list[F64] | None = None
    call_seconds: list[float] = field(default_factory=list)  # per head called: its draft call's time


class DraftLengthPolicy(Protocol):
    """Decides, draft by draft, how long a step's draft gets (engine.draftcost.DraftCosts)."""

    def wants_head(self, head: int, chain: float, rows: int) -> bool:
        """Run head `head`? The drafts so far all survive with probability `chain`; the batch has `rows` rows."""
        ...

    def keeps(self, chain: float, rows: int) -> bool:
        """Verify the token just drafted? The chain up to it survives with probability `chain`."""
        ...

    def confidence(self, head: int, probability: float) -> float:
        """The chance head `head`'s draft survives, from its own probability for the token."""
        ...


class MtpDrafter:
    """Owns the draft context's state for one sequence.

    llama.cpp's driver runs a separate catch-up call per head over the whole verification
    batch (rejected drafts included), then the draft call. Here confirmed positions wait in
    a queue and each head catches up lazily, inside its next draft call: the positions it
    has not seen and the new draft rows are contiguous, so a drafting head costs one decode
    per step, rejected drafts are never decoded again, the draft row for the last sampled
    token stays as that position's catch-up row, and heads the depth does not use
    cost nothing until they are needed again (dynamic draft length, p_min, a deeper setting). The
    queue is bounded: past LAZY_ROWS unseen positions, lagging heads catch up on their own.
    """

    lazy = True  # test hook: False catches every head up at every step, as before

    def __init__(self, draft: Context, n_heads: int) -> None:
        self.ctx = draft
        self.n_heads = n_heads
        self.n_embd = draft.n_embd
        # Trunk hidden state at the position just before the next token to pair with.
        self.pending_h: F32 = np.zeros(self.n_embd, dtype=np.float32)
        # Head h's KV holds positions [0, _seen[h]).
        self._seen = [0] * n_heads
        # Confirmed positions _queue_start.. that some head has not seen, each token paired
        # with the trunk's hidden row of the position before it.
        self._queue_start = 0
        self._tokens: list[int] = []
        self._hidden: list[F32] = []
        self._max_lag_in_draft = max(0, min(LAG_IN_DRAFT, draft.n_batch - n_heads - 1))  # a draft call fits a batch

    @property
    def valid_upto(self) -> int:
        """Every head's KV holds positions [0, valid_upto).

        Between a draft and its verification that can be one past the confirmed positions: the
        row for the last sampled token, which verification always confirms.
        """
        return min(self._seen, default=0)

    @property
    def confirmed_upto(self) -> int:
        """Positions [0, confirmed_upto) are confirmed: each head holds them or catches up from the queue."""
        return self._queue_start + len(self._tokens)

    def reset(self) -> None:
        self.ctx.clear()
        self.pending_h = np.zeros(self.n_embd, dtype=np.float32)
        self._seen = [0] * self.n_heads
        self._queue_start = 0
        self._tokens, self._hidden = [], []

    def restart(self, pos: int) -> None:
        """Start the heads afresh at `pos`, having missed the positions before it (Auto ran plainly).

        A head attends only its last n_swa positions, so once it has seen that many from here it
        drafts exactly as if it had never stopped; until then its drafts are only less often right
        (verification keeps the text exact). The first position pairs with no hidden row.
        """
        self.reset()
        self._seen = [pos] * self.n_heads
        self._queue_start = pos

    def rest(self) -> None:
        """Let heads that fell far behind forget all but the last RESTING_CONTEXT confirmed positions.

        Called while dynamic drafting leaves the heads uncalled: once the first head (and so every head)
        is twice that far behind, they all start afresh RESTING_CONTEXT positions back, so the next call
        catches up on at most twice that many rows, not on every position since the last call. Until
        they have seen their window again their drafts are only less often right (verification keeps
        the text exact), and text that suits them again refills it one position a step.
        """
        keep_from = self.confirmed_upto - RESTING_CONTEXT
        if keep_from - self._seen[0] <= RESTING_CONTEXT:
            return
        self.ctx.clear()
        self._seen = [keep_from] * self.n_heads
        self._trim_queue()

    def rollback(self, pos: int) -> None:
        self.ctx.remove_from(pos)
        self._seen = [min(seen, pos) for seen in self._seen]
        if pos < self._queue_start:  # every head had seen up to there: nothing left to queue
            self._queue_start = pos
        keep = pos - self._queue_start
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
        assert pos0 == self.confirmed_upto, "confirmed positions must be contiguous"
        self._tokens.extend(tokens)
        self._hidden.append(self.pending_h)
        self._hidden.extend(hidden[: n - 1])
        self.pending_h = hidden[n - 1].copy()
        if len(self._tokens) > LAZY_ROWS:
            self.flush()

    def flush(self) -> None:
        """Catch every head up on the confirmed positions it has not seen yet."""
        try:
            for head in range(self.n_heads):
                self._catch_up_head(head)
        finally:
            self.ctx.select_head(0)
        self._trim_queue()

    def _catch_up_head(self, head: int, outputs: int = 0) -> int:
        """Catch head `head` up; its last call outputs logits for up to `outputs` last rows. Rows in that call."""
        n = 0
        while self._seen[head] < self.confirmed_upto:
            start = self._seen[head]
            n = min(self.confirmed_upto - start, self.ctx.n_batch)
            last_call = start + n == self.confirmed_upto
            self._decode_head(head, start, n, [], NO_ROWS, outputs=min(outputs, n) if last_call else 0)
        return n

    def _decode_head(
        self, head: int, start: int, n_queued: int, extra: list[int], extra_rows: F32, outputs: str | int
    ) -> None:
        """Run head `head` over queued positions start..start+n_queued, then the extra (draft) rows.

        Cells are per position across all head layers: clear the positions first so this head
        writes its own layer's K/V there (llama.cpp PR 24340).
        """
        i = start - self._queue_start
        tokens = [*self._tokens[i : i + n_queued], *extra]
        rows = np.asarray([*self._hidden[i : i + n_queued], *extra_rows], dtype=np.float32).reshape(-1, self.n_embd)
        self.ctx.remove_from(start)
        self.ctx.select_head(head)
        self.ctx.decode(tokens, start, outputs=outputs, hidden=rows)
        self._seen[head] = start + n_queued

    def _trim_queue(self) -> None:
        drop = min(self.valid_upto - self._queue_start, len(self._tokens))
        if drop > 0:
            del self._tokens[:drop], self._hidden[:drop]
            self._queue_start += drop

    def draft(
        self,
        last: int,
        pos0: int,
        depth: int,
        p_min: float,
        sampler: Sampler | None = None,
        policy: DraftLengthPolicy | None = None,
    ) -> Draft:
        """Draft up to `depth` tokens after `last` (at pos0), one head per token.

        Greedy by default (each head's top token); with an explicit `sampler`, each token is
        drawn from the head's distribution shaped like the target's (probabilistic drafting).
        With a `policy`, each head runs and each token is kept only while the chain of drafts is
        likely enough to survive for what it costs (dynamic draft length).
        Each head's call also covers the confirmed positions it has not seen yet.
        """
        end = self.confirmed_upto
        assert pos0 == end, "draft must start right after the confirmed positions"
        chain = np.empty((depth + 1, self.n_embd), dtype=np.float32)
        chain[0] = self.pending_h
        tokens: list[int] = []
        dists: list[F64] = []
        call_seconds: list[float] = []
        survives = 1.0  # the chance every draft so far passes verification, by the heads' own probabilities
        try:
            for head in range(depth):
                if policy and not policy.wants_head(head, survives, len(tokens) + 1):
                    break
                if end - self._seen[head] > self._max_lag_in_draft:
                    self._catch_up_head(head)
                start = self._seen[head]
                called = time.perf_counter()
                self._decode_head(head, start, end - start, [last, *tokens], chain[: head + 1], outputs="last")
                call_seconds.append(time.perf_counter() - called)
                # The row for `last` (at end, with the trunk's hidden row before it) is the very
                # row catch-up will give that position once verification confirms it, which it
                # always does: keep it, so the next call starts a row later. (The eager test
                # hook decodes it again, as llama.cpp's driver does.)
                if self.lazy:
                    self._seen[head] = end + 1
                logits = self.ctx.logits(end - start + head)
                if sampler is None:
                    token = greedy_draft(logits, p_min)
                else:
                    dist = sampler.distribution(logits)
                    token = sampler.draw(dist)
                    dists.append(dist)
                    if dist[token] < p_min:
                        token = None
                if token is None:
                    break
                if policy:
                    stated = float(dists[-1][token]) if sampler is not None else top_probability(logits)
                    survives *= policy.confidence(head, stated)
                    if not policy.keeps(survives, len(tokens) + 1):
                        break
                tokens.append(token)
                chain[head + 1] = self.ctx.hidden_row(end - start + head)
        finally:
            self.ctx.select_head(0)
        if not self.lazy:
            self.flush()
        self._trim_queue()
        return Draft(tokens, dists[: len(tokens)] if sampler is not None else None, call_seconds)


def greedy_draft(logits: F32, p_min: float) -> int | None:
    """The best token, or None when its probability among the top DRAFT_TOP_K candidates is below p_min.

    The probability needs a partial sort of the vocabulary, a few tenths of a millisecond per draft
    on a 128k vocabulary: only p_min asks for it.
    """
    best = int(np.argmax(logits))
    if p_min <= 0.0:
        return best
    k = min(DRAFT_TOP_K, logits.shape[0])
    top = np.partition(logits, -k)[-k:].astype(np.float64)
    prob = 1.0 / np.exp(top - float(logits[best])).sum()
    return best if prob >= p_min else None


def top_probability(logits: F32) -> float:
    """The softmax probability of the best token over the whole vocabulary (its calibrated confidence)."""
    top = float(logits.max())
    return 1.0 / float(np.exp(logits - top, dtype=np.float32).sum(dtype=np.float64))
