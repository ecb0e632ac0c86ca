"""The chat transcript: a virtualised list of messages, so a 5,000-message conversation opens at
once and streaming stays cheap.

- model.py: the rows (message, text buffer, summary, reasoning toggle) and coalesced repaints;
- delegate.py: a row's layout and painting, with cached layouts and lazy exact heights;
- view.py: the list widget (scrolling anchored across relayouts, hover buttons, keys, menus).
"""

from app.views.transcript.delegate import RowLayout, TranscriptDelegate, thought_duration, thought_label
from app.views.transcript.model import (
    FLUSH_BUDGET,
    FLUSH_INTERVAL_MS,
    LiveText,
    MessageLike,
    RowState,
    TranscriptModel,
)
from app.views.transcript.view import TranscriptView

__all__ = [
    "FLUSH_BUDGET",
    "FLUSH_INTERVAL_MS",
    "LiveText",
    "MessageLike",
    "RowLayout",
    "RowState",
    "TranscriptDelegate",
    "TranscriptModel",
    "TranscriptView",
    "thought_duration",
    "thought_label",
]
