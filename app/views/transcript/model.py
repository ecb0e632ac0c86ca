"""The transcript's rows: each message with its text buffer, summary line and reasoning toggle.

Rows only ever append. Streamed text goes into a row's `ReplyBuffer` (the controller hands the
streaming reply's own buffer to its row, so the text has one owner); a timer publishes changed
rows at most 10 times a second (one dataChanged for that row), less often when re-rendering a
long reply gets slow (`FLUSH_BUDGET`). The caller's message object is never mutated: `message(row)`
returns the object last given for the row, `live_text(row)` the text and draft spans including
everything streamed since. When the reply ends, the caller stores the final message and calls
`update_message`, which gives the row a buffer of that message's own content.
"""

from __future__ import annotations

import itertools
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeAlias

from PySide6.QtCore import QAbstractListModel, QModelIndex, QObject, QPersistentModelIndex, Qt, QTimer
from PySide6.QtGui import QImage

from app.reply_buffer import DraftSpans, ReplyBuffer

ROLE_LABELS = {"user": "You", "assistant": "Assistant", "system": "System"}
BADGES = {"stopped": "Stopped", "error": "Error"}

FLUSH_INTERVAL_MS = 100  # streaming repaints at most 10 times a second,
FLUSH_BUDGET = 0.1  # and spends at most about this share of the GUI thread on it: a long reply
MAX_FLUSH_INTERVAL_MS = 400  # (tens of ms to re-render) repaints less often, down to this
THUMBNAIL_PIXELS = 320  # a transcript picture's longest edge in pixels: sharp at 160 px on a 2x screen
THUMBNAIL_CACHE = 64  # decoded thumbnails kept; opening a long picture chat decodes each once

AnyIndex: TypeAlias = QModelIndex | QPersistentModelIndex


class MessageLike(Protocol):
    """What the transcript reads from a message (app.store.Message has these and more)."""

    @property
    def id(self) -> int: ...
    @property
    def conversation_id(self) -> int: ...  # not read here; callers acting on message(row) need it
    @property
    def role(self) -> str: ...
    @property
    def content(self) -> str: ...
    @property
    def reasoning(self) -> str: ...
    @property
    def status(self) -> str: ...
    @property
    def thought_seconds(self) -> float | None: ...
    @property
    def draft_spans(self) -> Mapping[str, Sequence[Sequence[int]]] | None: ...
    @property
    def images(self) -> Sequence[str]: ...  # content hashes of the pictures a user message carries


@dataclass(frozen=True)
class LiveText:
    """A row's text including everything streamed into it."""

    content: str
    reasoning: str
    draft_spans: DraftSpans


class RowState:
    """One row: the caller's message, the text buffer it paints from, its summary and toggle."""

    def __init__(self, uid: int, message: MessageLike, buffer: ReplyBuffer | None = None) -> None:
        self.uid = uid  # identity for caches: unlike a row number or message id, never reused
        self.version = 0  # bumped on every visible change; part of every cache key
        self.summary = ""
        self.expanded: bool | None = None  # None: the default, expanded only while streaming
        self.load(message, buffer)

    def load(self, message: MessageLike, buffer: ReplyBuffer | None = None) -> None:
        """Show this message, from `buffer` when given (a streaming reply's own), else its content."""
        self.message = message
        self.buffer = buffer or ReplyBuffer(message.content, message.reasoning, message.draft_spans)

    @property
    def role(self) -> str:
        return self.message.role

    @property
    def status(self) -> str:
        return self.message.status

    @property
    def is_expanded(self) -> bool:
        return self.status == "streaming" if self.expanded is None else self.expanded

    def text(self, kind: str) -> str:
        return self.buffer.text(kind)

    def spans(self, kind: str) -> Sequence[Sequence[int]]:
        return self.buffer.spans(kind)

    def live(self) -> LiveText:
        return LiveText(self.buffer.content, self.buffer.reasoning, self.buffer.draft_spans())


