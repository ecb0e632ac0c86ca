"""Conversations in SQLite: every reply is saved while it streams, so a crash loses at most a second of text.

Plain stdlib sqlite3, no Qt: the store belongs to the GUI thread (the engine thread never touches it),
so one connection with sqlite3's default same-thread check is enough. Every write is one short
transaction; the controller calls `update_message` about once a second while a reply streams.
"""

from __future__ import annotations

import json
import math
import re
import sqlite3
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import platformdirs

SCHEMA_VERSION = 1
EXPORT_FORMAT = "stride-conversation"
EXPORT_VERSION = 1
ROLES = ("user", "assistant", "system")
STATUSES = ("complete", "streaming", "stopped", "error")
BUSY_TIMEOUT_MS = 5000  # a second Stride window may hold the write lock for a moment
SNIPPET_BEFORE, SNIPPET_AFTER = 40, 80  # characters of context around a search hit

# Index i upgrades a database from user_version i to i + 1; append steps, never edit released ones.
_MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        """CREATE TABLE conversations (
            id INTEGER PRIMARY KEY,
            title TEXT NOT NULL,
            system_prompt TEXT NOT NULL DEFAULT '',
            created_at REAL NOT NULL,
            updated_at REAL NOT NULL
        )""",
        "CREATE INDEX conversations_by_update ON conversations (updated_at DESC, id DESC)",
        # AUTOINCREMENT: a deleted reply's id is never reused, so a late save for it cannot land on a new message.
        """CREATE TABLE messages (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            conversation_id INTEGER NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
            role TEXT NOT NULL CHECK (role IN ('user', 'assistant', 'system')),
            content TEXT NOT NULL,
            reasoning TEXT NOT NULL DEFAULT '',
            status TEXT NOT NULL CHECK (status IN ('complete', 'streaming', 'stopped', 'error')),
            created_at REAL NOT NULL,
            thought_seconds REAL,
            stats TEXT,
            draft_spans TEXT
        )""",
        "CREATE INDEX messages_by_conversation ON messages (conversation_id, id)",
        # Tiny partial index: finding replies a crash left streaming costs nothing at startup.
        "CREATE INDEX messages_streaming ON messages (id) WHERE status = 'streaming'",
    ),
)

# Full-text search over message content. Not part of the versioned schema: whether FTS5 exists depends on
# the sqlite build, so the index is attached (and rebuilt) or detached on every open. A streaming reply is
# indexed only once it ends, so the once-a-second saves do not re-tokenize the whole growing text.
_FTS_TRIGGERS = ("messages_fts_insert", "messages_fts_delete", "messages_fts_update")
_FTS_SETUP = (
    # trigram: substring matching like LIKE, case-insensitive beyond ASCII; external content, no second copy.
    """CREATE VIRTUAL TABLE IF NOT EXISTS messages_fts
        USING fts5 (content, content = 'messages', content_rowid = 'id', tokenize = 'trigram')""",
    """CREATE TRIGGER messages_fts_insert AFTER INSERT ON messages WHEN new.status <> 'streaming' BEGIN
        INSERT INTO messages_fts (rowid, content) VALUES (new.id, new.content);
    END""",
    """CREATE TRIGGER messages_fts_delete AFTER DELETE ON messages WHEN old.status <> 'streaming' BEGIN
        INSERT INTO messages_fts (messages_fts, rowid, content) VALUES ('delete', old.id, old.content);
    END""",
    # An external-content index must be told exactly what it holds, hence the mirrored conditions.
    """CREATE TRIGGER messages_fts_update AFTER UPDATE OF content, status ON messages BEGIN
        INSERT INTO messages_fts (messages_fts, rowid, content)
            SELECT 'delete', old.id, old.content WHERE old.status <> 'streaming';
        INSERT INTO messages_fts (rowid, content) SELECT new.id, new.content WHERE new.status <> 'streaming';
    END""",
    "INSERT INTO messages_fts (messages_fts) VALUES ('delete-all')",
    "INSERT INTO messages_fts (rowid, content) SELECT id, content FROM messages WHERE status <> 'streaming'",
)
FTS_MIN_CHARS = 3  # trigram queries shorter than this match nothing; those use LIKE instead

