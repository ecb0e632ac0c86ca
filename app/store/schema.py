"""The database file: where it lives, how it opens (checks, pragmas), its versioned schema and
migrations, the full-text search index, moving a damaged file aside, and what SQLite errors mean
to the user.
"""

from __future__ import annotations

import sqlite3
import time
from contextlib import suppress
from pathlib import Path

import platformdirs

from app.store.records import StoreError

SCHEMA_VERSION = 2
BUSY_TIMEOUT_MS = 5000  # a second Stride window may hold the write lock for a moment

# Index i upgrades a database from user_version i to i + 1; append steps, never edit released ones.
MIGRATIONS: tuple[tuple[str, ...], ...] = (
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
    # Pictures in messages: the files live in the data folder by content hash (images.py); rows name them.
    (
        """CREATE TABLE message_images (
            message_id INTEGER NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
            position INTEGER NOT NULL,
            digest TEXT NOT NULL,
            PRIMARY KEY (message_id, position)
        )""",
        "CREATE INDEX message_images_by_digest ON message_images (digest)",
    ),
)

# Full-text search over message content. Not part of the versioned schema: whether FTS5 exists depends on
# the sqlite build, so the index is attached (and rebuilt) or detached on every open. A streaming reply is
# indexed only once it ends, so the once-a-second saves do not re-tokenize the whole growing text.
FTS_TRIGGERS = ("messages_fts_insert", "messages_fts_delete", "messages_fts_update")
FTS_SETUP = (
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


class Damaged(Exception):
    """The database file is not a database or fails its check; the store moves it aside."""


def default_db_path() -> Path:
    return Path(platformdirs.user_data_dir("Stride", appauthor=False)) / "conversations.db"


def open_database(path: Path) -> tuple[sqlite3.Connection, bool]:
    """Open, check and migrate the database; returns the connection and whether search has FTS5.

    Raises Damaged for a file that is not a sound database, StoreError for anything else."""
    try:
        # isolation_level=None: transactions are explicit (BEGIN IMMEDIATE ... COMMIT) rather than implicit.
        conn = sqlite3.connect(path, isolation_level=None)
    except sqlite3.Error as exc:
        raise store_error(path, exc) from exc
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
            raise Damaged("; ".join(problems[:3]))
        full_text = fts5_available(conn)
        _prepare_schema(conn, path, full_text)
    except sqlite3.Error as exc:
        conn.close()
        if _is_damage(exc):
            raise Damaged(str(exc)) from exc
        raise store_error(path, exc) from exc
    except BaseException:
        conn.close()
        raise
    return conn, full_text


def fts5_available(conn: sqlite3.Connection) -> bool:
    try:
        conn.execute("CREATE VIRTUAL TABLE temp.stride_fts_probe USING fts5 (x, tokenize = 'trigram')")
    except sqlite3.Error:
        return False
    conn.execute("DROP TABLE temp.stride_fts_probe")
    return True


def _prepare_schema(conn: sqlite3.Connection, path: Path, full_text: bool) -> None:
    # IMMEDIATE: a second Stride window opening the same file at once waits instead of migrating twice.
    conn.execute("BEGIN IMMEDIATE")
    try:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"the conversation database {path} was written by a newer Stride "
                f"(schema {version}, this one reads up to {SCHEMA_VERSION}); update Stride"
            )
        for step in MIGRATIONS[version:]:
            for statement in step:
                conn.execute(statement)
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        _attach_search_index(conn, full_text)
        conn.execute("COMMIT")
    except BaseException:
        rollback(conn)
        raise


def _attach_search_index(conn: sqlite3.Connection, full_text: bool) -> None:
    placeholders = ", ".join("?" * len(FTS_TRIGGERS))
    n_triggers = conn.execute(
        f"SELECT count(*) FROM sqlite_master WHERE type = 'trigger' AND name IN ({placeholders})", FTS_TRIGGERS
    ).fetchone()[0]
    if full_text and n_triggers < len(FTS_TRIGGERS):
        # Missing triggers mean the index is new or went stale while a build without FTS5 wrote: rebuild.
        for name in FTS_TRIGGERS:
            conn.execute(f"DROP TRIGGER IF EXISTS {name}")
        for statement in FTS_SETUP:
            conn.execute(statement)
    elif not full_text:
        # Without the fts5 module the triggers would make every write fail; search falls back to LIKE.
        for name in FTS_TRIGGERS:
            conn.execute(f"DROP TRIGGER IF EXISTS {name}")


def move_aside(path: Path, damage: str) -> Path:
    """Rename a damaged database (and its WAL) out of the way; returns where it went."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    target = path.with_name(f"{path.name}.damaged-{stamp}")
    n = 2
    while target.exists():  # a second recovery within the same second must not overwrite the first
        target = path.with_name(f"{path.name}.damaged-{stamp}-{n}")
        n += 1
    try:
        path.rename(target)
        # The WAL belongs to the damaged file: left in place, SQLite would replay it into the new database.
        for suffix in ("-wal", "-shm"):
            side = path.with_name(path.name + suffix)
            if side.exists():
                side.rename(target.with_name(target.name + suffix))
    except OSError as exc:
        raise StoreError(
            f"the conversation database {path} is damaged ({damage}) and Stride cannot move it "
            f"aside ({exc.strerror or exc}); move or delete it yourself, or choose another data folder"
        ) from exc
    return target


def store_error(path: Path, exc: sqlite3.Error) -> StoreError:
    """What an SQLite error means for the user, and what to do."""
    code = _error_code(exc)
    if code in (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB):
        return StoreError(
            f"the conversation database {path} is damaged ({exc}); restart Stride to move it aside and start a new one"
        )
    if code in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
        return StoreError(
            f"the conversation database {path} is in use by another program ({exc}); "
            "close other Stride windows and try again"
        )
    if code == sqlite3.SQLITE_FULL:
        return StoreError(f"cannot write {path}: the disk is full; free space or choose another data folder")
    return StoreError(f"cannot write {path}: {exc}; free space or choose another data folder")


def _error_code(exc: sqlite3.Error) -> int:
    # Primary result code: the low byte of the extended code (e.g. SQLITE_CORRUPT_VTAB -> SQLITE_CORRUPT);
    # errors raised by the sqlite3 module itself (a closed connection) carry no code.
    return int(getattr(exc, "sqlite_errorcode", 0)) & 0xFF


def _is_damage(exc: sqlite3.Error) -> bool:
    return _error_code(exc) in (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB)


def rollback(conn: sqlite3.Connection) -> None:
    """Undo an open transaction without hiding the error that caused it (a failed COMMIT may have rolled back)."""
    if conn.in_transaction:
        with suppress(sqlite3.Error):  # the connection is unusable anyway; the original error says why
            conn.execute("ROLLBACK")
