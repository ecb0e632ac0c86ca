"""Counters and rates for one reply: pure data, no llama.cpp, no Qt."""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field

from engine.api import AutoMode, MtpNote, StatsSnapshot, StopReason

RATE_WINDOW_S = 2.0


@dataclass
class ReplyStats:
    """Everything measured about one reply. Times are time.perf_counter() seconds."""

    n_heads: int = 0
    mtp_depth: int = 0
    mtp_depth_requested: int | str = 0
    depth_now: int | None = None  # with auto depth: the depth the last step ran at
    mtp_note: MtpNote | None = None
    n_prompt: int = 0  # prompt tokens in the context for this reply
    n_prompt_evaluated: int = 0  # of which evaluated now (the rest reused from the KV cache)
    n_predicted: int = 0
    n_image_tokens: int = 0  # prompt positions that hold pictures
    image_encode_seconds: float = 0.0  # encoding this reply's new pictures (reused ones cost nothing)
    n_drafted: int = 0
    n_accepted: int = 0
    n_steps: int = 0  # verification steps (target decode calls while generating)
    # Time inside those target decode calls: with MTP, the rest of a step is drafting and Python,
    # so verify_seconds / decode_seconds is the share of the verification-bound ceiling reached.
    verify_seconds: float = 0.0
    drafted_per_position: list[int] = field(default_factory=list)
    accepted_per_position: list[int] = field(default_factory=list)
    t_start: float = field(default_factory=time.perf_counter)
    t_prompt_done: float | None = None
    t_first_token: float | None = None
    t_last_token: float | None = None
    stop_reason: StopReason | None = None
    # With dynamic draft length or Auto: the pace over plain decoding's, from the measured costs.
    estimated_speedup_vs_plain: float | None = None
    auto_mode: AutoMode | None = None  # with Auto: what the last step did
    _recent: deque[tuple[float, int]] = field(default_factory=deque, repr=False)

    def __post_init__(self) -> None:
        width = max(self.n_heads, 1)
        self.drafted_per_position = [0] * width
        self.accepted_per_position = [0] * width

    def prompt_done(self, n_prompt: int, n_evaluated: int) -> None:
        self.n_prompt = n_prompt
        self.n_prompt_evaluated = n_evaluated
        self.t_prompt_done = time.perf_counter()

    def step(self, n_drafted: int, n_accepted: int, n_emitted: int) -> None:
        """Record one verification step: drafts offered, drafts accepted, tokens emitted."""
        now = time.perf_counter()
        self.n_steps += 1
        self.n_drafted += n_drafted
        self.n_accepted += n_accepted
        for k in range(n_drafted):
            self.drafted_per_position[k] += 1
        for k in range(n_accepted):
            self.accepted_per_position[k] += 1
        if n_emitted:
            self.n_predicted += n_emitted
            if self.t_first_token is None:
                self.t_first_token = now
            self.t_last_token = now
            self._recent.append((now, n_emitted))
            while self._recent and now - self._recent[0][0] > RATE_WINDOW_S:
                self._recent.popleft()

    # Derived figures -----------------------------------------------------------------

    @property
    def acceptance(self) -> float | None:
        return self.n_accepted / self.n_drafted if self.n_drafted else None

    @property
    def acceptance_per_position(self) -> list[float | None]:
        return [a / d if d else None for a, d in zip(self.accepted_per_position, self.drafted_per_position)]

    @property
    def mean_accepted_length(self) -> float | None:
        """Accepted drafts per verification step (llama.cpp's definition)."""
        return self.n_accepted / self.n_steps if self.n_steps and self.mtp_depth else None

    @property
    def decode_seconds(self) -> float:
        if self.t_prompt_done is None or self.t_last_token is None:
            return 0.0
        return self.t_last_token - self.t_prompt_done

    @property
    def tokens_per_second(self) -> float | None:
        """Generated tokens / time from the end of prompt processing to the last token."""
        seconds = self.decode_seconds
        return self.n_predicted / seconds if seconds > 0 else None

    def window_tokens_per_second(self, now: float | None = None) -> float | None:
        """Rate over the last RATE_WINDOW_S seconds: what the reply runs at right now."""
        now = time.perf_counter() if now is None else now
        recent = [(t, n) for t, n in self._recent if now - t <= RATE_WINDOW_S]
        if len(recent) < 2:
            return None
        span = recent[-1][0] - recent[0][0]
        return sum(n for _, n in recent[1:]) / span if span > 0 else None

    @property
    def ttft_s(self) -> float | None:
        return self.t_first_token - self.t_start if self.t_first_token is not None else None

    @property
    def prompt_seconds(self) -> float | None:
        return self.t_prompt_done - self.t_start if self.t_prompt_done is not None else None

    @property
    def prompt_tokens_per_second(self) -> float | None:
        """Evaluation speed: picture encoding is timed apart (image_encode_seconds)."""
        seconds = self.prompt_seconds
        if not seconds or not self.n_prompt_evaluated:
            return None
        return self.n_prompt_evaluated / max(seconds - self.image_encode_seconds, 1e-9)

    def snapshot(self) -> StatsSnapshot:
        """The figures now, frozen: what the app shows and stores, and the CLI's --json fields."""
        depth = max(self.mtp_depth, 0)
        return StatsSnapshot(
            n_prompt=self.n_prompt,
            n_prompt_evaluated=self.n_prompt_evaluated,
            n_predicted=self.n_predicted,
            n_drafted=self.n_drafted,
            n_accepted=self.n_accepted,
            acceptance=self.acceptance,
            drafted_per_position=tuple(self.drafted_per_position[:depth]),
            accepted_per_position=tuple(self.accepted_per_position[:depth]),
            acceptance_per_position=tuple(self.acceptance_per_position[:depth]),
            mean_accepted_length=self.mean_accepted_length,
            n_steps=self.n_steps,
            tokens_per_second=self.tokens_per_second,
            window_tokens_per_second=self.window_tokens_per_second(),
            ttft_s=self.ttft_s,
            prompt_seconds=self.prompt_seconds,
            prompt_tokens_per_second=self.prompt_tokens_per_second,
            n_image_tokens=self.n_image_tokens,
            image_encode_seconds=self.image_encode_seconds,
            decode_seconds=self.decode_seconds,
            verify_seconds=self.verify_seconds,
            mtp_depth=self.mtp_depth,
            mtp_depth_requested=self.mtp_depth_requested,
            mtp_depth_now=self.depth_now,
            mtp_note=self.mtp_note,
            stop_reason=self.stop_reason,
            estimated_speedup_vs_plain=self.estimated_speedup_vs_plain,
            auto_mode=self.auto_mode,
        )