_MESSAGE_COLUMNS = (
    "id, conversation_id, role, content, reasoning, status, created_at, thought_seconds, stats, draft_spans"
)
_STATUS_NOTES = {
    "streaming": "_(the reply was still being written)_",
    "stopped": "_(the reply was stopped before it finished)_",
    "error": "_(the reply ended with an error)_",
}


class StoreError(Exception):
    """A one-line message naming the problem and what to do; safe to show the user as is."""


class _Damaged(Exception):
    """The database file is not a database or fails its check; the store moves it aside."""


@dataclass
class Message:
    id: int
    conversation_id: int
    role: str  # "user" | "assistant" | "system"
    content: str  # the answer text (markdown)
    reasoning: str  # <think> text, "" if none
    status: str  # "complete" | "streaming" | "stopped" | "error"
    created_at: float  # unix time
    thought_seconds: float | None
    stats: dict[str, Any] | None  # engine ReplyStats.snapshot() for assistant replies
    draft_spans: dict[str, list[list[int]]] | None  # {"answer"|"reasoning": [[start, end], ...]} from accepted drafts


@dataclass
class Conversation:
    id: int
    title: str
    system_prompt: str
    created_at: float
    updated_at: float


@dataclass
class ConversationSummary:
    id: int
    title: str
    updated_at: float
    n_messages: int
    snippet: str  # the matched message text around the hit for search results, else ""


def default_db_path() -> Path:
    return Path(platformdirs.user_data_dir("Stride", appauthor=False)) / "conversations.db"


def _fts5_available(conn: sqlite3.Connection) -> bool:
    try:
        conn.execute("CREATE VIRTUAL TABLE temp.stride_fts_probe USING fts5 (x, tokenize = 'trigram')")
    except sqlite3.Error:
        return False
    conn.execute("DROP TABLE temp.stride_fts_probe")
    return True


def _error_code(exc: sqlite3.Error) -> int:
    # Primary result code: the low byte of the extended code (e.g. SQLITE_CORRUPT_VTAB -> SQLITE_CORRUPT);
    # errors raised by the sqlite3 module itself (a closed connection) carry no code.
    return int(getattr(exc, "sqlite_errorcode", 0)) & 0xFF


def _is_damage(exc: sqlite3.Error) -> bool:
    return _error_code(exc) in (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB)


