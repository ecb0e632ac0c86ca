"""One message's text while it streams, owned in one place: the answer, the reasoning, and the
character ranges of each that came from accepted MTP drafts.

The transcript paints from it, the periodic save writes from it, and when the engine's final
result arrives `finish` reconciles the two once: the final text wins and the draft spans are
clipped to what still matches. No Qt here, so it is tested on its own.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

KINDS = ("answer", "reasoning")

DraftSpans = dict[str, list[list[int]]]  # kind -> [[start, end), ...] in characters of that text


class ReplyBuffer:
    """Answer and reasoning text plus their draft spans; appends are cheap, reads join lazily."""

    def __init__(
        self,
        content: str = "",
        reasoning: str = "",
        draft_spans: Mapping[str, Sequence[Sequence[int]]] | None = None,
    ) -> None:
        self._text = {"answer": content, "reasoning": reasoning}
        self._pending: dict[str, list[str]] = {"answer": [], "reasoning": []}
        self._length = {kind: len(text) for kind, text in self._text.items()}
        self._given = draft_spans
        # Copied from the given spans only when streaming extends them: thousands of rows each
        # hold a buffer, and many carry long span lists.
        self._spans: DraftSpans | None = None

    @property
    def content(self) -> str:
        return self.text("answer")

    @property
    def reasoning(self) -> str:
        return self.text("reasoning")

    def text(self, kind: str) -> str:
        pending = self._pending[kind]
        if pending:
            self._text[kind] += "".join(pending)
            pending.clear()
        return self._text[kind]

    def spans(self, kind: str) -> Sequence[Sequence[int]]:
        """The draft spans of one text, read-only."""
        if self._spans is not None:
            return self._spans[kind]
        return self._given.get(kind, ()) if self._given else ()

    def draft_spans(self) -> DraftSpans:
        """A copy of every kind's spans, for a message or the database."""
        return {kind: [[int(a), int(b)] for a, b in self.spans(kind)] for kind in KINDS}

    def append(self, kind: str, text: str, from_draft: bool) -> None:
        """Add streamed text; drafted text extends the last span when the two touch."""
        if kind not in KINDS:
            raise ValueError(f"unknown text kind {kind!r}: use one of {', '.join(KINDS)}")
        start = self._length[kind]
        self._pending[kind].append(text)
        self._length[kind] += len(text)
        if not from_draft or not text:
            return
        if self._spans is None:
            self._spans = self.draft_spans()
        spans = self._spans[kind]
        if spans and spans[-1][1] == start:
            spans[-1][1] = self._length[kind]
        else:
            spans.append([start, self._length[kind]])

    def finish(self, content: str, reasoning: str) -> None:
        """Take the engine's final text over what streamed; keep draft spans only where the two agree."""
        finals = {"answer": content, "reasoning": reasoning}
        spans = {kind: _clip(self.spans(kind), _common_prefix(self.text(kind), finals[kind])) for kind in KINDS}
        self._text = finals
        self._length = {kind: len(text) for kind, text in finals.items()}
        self._spans = spans


def _common_prefix(a: str, b: str) -> int:
    """How many leading characters two texts share."""
    n = min(len(a), len(b))
    if a[:n] == b[:n]:
        return n
    low, high = 0, n  # the answer lies in [low, high): a[:low] == b[:low], a[:high] != b[:high]
    while high - low > 1:
        mid = (low + high) // 2
        if a[:mid] == b[:mid]:
            low = mid
        else:
            high = mid
    return low


def _clip(spans: Sequence[Sequence[int]], end: int) -> list[list[int]]:
    return [[int(a), min(int(b), end)] for a, b in spans if a < end]