class TranscriptModel(QAbstractListModel):
    """Messages of one conversation, with streaming buffers; rows only ever append."""

    SummaryRole = Qt.ItemDataRole.UserRole + 1  # str: the stats line under a finished reply

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._rows: list[RowState] = []
        self._by_id: dict[int, int] = {}
        self._uids = itertools.count()
        self._dirty: set[int] = set()
        self._flush_timer = QTimer(self)
        self._flush_timer.setSingleShot(True)
        self._flush_timer.setInterval(FLUSH_INTERVAL_MS)
        self._flush_timer.timeout.connect(self._flush)
        self._read_picture: Callable[[str], bytes | None] = lambda _digest: None
        self._thumbnails: OrderedDict[str, QImage] = OrderedDict()

    # Pictures --------------------------------------------------------------------------

    def set_picture_reader(self, read: Callable[[str], bytes | None]) -> None:
        """How to get a picture's PNG by its content hash (None when the file is missing)."""
        self._read_picture = read
        self._thumbnails.clear()

    def picture(self, digest: str) -> QImage:
        """The whole picture (a null image when its file is missing)."""
        data = self._read_picture(digest)
        return QImage() if data is None else QImage.fromData(data)

    def thumbnail(self, digest: str) -> QImage:
        """The picture scaled for the transcript (cached; a null image when its file is missing)."""
        cached = self._thumbnails.get(digest)
        if cached is not None:
            self._thumbnails.move_to_end(digest)
            return cached
        image = self.picture(digest)
        if not image.isNull():
            edge = THUMBNAIL_PIXELS
            image = image.scaled(
                edge, edge, Qt.AspectRatioMode.KeepAspectRatio, Qt.TransformationMode.SmoothTransformation
            )
        self._thumbnails[digest] = image
        if len(self._thumbnails) > THUMBNAIL_CACHE:
            self._thumbnails.popitem(last=False)
        return image

    # Qt model ------------------------------------------------------------------------

    def rowCount(self, parent: AnyIndex | None = None) -> int:
        return 0 if parent is not None and parent.isValid() else len(self._rows)

    def data(self, index: AnyIndex, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if not index.isValid() or not 0 <= index.row() < len(self._rows):
            return None
        state = self._rows[index.row()]
        if role == Qt.ItemDataRole.DisplayRole:
            return state.text("answer")
        if role == Qt.ItemDataRole.AccessibleTextRole:
            label = ROLE_LABELS.get(state.role, state.role.capitalize())
            badge = BADGES.get(state.status)
            prefix = f"{label} ({badge.lower()})" if badge else label
            n_pictures = len(state.message.images)
            if n_pictures:  # a screen reader hears that pictures are there, and that they open larger
                prefix += f", {n_pictures} picture{'s' if n_pictures > 1 else ''} (click to view larger)"
            return f"{prefix}: {state.text('answer')}"
        if role == Qt.ItemDataRole.AccessibleDescriptionRole:
            return state.summary
        if role == self.SummaryRole:
            return state.summary
        return None

    def flags(self, index: AnyIndex) -> Qt.ItemFlag:
        return Qt.ItemFlag.ItemIsEnabled | Qt.ItemFlag.ItemIsSelectable if index.isValid() else Qt.ItemFlag.NoItemFlags

    # Transcript API --------------------------------------------------------------------

    def set_messages(
        self,
        messages: Sequence[MessageLike],
        summaries: Mapping[int, str] | None = None,
        buffers: Mapping[int, ReplyBuffer] | None = None,
    ) -> None:
        """Replace every row (opening a conversation); summaries: the line under a reply, by row;
        buffers: by message id, the text a row shows instead of its message's (a streaming reply).

        Summaries come in with the rows: set one by one, each would be a dataChanged and a
        re-layout (2.5 s for a 5,000-message chat).
        """
        self.beginResetModel()
        self._flush_timer.stop()
        self._dirty.clear()
        buffers = buffers or {}
        self._rows = [RowState(next(self._uids), m, buffers.get(m.id)) for m in messages]
        for row, summary in (summaries or {}).items():
            self._rows[row].summary = summary
        self._by_id = {m.id: row for row, m in enumerate(messages)}
        self.endResetModel()

    def append_message(self, message: MessageLike, buffer: ReplyBuffer | None = None) -> int:
        """Add a row; with `buffer`, it shows that buffer's text (a streaming reply's own)."""
        row = len(self._rows)
        self.beginInsertRows(QModelIndex(), row, row)
        self._rows.append(RowState(next(self._uids), message, buffer))
        self._by_id[message.id] = row
        self.endInsertRows()
        return row

    def message(self, row: int) -> MessageLike:
        """The object last given for this row; streamed text is in live_text(row)."""
        return self._rows[row].message

    def live_text(self, row: int) -> LiveText:
        return self._rows[row].live()

    def state(self, row: int) -> RowState:
        return self._rows[row]

    def row_of(self, message_id: int) -> int | None:
        return self._by_id.get(message_id)

    def update_message(self, row: int, message: MessageLike) -> None:
        """Replace one row's message (final text, status, stats); the row shows that message's text."""
        state = self._rows[row]
        if self._by_id.get(state.message.id) == row:
            del self._by_id[state.message.id]
        self._by_id[message.id] = row
        state.load(message)
        self._dirty.discard(row)
        self._changed(row)

    def append_stream(self, row: int, kind: str, text: str, from_draft: bool) -> None:
        """Append streamed text to the row's answer or reasoning; repainted at most 10 times a second."""
        self._rows[row].buffer.append(kind, text, from_draft)
        self.streamed(row)

    def streamed(self, row: int) -> None:
        """The row's buffer has grown: repaint it with the next flush."""
        self._dirty.add(row)
        if not self._flush_timer.isActive():
            self._flush_timer.start()

    def set_summary(self, row: int, summary: str) -> None:
        if self._rows[row].summary != summary:
            self._rows[row].summary = summary
            self._changed(row)

    def set_reasoning_expanded(self, row: int, expanded: bool) -> None:
        self._rows[row].expanded = expanded
        self._changed(row)

    def _changed(self, row: int) -> None:
        self._rows[row].version += 1
        index = self.index(row)
        self.dataChanged.emit(index, index)

    def _flush(self) -> None:
        start = time.perf_counter()
        dirty, self._dirty = sorted(self._dirty), set()
        for row in dirty:
            self._changed(row)  # views re-render the row on screen before this returns
        cost_ms = (time.perf_counter() - start) * 1000
        interval = min(MAX_FLUSH_INTERVAL_MS, max(FLUSH_INTERVAL_MS, round(cost_ms / FLUSH_BUDGET)))
        self._flush_timer.setInterval(interval)