def _like_pattern(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def _snippet(content: str, query: str) -> str:
    """The text around the first hit, on one line; the start of the text if the hit cannot be located."""
    hit = re.search(re.escape(query), content, re.IGNORECASE)
    start, end = (hit.start(), hit.end()) if hit else (0, 0)
    lo, hi = max(0, start - SNIPPET_BEFORE), min(len(content), end + SNIPPET_AFTER)
    text = " ".join(content[lo:hi].split())
    return ("…" if lo > 0 else "") + text + ("…" if hi < len(content) else "")


def _dumps(value: Any) -> str | None:
    return None if value is None else json.dumps(value, separators=(",", ":"))


def _format_seconds(seconds: float) -> str:
    return f"{seconds:.1f}" if seconds < 10 else f"{seconds:.0f}"


class ConversationStore:
    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.recovered_from: Path | None = None  # where a damaged database was moved, for the GUI to tell the user
        self.full_text = False  # True when search uses the FTS5 index (this sqlite build has it)
        self._damage: str | None = None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(
                f"cannot write {self.path.parent}: {exc.strerror or exc}; free space or choose another data folder"
            ) from exc
        try:
            self._conn = self._open()
        except _Damaged as damaged:
            self._damage = str(damaged)
            self.recovered_from = self._move_aside()
            self._conn = self._open()

    @property
    def recovery_message(self) -> str | None:
        """One line for the user when the database had to be replaced, else None."""
        if self.recovered_from is None:
            return None
        return (
            f"the conversation database {self.path} is damaged ({self._damage}); "
            f"Stride moved it to {self.recovered_from} and started a new one"
        )

    # -- opening ---------------------------------------------------------------------------------------------

    def _open(self) -> sqlite3.Connection:
        try:
            # isolation_level=None: transactions are explicit (BEGIN IMMEDIATE ... COMMIT) rather than implicit.
            conn = sqlite3.connect(self.path, isolation_level=None)
        except sqlite3.Error as exc:
            raise self._error(exc) from exc
        try:
            conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            conn.execute("PRAGMA journal_mode = WAL")
            # With WAL, NORMAL syncs only at checkpoints: a commit survives an application crash or SIGKILL
            # (it is in the WAL file) and the database can never be corrupted; only a power cut can drop
            # the last commits. FULL would fsync on every once-a-second streaming save for no gain here.
            conn.execute("PRAGMA synchronous = NORMAL")
            conn.execute("PRAGMA foreign_keys = ON")
            # Title search in Python: SQLite's own lower() and LIKE fold ASCII only ("Привет" vs "привет").
            conn.create_function("stride_fold", 1, str.casefold, deterministic=True)
            problems = [row[0] for row in conn.execute("PRAGMA quick_check")]
            if problems != ["ok"]:
                raise _Damaged("; ".join(problems[:3]))
            self.full_text = _fts5_available(conn)
            self._prepare_schema(conn)
        except sqlite3.Error as exc:
            conn.close()
            if _is_damage(exc):
                raise _Damaged(str(exc)) from exc
            raise self._error(exc) from exc
        except BaseException:
            conn.close()
            raise
        return conn

    def _prepare_schema(self, conn: sqlite3.Connection) -> None:
        # IMMEDIATE: a second Stride window opening the same file at once waits instead of migrating twice.
        conn.execute("BEGIN IMMEDIATE")
        try:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise StoreError(
                    f"the conversation database {self.path} was written by a newer Stride "
                    f"(schema {version}, this one reads up to {SCHEMA_VERSION}); update Stride"
                )
            for step in _MIGRATIONS[version:]:
                for statement in step:
                    conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            self._attach_search_index(conn)
            conn.execute("COMMIT")
        except BaseException:
            _rollback(conn)
            raise

    def _attach_search_index(self, conn: sqlite3.Connection) -> None:
        placeholders = ", ".join("?" * len(_FTS_TRIGGERS))
        n_triggers = conn.execute(
            f"SELECT count(*) FROM sqlite_master WHERE type = 'trigger' AND name IN ({placeholders})", _FTS_TRIGGERS
        ).fetchone()[0]
        if self.full_text and n_triggers < len(_FTS_TRIGGERS):
            # Missing triggers mean the index is new or went stale while a build without FTS5 wrote: rebuild.
            for name in _FTS_TRIGGERS:
                conn.execute(f"DROP TRIGGER IF EXISTS {name}")
            for statement in _FTS_SETUP:
                conn.execute(statement)
        elif not self.full_text:
            # Without the fts5 module the triggers would make every write fail; search falls back to LIKE.
            for name in _FTS_TRIGGERS:
                conn.execute(f"DROP TRIGGER IF EXISTS {name}")

    def _move_aside(self) -> Path:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        target = self.path.with_name(f"{self.path.name}.damaged-{stamp}")
        n = 2
        while target.exists():  # a second recovery within the same second must not overwrite the first
            target = self.path.with_name(f"{self.path.name}.damaged-{stamp}-{n}")
            n += 1
        try:
            self.path.rename(target)
            # The WAL belongs to the damaged file: left in place, SQLite would replay it into the new database.
            for suffix in ("-wal", "-shm"):
                side = self.path.with_name(self.path.name + suffix)
                if side.exists():
                    side.rename(target.with_name(target.name + suffix))
        except OSError as exc:
            raise StoreError(
                f"the conversation database {self.path} is damaged ({self._damage}) and Stride cannot move it "
                f"aside ({exc.strerror or exc}); move or delete it yourself, or choose another data folder"
            ) from exc
        return target

    def close(self) -> None:
        with suppress(sqlite3.Error):  # closing must not fail because the disk did
            self._conn.execute("PRAGMA optimize")  # keeps query plans good as the history grows; cheap
        self._conn.close()

    def __enter__(self) -> ConversationStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- errors and transactions -----------------------------------------------------------------------------

    def _error(self, exc: sqlite3.Error) -> StoreError:
        code = _error_code(exc)
        if code in (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB):
            return StoreError(
                f"the conversation database {self.path} is damaged ({exc}); "
                "restart Stride to move it aside and start a new one"
            )
        if code in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
            return StoreError(
                f"the conversation database {self.path} is in use by another program ({exc}); "
                "close other Stride windows and try again"
            )
        if code == sqlite3.SQLITE_FULL:
            return StoreError(f"cannot write {self.path}: the disk is full; free space or choose another data folder")
        return StoreError(f"cannot write {self.path}: {exc}; free space or choose another data folder")

    @contextmanager
    def _guard(self) -> Iterator[sqlite3.Connection]:
        try:
            yield self._conn
        except sqlite3.Error as exc:
            raise self._error(exc) from exc

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """One atomic write: everything inside commits together or not at all."""
        with self._guard() as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException:
                _rollback(conn)
                raise

    # -- conversations ---------------------------------------------------------------------------------------

    def list_conversations(self, search: str = "") -> list[ConversationSummary]:
        """Newest first; with `search`, only conversations whose title or message text contains it (any case)."""
        query = search.strip()
        with self._guard() as conn:
            if not query:
                rows = conn.execute(
                    """SELECT c.id, c.title, c.updated_at,
                              (SELECT count(*) FROM messages m WHERE m.conversation_id = c.id), NULL
                       FROM conversations c ORDER BY c.updated_at DESC, c.id DESC"""
                ).fetchall()
            else:
                rows = conn.execute(
                    f"""WITH hits AS ({self._hits_sql(query)})
                        SELECT c.id, c.title, c.updated_at,
                               (SELECT count(*) FROM messages m WHERE m.conversation_id = c.id),
                               (SELECT content FROM messages WHERE id = hits.message_id)
                        FROM conversations c LEFT JOIN hits ON hits.conversation_id = c.id
                        WHERE hits.message_id IS NOT NULL OR instr(stride_fold(c.title), ?) > 0
                        ORDER BY c.updated_at DESC, c.id DESC""",
                    (self._hits_param(query), query.casefold()),
                ).fetchall()
        return [
            ConversationSummary(cid, title, updated, n, "" if text is None else _snippet(text, query))
            for cid, title, updated, n, text in rows
        ]

    def _hits_sql(self, query: str) -> str:
        """The newest message containing the query in each conversation."""
        if self.full_text and len(query) >= FTS_MIN_CHARS:
            return """SELECT m.conversation_id, max(m.id) AS message_id
                      FROM messages_fts JOIN messages m ON m.id = messages_fts.rowid
                      WHERE messages_fts MATCH ? GROUP BY m.conversation_id"""
        # LIKE folds ASCII case only; it serves queries too short for trigrams and sqlite builds without FTS5.
        # Like the index, it skips a reply still streaming, so both paths find the same messages.
        return """SELECT conversation_id, max(id) AS message_id FROM messages
                  WHERE status <> 'streaming' AND content LIKE ? ESCAPE '\\' GROUP BY conversation_id"""

    def _hits_param(self, query: str) -> str:
        if self.full_text and len(query) >= FTS_MIN_CHARS:
            return '"' + query.replace('"', '""') + '"'  # one quoted phrase: no FTS5 query syntax applies
        return _like_pattern(query)

    def create_conversation(self, title: str = "New chat", system_prompt: str = "") -> Conversation:
        now = time.time()
        with self._transaction() as conn:
            cursor = conn.execute(
                "INSERT INTO conversations (title, system_prompt, created_at, updated_at) VALUES (?, ?, ?, ?)",
                (title, system_prompt, now, now),
            )
        assert cursor.lastrowid is not None
        return Conversation(cursor.lastrowid, title, system_prompt, now, now)

    def get_conversation(self, conversation_id: int) -> Conversation:
        with self._guard() as conn:
            row = conn.execute(
                "SELECT id, title, system_prompt, created_at, updated_at FROM conversations WHERE id = ?",
                (conversation_id,),
            ).fetchone()
        if row is None:
            raise self._missing_conversation(conversation_id)
        return Conversation(*row)

    def rename_conversation(self, conversation_id: int, title: str) -> None:
        self._update_conversation(conversation_id, "title", title)

    def set_system_prompt(self, conversation_id: int, system_prompt: str) -> None:
        self._update_conversation(conversation_id, "system_prompt", system_prompt)

    def _update_conversation(self, conversation_id: int, column: str, value: str) -> None:
        with self._transaction() as conn:
            cursor = conn.execute(f"UPDATE conversations SET {column} = ? WHERE id = ?", (value, conversation_id))
            if cursor.rowcount == 0:
                raise self._missing_conversation(conversation_id)

    def delete_conversation(self, conversation_id: int) -> None:
        with self._transaction() as conn:  # its messages go with it (ON DELETE CASCADE)
            conn.execute("DELETE FROM conversations WHERE id = ?", (conversation_id,))

    @staticmethod
    def _missing_conversation(conversation_id: int) -> StoreError:
        return StoreError(f"conversation {conversation_id} does not exist; it may have been deleted")

    # -- messages --------------------------------------------------------------------------------------------

    def messages(self, conversation_id: int) -> list[Message]:
        with self._guard() as conn:
            rows = conn.execute(
                f"SELECT {_MESSAGE_COLUMNS} FROM messages WHERE conversation_id = ? ORDER BY id", (conversation_id,)
            ).fetchall()
        return [
            Message(
                id=mid,
                conversation_id=cid,
                role=role,
                content=content,
                reasoning=reasoning,
                status=status,
                created_at=created,
                thought_seconds=thought,
                stats=None if stats is None else json.loads(stats),
                draft_spans=None if spans is None else json.loads(spans),
            )
            for mid, cid, role, content, reasoning, status, created, thought, stats, spans in rows
        ]

    def add_message(
        self,
        conversation_id: int,
        role: str,
        content: str,
        *,
        reasoning: str = "",
        status: str = "complete",
        stats: dict[str, Any] | None = None,
        draft_spans: dict[str, list[list[int]]] | None = None,
        thought_seconds: float | None = None,
    ) -> Message:
        """Append a message and bump the conversation's updated_at (it moves to the top of the list)."""
        _check_choice("role", role, ROLES)
        _check_choice("status", status, STATUSES)
        now = time.time()
        with self._transaction() as conn:
            bumped = conn.execute("UPDATE conversations SET updated_at = ? WHERE id = ?", (now, conversation_id))
            if bumped.rowcount == 0:
                raise self._missing_conversation(conversation_id)
            cursor = conn.execute(
                f"INSERT INTO messages ({_MESSAGE_COLUMNS}) VALUES (NULL, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    conversation_id,
                    role,
                    content,
                    reasoning,
                    status,
                    now,
                    thought_seconds,
                    _dumps(stats),
                    _dumps(draft_spans),
                ),
            )
        assert cursor.lastrowid is not None
        return Message(
            cursor.lastrowid,
            conversation_id,
            role,
            content,
            reasoning,
            status,
            now,
            thought_seconds,
            stats,
            draft_spans,
        )

    def update_message(
        self,
        message_id: int,
        *,
        content: str | None = None,
        reasoning: str | None = None,
        status: str | None = None,
        stats: dict[str, Any] | None = None,
        draft_spans: dict[str, list[list[int]]] | None = None,
        thought_seconds: float | None = None,
    ) -> None:
        """Overwrite only the given fields, in one short transaction (called about once a second while streaming)."""
        if status is not None:
            _check_choice("status", status, STATUSES)
        fields = {
            "content": content,
            "reasoning": reasoning,
            "status": status,
            "stats": _dumps(stats),
            "draft_spans": _dumps(draft_spans),
            "thought_seconds": thought_seconds,
        }
        given = {column: value for column, value in fields.items() if value is not None}
        if not given:
            return
        assignments = ", ".join(f"{column} = ?" for column in given)
        with self._transaction() as conn:
            cursor = conn.execute(f"UPDATE messages SET {assignments} WHERE id = ?", (*given.values(), message_id))
            if cursor.rowcount == 0:
                raise StoreError(f"message {message_id} does not exist; its conversation may have been deleted")

    def delete_messages_from(self, conversation_id: int, message_id: int) -> None:
        """Delete this message and every later one in the conversation (regenerate, edit and resend)."""
        with self._transaction() as conn:
            found = conn.execute(
                "SELECT 1 FROM messages WHERE id = ? AND conversation_id = ?", (message_id, conversation_id)
            ).fetchone()
            if found is None:
                raise StoreError(f"message {message_id} is not in conversation {conversation_id}; nothing was deleted")
            conn.execute("DELETE FROM messages WHERE conversation_id = ? AND id >= ?", (conversation_id, message_id))

    def mark_interrupted(self) -> int:
        """At startup: replies a crash left "streaming" become "stopped". Returns how many."""
        with self._transaction() as conn:
            return conn.execute("UPDATE messages SET status = 'stopped' WHERE status = 'streaming'").rowcount

    # -- export and import -----------------------------------------------------------------------------------

    def export_markdown(self, conversation_id: int) -> str:
        conversation = self.get_conversation(conversation_id)
        title = " ".join(conversation.title.split()) or "Untitled chat"
        parts = [f"# {title}"]
        if conversation.system_prompt:
            quoted = "\n".join(f"> {line}".rstrip() for line in conversation.system_prompt.splitlines())
            parts.append(f"**System prompt**\n\n{quoted}")
        for message in self.messages(conversation_id):
            parts.append(f"## {message.role.capitalize()}")
            if message.reasoning:
                summary = (
                    "Reasoning"
                    if message.thought_seconds is None
                    else f"Thought for {_format_seconds(message.thought_seconds)} s"
                )
                # Blank lines around the text let viewers render markdown inside the HTML block.
                parts.append(f"<details><summary>{summary}</summary>\n\n{message.reasoning.strip()}\n\n</details>")
            if message.content:
                parts.append(message.content.strip())
            if message.status in _STATUS_NOTES:
                parts.append(_STATUS_NOTES[message.status])
        return "\n\n".join(parts) + "\n"

    def export_json(self, conversation_id: int) -> dict[str, Any]:
        conversation = self.get_conversation(conversation_id)
        return {
            "format": EXPORT_FORMAT,
            "version": EXPORT_VERSION,
            "title": conversation.title,
            "system_prompt": conversation.system_prompt,
            "created_at": conversation.created_at,
            "messages": [
                {
                    "role": m.role,
                    "content": m.content,
                    "reasoning": m.reasoning,
                    "created_at": m.created_at,
                    "status": m.status,
                    "thought_seconds": m.thought_seconds,
                    "stats": m.stats,
                    "draft_spans": m.draft_spans,
                }
                for m in self.messages(conversation_id)
            ],
        }

    def import_json(self, data: Mapping[str, Any]) -> Conversation:
        """Add an exported conversation as a new one, all or nothing; StoreError says why bad data was refused."""
        conversation, messages = _validate_export(data)
        now = time.time()
        with self._transaction() as conn:
            cursor = conn.execute(
                "INSERT INTO conversations (title, system_prompt, created_at, updated_at) VALUES (?, ?, ?, ?)",
                (conversation["title"], conversation["system_prompt"], conversation["created_at"], now),
            )
            conversation_id = cursor.lastrowid
            conn.executemany(
                f"INSERT INTO messages ({_MESSAGE_COLUMNS}) VALUES (NULL, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    (
                        conversation_id,
                        m["role"],
                        m["content"],
                        m["reasoning"],
                        m["status"],
                        m["created_at"],
                        m["thought_seconds"],
                        _dumps(m["stats"]),
                        _dumps(m["draft_spans"]),
                    )
                    for m in messages
                ),
            )
        assert conversation_id is not None
        return Conversation(
            conversation_id, conversation["title"], conversation["system_prompt"], conversation["created_at"], now
        )


