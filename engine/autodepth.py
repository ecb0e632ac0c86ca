"""Auto depth: pick the MTP depth that gives the most tokens per second here, on this text.

The best depth depends on the machine, the quantization and the text (PR 20981 saw depth 3 lose
to plain decoding on one quant). The tuner measures it: every decode step reports how many
tokens it produced and how long it took (drafting and verification together); each depth keeps
a decaying sum of both, so the estimate follows the text as it changes; the best estimate wins,
and every `explore_every` steps the least recently tried depth gets a turn. Off (depth 0) is one
of the candidates. Output is lossless whatever it picks: verification is exact.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class DepthTuner:
    max_depth: int
    decay: float = 0.9  # per step at that depth: about the last ten steps count
    explore_every: int = 12
    _tokens: list[float] = field(init=False)
    _seconds: list[float] = field(init=False)
    _last_tried: list[int] = field(init=False)
    _step: int = 0

    def __post_init__(self) -> None:
        n = self.max_depth + 1
        self._tokens = [0.0] * n
        self._seconds = [0.0] * n
        self._last_tried = [-1] * n

    def rate(self, depth: int) -> float | None:
        """Estimated tokens per second at this depth (None until tried)."""
        return self._tokens[depth] / self._seconds[depth] if self._seconds[depth] > 0 else None

    def choose(self) -> int:
        self._step += 1
        untried = [d for d in range(self.max_depth, -1, -1) if self._seconds[d] == 0]
        if untried:
            return untried[0]
        if self._step % self.explore_every == 0:
            return min(range(self.max_depth + 1), key=lambda d: self._last_tried[d])
        return max(range(self.max_depth + 1), key=lambda d: self.rate(d) or 0.0)

    def record(self, depth: int, n_tokens: int, seconds: float) -> None:
        self._tokens[depth] = self.decay * self._tokens[depth] + n_tokens
        self._seconds[depth] = self.decay * self._seconds[depth] + seconds
        self._last_tried[depth] = self._step
