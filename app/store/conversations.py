"""Conversations and their messages in SQLite: every reply is saved while it streams, so a crash
loses at most a second of text.

Plain stdlib sqlite3, no Qt: the store belongs to the GUI thread (the engine thread never touches it),
so one connection with sqlite3's default same-thread check is enough. Every write is one short
transaction; the controller calls `update_message` about once a second while a reply streams.
"""

from __future__ import annotations

import json
import re
import sqlite3
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import replace
from pathlib import Path
from typing import Any

from app.store import exchange, schema
from app.store.images import ImageFolder
from app.store.records import (
    MESSAGE_COLUMNS,
    ROLES,
    STATUSES,
    Conversation,
    ConversationSummary,
    Message,
    StoreError,
    check_choice,
    dumps,
)
from engine.api import StatsSnapshot

INSERT_MESSAGE = f"INSERT INTO messages ({MESSAGE_COLUMNS}) VALUES (NULL, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
SNIPPET_BEFORE, SNIPPET_AFTER = 40, 80  # characters of context around a search hit
FTS_MIN_CHARS = 3  # trigram queries shorter than this match nothing; those use LIKE instead


class ConversationStore:
    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.recovered_from: Path | None = None  # where a damaged database was moved, for the GUI to tell the user
        self.full_text = False  # True when search uses the FTS5 index (this sqlite build has it)
        self._damage: str | None = None
        self.images = ImageFolder(self.path.parent / "images")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(
                f"cannot write {self.path.parent}: {exc.strerror or exc}; free space or choose another data folder"
            ) from exc
        try:
            self._conn, self.full_text = schema.open_database(self.path)
        except schema.Damaged as damaged:
            self._damage = str(damaged)
            self.recovered_from = schema.move_aside(self.path, self._damage)
            self._conn, self.full_text = schema.open_database(self.path)

    @property
    def recovery_message(self) -> str | None:
        """One line for the user when the database had to be replaced, else None."""
        if self.recovered_from is None:
            return None
        return (
            f"the conversation database {self.path} is damaged ({self._damage}); "
            f"Stride moved it to {self.recovered_from} and started a new one"
        )

    def close(self) -> None:
        with suppress(sqlite3.Error):  # closing must not fail because the disk did
            self._conn.execute("PRAGMA optimize")  # keeps query plans good as the history grows; cheap
        self._conn.close()

    def __enter__(self) -> ConversationStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- transactions ----------------------------------------------------------------------------------------

    @contextmanager
    def _guard(self) -> Iterator[sqlite3.Connection]:
        try:
            yield self._conn
        except sqlite3.Error as exc:
            raise schema.store_error(self.path, exc) from exc

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """One atomic write: everything inside commits together or not at all."""
        with self._guard() as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException:
                schema.rollback(conn)
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
        """Delete a conversation, its messages, and the picture files no other message names."""
        with self._transaction() as conn:  # its messages and their picture rows go with it (ON DELETE CASCADE)
            digests = self._digests(conn, "m.conversation_id = ?", (conversation_id,))
            conn.execute("DELETE FROM conversations WHERE id = ?", (conversation_id,))
            orphans = self._unreferenced(conn, digests)
        self.images.remove(orphans)  # after the commit: a failed delete keeps every file its rows name

    @staticmethod
    def _digests(conn: sqlite3.Connection, where: str, params: tuple[Any, ...]) -> set[str]:
        rows = conn.execute(
            f"SELECT i.digest FROM message_images i JOIN messages m ON m.id = i.message_id WHERE {where}", params
        ).fetchall()
        return {digest for (digest,) in rows}

    @staticmethod
    def _unreferenced(conn: sqlite3.Connection, digests: set[str]) -> list[str]:
        return [
            d
            for d in sorted(digests)
            if conn.execute("SELECT 1 FROM message_images WHERE digest = ?", (d,)).fetchone() is None
        ]

    @staticmethod
    def _missing_conversation(conversation_id: int) -> StoreError:
        return StoreError(f"conversation {conversation_id} does not exist; it may have been deleted")

    # -- messages --------------------------------------------------------------------------------------------

    def messages(self, conversation_id: int) -> list[Message]:
        with self._guard() as conn:
            rows = conn.execute(
                f"SELECT {MESSAGE_COLUMNS} FROM messages WHERE conversation_id = ? ORDER BY id", (conversation_id,)
            ).fetchall()
            pictures: dict[int, list[str]] = {}
            for message_id, digest in conn.execute(
                """SELECT i.message_id, i.digest FROM message_images i JOIN messages m ON m.id = i.message_id
                   WHERE m.conversation_id = ? ORDER BY i.message_id, i.position""",
                (conversation_id,),
            ):
                pictures.setdefault(message_id, []).append(digest)
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
                stats=None if stats is None else StatsSnapshot.from_json(json.loads(stats)),
                draft_spans=None if spans is None else json.loads(spans),
                images=tuple(pictures.get(mid, ())),
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
        stats: StatsSnapshot | None = None,
        draft_spans: dict[str, list[list[int]]] | None = None,
        thought_seconds: float | None = None,
        images: Sequence[bytes] = (),
    ) -> Message:
        """Append a message and bump the conversation's updated_at (it moves to the top of the list).

        `images`: PNG files the message carries, stored in the image folder before the row names them."""
        check_choice("role", role, ROLES)
        check_choice("status", status, STATUSES)
        now = time.time()
        digests = tuple(self.images.save(data) for data in images)
        message = Message(
            0, conversation_id, role, content, reasoning, status, now, thought_seconds, stats, draft_spans, digests
        )
        with self._transaction() as conn:
            bumped = conn.execute("UPDATE conversations SET updated_at = ? WHERE id = ?", (now, conversation_id))
            if bumped.rowcount == 0:
                raise self._missing_conversation(conversation_id)
            cursor = conn.execute(INSERT_MESSAGE, _values(message))
            assert cursor.lastrowid is not None
            _insert_images(conn, cursor.lastrowid, digests)
        return replace(message, id=cursor.lastrowid)

    def image_path(self, digest: str) -> Path:
        return self.images.path(digest)

    def image_bytes(self, digest: str) -> bytes:
        return self.images.read(digest)

    def update_message(
        self,
        message_id: int,
        *,
        content: str | None = None,
        reasoning: str | None = None,
        status: str | None = None,
        stats: StatsSnapshot | None = None,
        draft_spans: dict[str, list[list[int]]] | None = None,
        thought_seconds: float | None = None,
    ) -> None:
        """Overwrite only the given fields, in one short transaction (called about once a second while streaming)."""
        if status is not None:
            check_choice("status", status, STATUSES)
        fields = {
            "content": content,
            "reasoning": reasoning,
            "status": status,
            "stats": dumps(None if stats is None else stats.to_json()),
            "draft_spans": dumps(draft_spans),
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
            where = "m.conversation_id = ? AND m.id >= ?"
            digests = self._digests(conn, where, (conversation_id, message_id))
            conn.execute("DELETE FROM messages WHERE conversation_id = ? AND id >= ?", (conversation_id, message_id))
            orphans = self._unreferenced(conn, digests)
        self.images.remove(orphans)

    def mark_interrupted(self) -> int:
        """At startup: replies a crash left "streaming" become "stopped". Returns how many."""
        with self._transaction() as conn:
            return conn.execute("UPDATE messages SET status = 'stopped' WHERE status = 'streaming'").rowcount

    # -- export and import -----------------------------------------------------------------------------------

    def export_markdown(self, conversation_id: int, images_folder: str = "") -> str:
        """The conversation as Markdown; its pictures are linked as `images_folder`/HASH.png (the caller copies
        them there with `image_path`)."""
        return exchange.to_markdown(
            self.get_conversation(conversation_id), self.messages(conversation_id), images_folder
        )

    def export_json(self, conversation_id: int) -> dict[str, Any]:
        """The conversation as JSON, its pictures embedded (base64 PNG) so the one file carries everything."""
        return exchange.to_json(
            self.get_conversation(conversation_id), self.messages(conversation_id), self.images.read
        )

    def import_json(self, data: Mapping[str, Any]) -> Conversation:
        """Add an exported conversation as a new one, all or nothing; StoreError says why bad data was refused."""
        conversation, messages = exchange.validate_export(data)
        now = time.time()
        digests = [tuple(self.images.save(png) for png in m["images"]) for m in messages]  # files before rows
        with self._transaction() as conn:
            cursor = conn.execute(
                "INSERT INTO conversations (title, system_prompt, created_at, updated_at) VALUES (?, ?, ?, ?)",
                (conversation["title"], conversation["system_prompt"], conversation["created_at"], now),
            )
            conversation_id = cursor.lastrowid
            assert conversation_id is not None
            for m, pictures in zip(messages, digests, strict=True):
                message = Message(
                    0,
                    conversation_id,
                    m["role"],
                    m["content"],
                    m["reasoning"],
                    m["status"],
                    m["created_at"],
                    m["thought_seconds"],
                    None if m["stats"] is None else StatsSnapshot.from_json(m["stats"]),
                    m["draft_spans"],
                )
                inserted = conn.execute(INSERT_MESSAGE, _values(message)).lastrowid
                assert inserted is not None
                _insert_images(conn, inserted, pictures)
        return Conversation(
            conversation_id, conversation["title"], conversation["system_prompt"], conversation["created_at"], now
        )


def _insert_images(conn: sqlite3.Connection, message_id: int, digests: Sequence[str]) -> None:
    conn.executemany(
        "INSERT INTO message_images (message_id, position, digest) VALUES (?, ?, ?)",
        ((message_id, position, digest) for position, digest in enumerate(digests)),
    )


def _values(message: Message) -> tuple[Any, ...]:
    """A message's columns after its id, as INSERT_MESSAGE takes them."""
    stats = None if message.stats is None else message.stats.to_json()
    return (
        message.conversation_id,
        message.role,
        message.content,
        message.reasoning,
        message.status,
        message.created_at,
        message.thought_seconds,
        dumps(stats),
        dumps(message.draft_spans),
    )


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