def _rollback(conn: sqlite3.Connection) -> None:
    """Undo an open transaction without hiding the error that caused it (a failed COMMIT may have rolled back)."""
    if conn.in_transaction:
        with suppress(sqlite3.Error):  # the connection is unusable anyway; the original error says why
            conn.execute("ROLLBACK")


def _check_choice(name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(allowed)}, not {value!r}")


class _BadExport(Exception):
    pass


def _validate_export(data: Any) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Check an export's shape and types; returns the conversation fields and the messages, defaults filled in."""
    try:
        if not isinstance(data, Mapping):
            raise _BadExport(f"expected a JSON object, got {type(data).__name__}")
        if data.get("format") != EXPORT_FORMAT:
            raise _BadExport(f'"format" must be "{EXPORT_FORMAT}", got {data.get("format")!r}')
        version = data.get("version")
        if type(version) is not int:
            raise _BadExport(f'"version" must be an integer, got {version!r}')
        if version > EXPORT_VERSION:
            raise _BadExport(f"version {version} is newer than this Stride reads ({EXPORT_VERSION}); update Stride")
        if version < 1:
            raise _BadExport(f"unknown version {version}")
        conversation = {
            "title": _text(data, "title", ""),
            "system_prompt": _text(data, "system_prompt", "", default=""),
            "created_at": _time_field(data, "created_at", ""),
        }
        raw_messages = data.get("messages")
        if not isinstance(raw_messages, list):
            raise _BadExport(f'"messages" must be a list, got {type(raw_messages).__name__}')
        return conversation, [_validate_message(raw, f"messages[{i}].") for i, raw in enumerate(raw_messages)]
    except _BadExport as exc:
        raise StoreError(f"this file is not a Stride conversation export: {exc}") from None


