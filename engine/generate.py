"""The decode loop: prompt (with KV-cache reuse), draft, verify, sample, stop, cancel.

One `Generator` owns a loaded model's target context, its MTP drafter and the
list of tokens whose KV is cached, so a multi-turn chat only evaluates what is
new. Callbacks report progress and text; `should_stop` is polled once per
decode step, so a cancel takes effect after at most one more decode call.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import numpy.typing as npt

from engine.api import AUTO, Delta, GenerationParams, MtpNote, PromptTooLong, Segment, TextKind
from engine.autodraft import AutoDraft, StepPlan
from engine.draftcost import DraftCosts
from engine.llama import Context, DecodeAborted, Model, Sampler
from engine.mtp import F64, MtpDrafter
from engine.reasoning import ThinkSplitter
from engine.stats import ReplyStats
from engine.text import StopMatcher, Utf8Stream


@dataclass
class Reply:
    text: str
    reasoning: str
    token_ids: list[int]
    stats: ReplyStats


class Cancelled(Exception):
    """Prompt processing was stopped by the caller."""


DeltaCallback = Callable[[Delta, ReplyStats], None]
# Tokens evaluated, tokens to evaluate; encoding a picture counts as its tokens (engine.vision).
ProgressCallback = Callable[[int, int], None]


class PromptImage(Protocol):
    """A picture in a prompt (engine.vision.PromptImage): its positions hold placeholder ids."""

    @property
    def start(self) -> int: ...

    @property
    def n_tokens(self) -> int: ...

    @property
    def head_token(self) -> int: ...  # the token the MTP heads are given at its positions

    def embed(self) -> npt.NDArray[np.float32]: ...


def resolve_depth(requested: int | str | None, n_heads: int, weights_absent: bool) -> tuple[int, MtpNote | None]:
    """The (largest) depth MTP will run at, and why it differs from the request."""
    if n_heads == 0:
        return 0, "weights_absent" if weights_absent else "no_heads"
    if requested is None or isinstance(requested, str):  # None or AUTO: all heads available
        return n_heads, None
    if requested <= 0:
        return 0, "depth_zero"
    if requested > n_heads:
        return n_heads, "depth_clamped"
    return requested, None


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n


class Generator:
    """Generates from one model, keeping its KV cache between calls."""

    # Test hook: with rollback off, rejected drafts stay in the KV caches (the bug the
    # lossless tests exist to catch).
    rollback_enabled = True
    # Test hook: with the residual off, a rejected draft is replaced by a fresh draw from the
    # target instead of from max(0, p - q), which biases the output (the statistical test's foil).
    exact_residual = True

    def __init__(
        self,
        model: Model,
        target: Context,
        drafter: MtpDrafter | None,
        weights_absent: bool,
        head_window: int | None = None,
    ) -> None:
        self.model = model
        self.target = target
        self.drafter = drafter
        self.weights_absent = weights_absent
        self.n_heads = drafter.n_heads if drafter else 0
        # Positions a head attends (its sliding window), so the most it needs to have seen to draft
        # exactly; None: heads with full attention need every position.
        self.head_window = head_window
        self.cached: list[int] = []  # tokens at target KV positions 0..len-1
        # Auto's and dynamic drafting's measurements outlive a reply: step costs belong to this
        # machine and model.
        self._auto: AutoDraft | None = None
        self._costs: DraftCosts | None = None

    def auto(self, max_depth: int) -> AutoDraft:
        if self._auto is None or self._auto.max_depth != max_depth:
            self._auto = AutoDraft(max_depth, self.head_window)
        return self._auto

    def forget_auto(self) -> None:
        """Drop what Auto and dynamic drafting measured: the next reply starts from nothing."""
        self._auto = None
        self._costs = None

    def draft_costs(self, max_depth: int) -> DraftCosts:
        if self._costs is None or self._costs.max_depth != max_depth:
            self._costs = DraftCosts(max_depth)
        return self._costs

    def reset(self) -> None:
        """Forget the KV caches: the next prompt is evaluated from scratch."""
        self.target.clear()
        self.cached.clear()
        if self.drafter:
            self.drafter.reset()

    # Prompt -----------------------------------------------------------------------

    def _reusable_prefix(self, tokens: Sequence[int], use_mtp: bool, heads_window: int | None) -> int:
        """Roll the caches back to the longest reusable prefix; return where evaluation starts.

        heads_window: the heads need only the prompt's last this many positions (None: all of them).
        """
        reuse = common_prefix(self.cached, tokens)
        restart = False
        if use_mtp and self.drafter:
            # The drafter must see the positions too (heads that lag behind catch up from its queue),
            # or, with a window, those in it: heads further behind restart at its start. Re-decode one
            # earlier token so its hidden row can pair with the first token the drafter was not given.
            seen = self.drafter.confirmed_upto
            if heads_window is not None and seen < len(tokens) - heads_window:
                seen, restart = len(tokens) - heads_window, True
            reuse = max(min(reuse, seen) - 1, 0)
        if reuse > 0 and not self._can_resume_at(reuse):
            reuse = 0
        if reuse == 0:
            self.target.clear()
            if self.drafter:
                self.drafter.reset()
        elif self.drafter and restart:
            self.drafter.restart(reuse + 1)
        elif self.drafter:
            self.drafter.rollback(reuse + 1 if use_mtp else reuse)
        del self.cached[reuse:]
        return reuse

    def _can_resume_at(self, pos: int) -> bool:
        if not self.target.remove_from(pos):
            return False
        n_swa = self.model.n_swa
        if n_swa <= 0:
            return True
        # A sliding-window cache keeps only recent cells: resuming needs the window before pos.
        pos_min = self.target.pos_min()
        return 0 <= pos_min <= max(0, pos - n_swa)

    def _prefill(
        self,
        tokens: Sequence[int],
        use_mtp: bool,
        should_stop: Callable[[], bool],
        on_progress: ProgressCallback | None,
        heads_window: int | None = None,
        images: Sequence[PromptImage] = (),
        stats: ReplyStats | None = None,
    ) -> int:
        """Evaluate tokens (all but the prompt's last); return how many were evaluated.

        Pictures are encoded when their positions are reached (not when the cache holds them), and
        encoding one counts as much progress as evaluating its positions.
        """
        start = self._reusable_prefix(tokens, use_mtp, heads_window)
        drafter = self.drafter if use_mtp else None
        draft_from = start + 1 if drafter and start > 0 else start
        n_batch = self.target.n_batch
        pending = [image for image in images if image.start + image.n_tokens > start]
        total = len(tokens) - start
        work, done = total + sum(image.n_tokens for image in pending), 0
        rows: npt.NDArray[np.float32] | None = None  # the embedding rows of the picture being evaluated
        self.target.set_abort(should_stop)
        try:
            pos = start
            while pos < len(tokens):
                if should_stop():
                    raise Cancelled()
                image = next((im for im in pending if im.start <= pos < im.start + im.n_tokens), None)
                try:
                    if image is not None:
                        if rows is None:
                            encode_start = time.perf_counter()
                            rows = image.embed()
                            if stats:
                                stats.image_encode_seconds += time.perf_counter() - encode_start
                            done += image.n_tokens
                            if on_progress:
                                on_progress(done, work)
                        end = min(image.start + image.n_tokens, pos + n_batch)
                        self.target.decode_embeddings(rows[pos - image.start : end - image.start], pos)
                        # The heads cannot take embeddings: they get the picture's token with the trunk's rows.
                        heads_see = [image.head_token] * (end - pos)
                        if end == image.start + image.n_tokens:
                            rows = None
                    else:
                        next_image = min((im.start for im in pending if im.start > pos), default=len(tokens))
                        end = min(next_image, pos + n_batch, len(tokens))
                        heads_see = list(tokens[pos:end])
                        self.target.decode(heads_see, pos, outputs="none")
                except DecodeAborted:
                    self.target.remove_from(pos)
                    raise Cancelled() from None
                self.cached.extend(tokens[pos:end])
                if drafter:
                    hidden = self.target.hidden_rows(end - pos)
                    skip = max(draft_from - pos, 0)
                    if skip:
                        drafter.pending_h = hidden[skip - 1].copy()
                    drafter.catch_up(heads_see[skip:], pos + skip, hidden[skip:])
                done += end - pos
                pos = end
                if on_progress:
                    on_progress(done, work)
        finally:
            self.target.set_abort(None)
        return total

    # Generation -------------------------------------------------------------------

    def generate(
        self,
        prompt: Sequence[int],
        params: GenerationParams,
        *,
        starts_in_reasoning: bool | None = None,
        on_delta: DeltaCallback | None = None,
        on_progress: ProgressCallback | None = None,
        should_stop: Callable[[], bool] = lambda: False,
        images: Sequence[PromptImage] = (),
    ) -> Reply:
        """Generate after `prompt`. starts_in_reasoning: None for raw text (no <think> split).
        images: the pictures whose positions in `prompt` hold placeholders (engine.vision)."""
        if not prompt:
            raise ValueError("empty prompt")
        if any(image.start + image.n_tokens >= len(prompt) for image in images):
            raise ValueError("a prompt must end with text after its pictures")
        if sum(1 for token in prompt if token < 0) != sum(image.n_tokens for image in images):
            # llama.cpp would abort on a negative token id
            raise ValueError("the prompt holds picture placeholders without their pictures (pass ChatPrompt.images)")
        n_ctx = self.target.n_ctx
        if len(prompt) >= n_ctx:
            raise PromptTooLong(f"the prompt is {len(prompt)} tokens but the context holds {n_ctx}")
        depth, note = resolve_depth(params.mtp_depth, self.n_heads, self.weights_absent)
        requested = params.mtp_depth if params.mtp_depth is not None else self.n_heads
        stats = ReplyStats(n_heads=self.n_heads, mtp_depth=depth, mtp_depth_requested=requested, mtp_note=note)
        stats.n_image_tokens = sum(image.n_tokens for image in images)
        use_mtp = depth > 0 and self.drafter is not None
        auto = self.auto(depth) if use_mtp and params.mtp_depth == AUTO else None
        dynamic = use_mtp and params.draft_length == "dynamic"
        costs = auto.costs if auto else self.draft_costs(depth) if dynamic else None
        self.target.keep_hidden_rows(use_mtp)

        sampler = Sampler(params.sampler, explicit=params.draft_sampling == "probabilistic")
        try:
            for token in prompt[-params.sampler.repeat_last_n :]:
                if token >= 0:  # picture positions hold negative placeholders
                    sampler.accept(token)
            try:
                window = self.head_window  # heads further behind than their window restart there
                n_evaluated = self._prefill(prompt[:-1], use_mtp, should_stop, on_progress, window, images, stats)
            except Cancelled:
                stats.prompt_done(len(prompt), 0)
                stats.stop_reason = "cancelled"
                return Reply("", "", [], stats)
            stats.prompt_done(len(prompt), n_evaluated + 1)
            out = _TextOut(starts_in_reasoning, params.stop, on_delta, stats)
            # Heads the depth left behind catch up at the next prompt, not in a pause before this
            # reply's end.
            if auto:
                auto.new_reply()
            self._decode_loop(
                prompt[-1], params, depth if use_mtp else 0, sampler, stats, out, should_stop, auto, costs
            )
            if costs and not auto:
                stats.estimated_speedup_vs_plain = costs.speedup_vs_plain()
            return out.finish()
        finally:
            sampler.close()

    def _decode_loop(
        self,
        last: int,
        params: GenerationParams,
        depth: int,
        sampler: Sampler,
        stats: ReplyStats,
        out: _TextOut,
        should_stop: Callable[[], bool],
        auto: AutoDraft | None,
        costs: DraftCosts | None,
    ) -> None:
        target, drafter, model = self.target, self.drafter, self.model
        n_ctx = target.n_ctx
        n_past = len(self.cached)
        rows_on = bool(drafter and depth)  # generate() turned the trunk's hidden rows on for MTP
        while True:
            if should_stop():
                stats.stop_reason = "cancelled"
                return
            if n_past >= n_ctx:
                stats.stop_reason = "context_full"
                return
            remaining = params.max_tokens - stats.n_predicted
            step_start = time.perf_counter()
            # Auto may run this step plainly: no drafts, and no hidden rows for the heads either.
            plan = auto.plan() if auto else StepPlan(rows=rows_on, draft=bool(depth), restart_heads=False)
            if plan.rows != rows_on:
                target.keep_hidden_rows(plan.rows)
                rows_on = plan.rows
            if drafter and plan.restart_heads:
                drafter.restart(n_past)
            if drafter and costs and plan.draft and costs.heads_resting():
                drafter.rest()
            forced = costs.forced_length() if costs and plan.draft else None
            step_depth = depth if forced is None else forced
            n_draft = min(step_depth, remaining - 1, n_ctx - n_past - 1) if plan.draft else 0
            proposal = (
                drafter.draft(
                    last,
                    n_past,
                    n_draft,
                    params.p_min,
                    sampler if sampler.explicit else None,
                    policy=costs if forced is None else None,
                )
                if drafter and n_draft > 0
                else None
            )
            draft = proposal.tokens if proposal else []
            batch = [last, *draft]
            verify_start = time.perf_counter()
            target.decode(batch, n_past, outputs="all" if draft else "last")
            verify_seconds = time.perf_counter() - verify_start
            stats.verify_seconds += verify_seconds
            if proposal and proposal.dists is not None:
                sampled = self._verify_by_rejection(sampler, proposal.tokens, proposal.dists)
            else:
                sampled = self._verify_greedy_drafts(sampler, draft)
            n_accepted = len(sampled) - 1
            if drafter and plan.rows:
                # Only the accepted positions reach the heads, with the next draft call.
                drafter.confirm(batch[: n_accepted + 1], n_past, target.hidden_rows(len(batch))[: n_accepted + 1])
            self.cached.extend(batch[: n_accepted + 1])
            n_past += n_accepted + 1
            if self.rollback_enabled:
                target.remove_from(n_past)
                if drafter and plan.rows:
                    drafter.rollback(n_past)

            emitted: list[int] = []
            for token in sampled:
                if model.is_eog(token):
                    stats.stop_reason = "eog"
                    break
                emitted.append(token)
                if stats.n_predicted + len(emitted) >= params.max_tokens:
                    stats.stop_reason = "max_tokens"
                    break
                if out.would_stop_after(model.piece(token)):
                    stats.stop_reason = "stop_string"
                    break
            stats.step(len(draft), n_accepted, len(emitted))
            step_seconds = time.perf_counter() - step_start
            if costs and plan.draft:
                for head, seconds in enumerate(proposal.call_seconds if proposal else []):
                    costs.record_draft_call(head, seconds)
                costs.record_step(
                    len(batch), verify_seconds, step_seconds, len(sampled), n_accepted, probe=forced is not None
                )
            if auto:
                auto.record(plan, step_seconds, len(sampled), probe=forced is not None)
                stats.depth_now = len(draft) if plan.draft else 0
                stats.auto_mode = "drafting" if plan.draft else "off"
                stats.mtp_note = "auto_off" if auto.settled_off else None
                stats.estimated_speedup_vs_plain = auto.speedup_vs_plain()
            out.emit(emitted, [i < n_accepted for i in range(len(emitted))])
            if stats.stop_reason:
                return
            last = sampled[-1]

    def _verify_greedy_drafts(self, sampler: Sampler, draft: list[int]) -> list[int]:
        """The target's own sampler verifies: keep drafts while it samples the same token."""
        sampled: list[int] = []
        for i in range(len(draft) + 1):
            token = sampler.sample(self.target, i)
            sampled.append(token)
            if i >= len(draft) or token != draft[i]:
                break
        return sampled

    def _verify_by_rejection(self, sampler: Sampler, draft: list[int], dists: list[F64]) -> list[int]:
        """Speculative sampling (Leviathan et al. 2023; Chen et al. 2023): the output follows p exactly.

        Draft x drawn from q is kept with probability min(1, p(x)/q(x)); the first rejected one is
        replaced by a draw from max(0, p - q) normalised; when every draft is kept, one more token
        is drawn from the target at the next row.
        """
        sampled: list[int] = []
        for i, (token, q) in enumerate(zip(draft, dists)):
            p = sampler.distribution(self.target.logits(i))
            if sampler.rng.random() * q[token] < p[token]:
                sampler.accept(token)
                sampled.append(token)
                continue
            residual = np.maximum(p - q, 0.0) if self.exact_residual else p
            total = residual.sum()
            token = sampler.draw(residual / total if total > 0 else p)
            sampler.accept(token)
            sampled.append(token)
            return sampled
        sampled.append(sampler.sample(self.target, len(draft)))
        return sampled


class _TextOut:
    """Bytes -> characters -> stop-string check -> reasoning/answer split -> callback."""

    def __init__(
        self,
        starts_in_reasoning: bool | None,
        stops: Sequence[str],
        on_delta: DeltaCallback | None,
        stats: ReplyStats,
    ) -> None:
        self.utf8 = Utf8Stream()
        self.stop = StopMatcher(stops)
        self.splitter = ThinkSplitter(starts_in_reasoning) if starts_in_reasoning is not None else None
        self.on_delta = on_delta
        self.stats = stats
        self.tokens: list[int] = []
        self.parts: dict[TextKind, list[str]] = {"reasoning": [], "answer": []}
        self._pending: list[str] = []  # text per token, decoded ahead by would_stop_after

    def would_stop_after(self, piece: bytes) -> bool:
        """Decode one token's text; True when it completes a stop string."""
        self._pending.append(self.stop.feed(self.utf8.feed(piece)))
        return self.stop.matched is not None

    def emit(self, tokens: list[int], from_draft: list[bool]) -> None:
        texts, self._pending = self._pending, []
        segments: list[Segment] = []
        for text, drafted in zip(texts, from_draft):
            self._add(segments, text, drafted)
        self.tokens.extend(tokens)
        self._publish(segments, tokens, from_draft)

    def _add(self, segments: list[Segment], text: str, drafted: bool) -> None:
        pieces: list[tuple[TextKind, str]] = (
            self.splitter.feed(text) if self.splitter else ([("answer", text)] if text else [])
        )
        for kind, piece in pieces:
            self.parts[kind].append(piece)
            if segments and segments[-1].kind == kind and segments[-1].from_draft == drafted:
                segments[-1] = Segment(segments[-1].text + piece, kind, drafted)
            else:
                segments.append(Segment(piece, kind, drafted))

    def _publish(self, segments: list[Segment], tokens: list[int], from_draft: list[bool]) -> None:
        if self.on_delta and (segments or tokens):
            self.on_delta(Delta(tuple(segments), tuple(tokens), tuple(from_draft)), self.stats)

    def finish(self) -> Reply:
        segments: list[Segment] = []
        tail = self.stop.feed(self.utf8.flush()) + self.stop.flush()
        self._add(segments, tail, False)
        if self.splitter:
            for kind, piece in self.splitter.flush():
                self.parts[kind].append(piece)
                segments.append(Segment(piece, kind, False))
        self._publish(segments, [], [])
        return Reply("".join(self.parts["answer"]), "".join(self.parts["reasoning"]), self.tokens, self.stats)
