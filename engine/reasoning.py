"""Reasoning apart from the answer: where a reply starts, and streamed text split at <think> tags.

Step Flash, like other reasoning models, writes its thinking between <think> and </think>;
the chat template may open the block in the prompt, so the reply starts inside it.
"""

from __future__ import annotations

from engine.api import TextKind

THINK_OPEN = "<think>"
THINK_CLOSE = "</think>"

Piece = tuple[TextKind, str]


def generation_starts_in_reasoning(prompt: str) -> bool:
    """Whether the prompt leaves the reply inside an opened, unclosed <think> block.

    Templates such as Step 3.5 Flash end the generation prompt with "<think>\\n",
    so the model's reply starts with reasoning and no opening tag.
    """
    start = prompt.rfind(THINK_OPEN)
    if start < 0 or THINK_CLOSE in prompt[start:]:
        return False
    turn = prompt.rfind("<|im_start|>")
    if 0 <= turn < start:
        # ChatML: the tag must be in the final turn, an assistant turn still open.
        return prompt.startswith("<|im_start|>assistant", turn) and "<|im_end|>" not in prompt[start:]
    # Other formats: the prompt must end at the tag.
    return not prompt[start + len(THINK_OPEN) :].strip()


def _partial_tag(text: str, tag: str) -> int:
    """Length of the longest end of text that could be the start of tag."""
    for length in range(min(len(tag) - 1, len(text)), 0, -1):
        if text.endswith(tag[:length]):
            return length
    return 0


class ThinkSplitter:
    """Splits streamed model output into reasoning and answer pieces.

    Tags are not emitted. Newlines right after either tag and right before
    the close tag are dropped: templates put them there around the reasoning.
    Text that may be the start of a tag, or newlines that may precede the
    close tag, are held back until the next feed() or flush().
    """

    def __init__(self, starts_in_reasoning: bool, open_tag: str = THINK_OPEN, close_tag: str = THINK_CLOSE) -> None:
        self._open = open_tag
        self._close = close_tag
        self._reasoning = starts_in_reasoning
        self._strip = starts_in_reasoning  # the prompt ended just after the open tag
        self._held = ""

    def feed(self, text: str) -> list[Piece]:
        out: list[Piece] = []
        data, self._held = self._held + text, ""
        while data:
            if self._strip:
                data = data.lstrip("\n")
                if not data:
                    break
                self._strip = False
            tag = self._close if self._reasoning else self._open
            at = data.find(tag)
            if at < 0:
                cut = len(data) - _partial_tag(data, tag)
                if self._reasoning:
                    cut = len(data[:cut].rstrip("\n"))
                self._emit(out, data[:cut])
                self._held = data[cut:]
                break
            before = data[:at]
            self._emit(out, before.rstrip("\n") if self._reasoning else before)
            data = data[at + len(tag) :]
            self._reasoning = not self._reasoning
            self._strip = True
        return out

    def flush(self) -> list[Piece]:
        out: list[Piece] = []
        held, self._held = self._held, ""
        self._emit(out, held.rstrip("\n") if self._reasoning else held)
        return out

    def _emit(self, out: list[Piece], text: str) -> None:
        if not text:
            return
        kind: TextKind = "reasoning" if self._reasoning else "answer"
        if out and out[-1][0] == kind:
            out[-1] = (kind, out[-1][1] + text)
        else:
            out.append((kind, text))


def split_reasoning(text: str, starts_in_reasoning: bool) -> tuple[str, str]:
    """(reasoning, answer) of a complete reply, split as ThinkSplitter streams it."""
    splitter = ThinkSplitter(starts_in_reasoning)
    parts: dict[TextKind, list[str]] = {"reasoning": [], "answer": []}
    for kind, piece in (*splitter.feed(text), *splitter.flush()):
        parts[kind].append(piece)
    return "".join(parts["reasoning"]), "".join(parts["answer"])