def _text(data: Mapping[str, Any], key: str, where: str, default: str | None = None) -> str:
    value = data.get(key, default)
    if value is None:
        raise _BadExport(f'"{where}{key}" is missing')
    if not isinstance(value, str):
        raise _BadExport(f'"{where}{key}" must be text, got {type(value).__name__}')
    return value


def _time_field(data: Mapping[str, Any], key: str, where: str) -> float:
    value = data.get(key, time.time())
    if type(value) not in (int, float) or not math.isfinite(value) or value < 0:
        raise _BadExport(f'"{where}{key}" must be a unix time, got {value!r}')
    return float(value)


def _validate_message(raw: Any, where: str) -> dict[str, Any]:
    if not isinstance(raw, Mapping):
        raise _BadExport(f'"{where[:-1]}" must be an object, got {type(raw).__name__}')
    role = _text(raw, "role", where)
    if role not in ROLES:
        raise _BadExport(f'"{where}role" must be one of {", ".join(ROLES)}, got {role!r}')
    status = _text(raw, "status", where, default="complete")
    if status not in STATUSES:
        raise _BadExport(f'"{where}status" must be one of {", ".join(STATUSES)}, got {status!r}')
    thought = raw.get("thought_seconds")
    if thought is not None and (type(thought) not in (int, float) or not math.isfinite(thought) or thought < 0):
        raise _BadExport(f'"{where}thought_seconds" must be a number of seconds or null, got {thought!r}')
    stats = raw.get("stats")
    if stats is not None:
        if not isinstance(stats, Mapping):
            raise _BadExport(f'"{where}stats" must be an object or null, got {type(stats).__name__}')
        try:
            json.dumps(stats)
        except (TypeError, ValueError) as exc:
            raise _BadExport(f'"{where}stats" is not plain JSON ({exc})') from None
    return {
        "role": role,
        "content": _text(raw, "content", where),
        "reasoning": _text(raw, "reasoning", where, default=""),
        # Nothing streams into an imported message: a reply exported mid-stream arrives as stopped.
        "status": "stopped" if status == "streaming" else status,
        "created_at": _time_field(raw, "created_at", where),
        "thought_seconds": None if thought is None else float(thought),
        "stats": None if stats is None else dict(stats),
        "draft_spans": _validate_spans(raw.get("draft_spans"), where),
    }


def _validate_spans(spans: Any, where: str) -> dict[str, list[list[int]]] | None:
    if spans is None:
        return None
    if not isinstance(spans, Mapping):
        raise _BadExport(f'"{where}draft_spans" must be an object or null, got {type(spans).__name__}')
    result: dict[str, list[list[int]]] = {}
    for part, ranges in spans.items():
        valid = isinstance(ranges, list) and all(
            isinstance(r, list) and len(r) == 2 and all(type(x) is int for x in r) and 0 <= r[0] <= r[1] for r in ranges
        )
        if not isinstance(part, str) or not valid:
            raise _BadExport(f'"{where}draft_spans" must map names to lists of [start, end] character ranges')
        result[part] = [list(r) for r in ranges]
    return result
