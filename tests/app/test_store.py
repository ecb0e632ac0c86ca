"""The conversation store: CRUD, search, export/import, damaged files, unwritable folders, crash safety."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import app.store.schema
from app.store import ConversationStore, StoreError, default_db_path
from engine.api import StatsSnapshot
from tests.capabilities import as_unprivileged_user, unavailable

ROOT = Path(__file__).resolve().parents[2]
FTS5_FIX = "use a Python whose sqlite3 has FTS5 (python.org, pyenv, Debian and Ubuntu builds do)"
STATS = StatsSnapshot(tokens_per_second=41.5, n_predicted=12, acceptance=0.75)
SPANS = {"answer": [[0, 4], [9, 12]], "reasoning": [[2, 3]]}


@pytest.fixture(params=[True, False], ids=["fts5", "like"])
def search_mode(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> bool:
    """Run a test with the FTS5 index and again as on an sqlite build without FTS5 (LIKE fallback)."""
    if not request.param:
        monkeypatch.setattr(app.store.schema, "fts5_available", lambda conn: False)
    return bool(request.param)


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "data" / "nested" / "conversations.db"


@pytest.fixture
def store(db_path: Path) -> Iterator[ConversationStore]:
    with ConversationStore(db_path) as s:
        yield s


def total_messages(path: Path) -> int:
    with sqlite3.connect(path) as conn:
        return int(conn.execute("SELECT count(*) FROM messages").fetchone()[0])


def export_doc(n_messages: int = 2) -> dict[str, Any]:
    messages = [
        {"role": "user" if i % 2 == 0 else "assistant", "content": f"message {i}", "created_at": 1000.0 + i}
        for i in range(n_messages)
    ]
    return {"format": "stride-conversation", "version": 1, "title": "Imported", "messages": messages}


# -- opening -----------------------------------------------------------------------------------------------------


def test_open_creates_folders_schema_and_settings(store: ConversationStore, db_path: Path) -> None:
    assert db_path.is_file()
    conn = store._conn
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
    assert conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    assert conn.execute("PRAGMA user_version").fetchone()[0] == app.store.SCHEMA_VERSION
    assert store.recovered_from is None and store.recovery_message is None


def test_data_survives_reopening(db_path: Path) -> None:
    with ConversationStore(db_path) as s:
        conv = s.create_conversation("Kept", "be brief")
        s.add_message(conv.id, "user", "hello")
    with ConversationStore(db_path) as s:
        assert s.get_conversation(conv.id).title == "Kept"
        assert [m.content for m in s.messages(conv.id)] == ["hello"]


def test_default_db_path_is_in_the_user_data_folder() -> None:
    path = default_db_path()
    assert path.name == "conversations.db"
    assert path.parent.name == "Stride"
    # conftest points XDG_DATA_HOME at a sandbox: the test run never touches the real user's data.
    assert str(path).startswith(os.environ["XDG_DATA_HOME"])


def test_newer_schema_is_refused_and_left_alone(db_path: Path) -> None:
    ConversationStore(db_path).close()
    with sqlite3.connect(db_path) as conn:
        conn.execute("PRAGMA user_version = 99")
    with pytest.raises(StoreError, match=r"newer Stride.*update Stride"):
        ConversationStore(db_path)
    assert not list(db_path.parent.glob("*.damaged-*"))


# -- conversations ---------------------------------------------------------------------------------------------


def test_create_get_rename_prompt_delete(store: ConversationStore) -> None:
    conv = store.create_conversation()
    assert conv.title == "New chat" and conv.system_prompt == ""
    assert conv.created_at == conv.updated_at
    assert store.get_conversation(conv.id) == conv

    store.rename_conversation(conv.id, "Renamed")
    store.set_system_prompt(conv.id, "You are terse.")
    got = store.get_conversation(conv.id)
    assert (got.title, got.system_prompt) == ("Renamed", "You are terse.")

    store.add_message(conv.id, "user", "bye")
    store.delete_conversation(conv.id)
    with pytest.raises(StoreError, match=f"conversation {conv.id} does not exist"):
        store.get_conversation(conv.id)
    assert store.list_conversations() == []
    assert store._conn.execute("SELECT count(*) FROM messages").fetchone()[0] == 0  # cascaded


def test_missing_conversation_is_a_store_error(store: ConversationStore) -> None:
    for call in (
        lambda: store.rename_conversation(42, "x"),
        lambda: store.set_system_prompt(42, "x"),
        lambda: store.add_message(42, "user", "x"),
    ):
        with pytest.raises(StoreError, match="conversation 42 does not exist"):
            call()


def test_list_is_newest_first_with_message_counts(store: ConversationStore) -> None:
    first = store.create_conversation("first")
    second = store.create_conversation("second")
    store.add_message(second.id, "user", "a")
    store.add_message(first.id, "user", "b")
    store.add_message(first.id, "assistant", "c")  # first is now the most recently updated
    summaries = store.list_conversations()
    assert [(s.id, s.title, s.n_messages, s.snippet) for s in summaries] == [
        (first.id, "first", 2, ""),
        (second.id, "second", 1, ""),
    ]
    assert summaries[0].updated_at >= summaries[1].updated_at


# -- messages --------------------------------------------------------------------------------------------------


def test_add_message_round_trips_every_field(store: ConversationStore) -> None:
    conv = store.create_conversation()
    before = store.get_conversation(conv.id).updated_at
    added = store.add_message(
        conv.id,
        "assistant",
        "**answer**",
        reasoning="because",
        status="stopped",
        stats=STATS,
        draft_spans=SPANS,
        thought_seconds=2.5,
    )
    assert store.messages(conv.id) == [added]
    assert (added.stats, added.draft_spans, added.thought_seconds) == (STATS, SPANS, 2.5)
    assert store.get_conversation(conv.id).updated_at >= before
    plain = store.add_message(conv.id, "user", "hi")
    assert (plain.reasoning, plain.status, plain.stats, plain.draft_spans, plain.thought_seconds) == (
        "",
        "complete",
        None,
        None,
        None,
    )
    assert [m.id for m in store.messages(conv.id)] == [added.id, plain.id]


def test_add_message_rejects_unknown_role_and_status(store: ConversationStore) -> None:
    conv = store.create_conversation()
    with pytest.raises(ValueError, match="role"):
        store.add_message(conv.id, "bot", "x")
    with pytest.raises(ValueError, match="status"):
        store.add_message(conv.id, "user", "x", status="done")
    assert store.messages(conv.id) == []


def test_update_message_changes_only_given_fields(store: ConversationStore) -> None:
    conv = store.create_conversation()
    msg = store.add_message(conv.id, "assistant", "", reasoning="r0", status="streaming")
    store.update_message(msg.id, content="partial")
    (got,) = store.messages(conv.id)
    assert (got.content, got.reasoning, got.status) == ("partial", "r0", "streaming")

    store.update_message(
        msg.id, content="done", reasoning="r1", status="complete", stats=STATS, draft_spans=SPANS, thought_seconds=3.0
    )
    (got,) = store.messages(conv.id)
    assert (got.content, got.reasoning, got.status, got.stats, got.draft_spans, got.thought_seconds) == (
        "done",
        "r1",
        "complete",
        STATS,
        SPANS,
        3.0,
    )
    store.update_message(msg.id)  # nothing given: nothing changes
    assert store.messages(conv.id) == [got]
    with pytest.raises(ValueError, match="status"):
        store.update_message(msg.id, status="finished")
    with pytest.raises(StoreError, match="message 9999 does not exist"):
        store.update_message(9999, content="x")


def test_delete_messages_from(store: ConversationStore) -> None:
    conv = store.create_conversation()
    other = store.create_conversation()
    ids = [store.add_message(conv.id, "user" if i % 2 == 0 else "assistant", f"m{i}").id for i in range(5)]
    other_msg = store.add_message(other.id, "user", "elsewhere")

    store.delete_messages_from(conv.id, ids[2])
    assert [m.content for m in store.messages(conv.id)] == ["m0", "m1"]
    assert [m.id for m in store.messages(other.id)] == [other_msg.id]

    with pytest.raises(StoreError, match="not in conversation"):
        store.delete_messages_from(conv.id, other_msg.id)
    assert len(store.messages(other.id)) == 1 and len(store.messages(conv.id)) == 2


def test_deleted_message_ids_are_not_reused(store: ConversationStore) -> None:
    conv = store.create_conversation()
    last = store.add_message(conv.id, "assistant", "old reply")
    store.delete_messages_from(conv.id, last.id)
    assert store.add_message(conv.id, "assistant", "new reply").id > last.id


def test_mark_interrupted(store: ConversationStore) -> None:
    conv = store.create_conversation()
    a = store.add_message(conv.id, "assistant", "half", status="streaming")
    b = store.add_message(conv.id, "assistant", "whole")
    assert store.mark_interrupted() == 1
    assert {m.id: m.status for m in store.messages(conv.id)} == {a.id: "stopped", b.id: "complete"}
    assert store.mark_interrupted() == 0


# -- search ----------------------------------------------------------------------------------------------------


def search_titles(store: ConversationStore, query: str) -> list[str]:
    return [s.title for s in store.list_conversations(query)]


def test_search_titles_and_content_case_insensitively(search_mode: bool, db_path: Path) -> None:
    with ConversationStore(db_path) as store:
        assert store.full_text is search_mode
        pasta = store.create_conversation("Pasta recipes")
        store.add_message(pasta.id, "user", "How long do I boil spaghetti?")
        rust = store.create_conversation("Rust help")
        store.add_message(rust.id, "user", "Explain the Borrow Checker please")
        store.add_message(rust.id, "assistant", "The borrow checker makes sure references stay valid.")
        empty = store.create_conversation("Привет мир")

        assert search_titles(store, "PASTA") == ["Pasta recipes"]
        assert search_titles(store, "привет") == ["Привет мир"]  # titles fold beyond ASCII
        assert search_titles(store, "SPAGHETTI") == ["Pasta recipes"]
        assert search_titles(store, "  borrow checker ") == ["Rust help"]
        assert search_titles(store, "nothing like this") == []
        assert [s.id for s in store.list_conversations("")] == [empty.id, rust.id, pasta.id]

        (hit,) = store.list_conversations("borrow")
        assert hit.n_messages == 2
        assert "borrow checker makes sure" in hit.snippet  # the newest matching message
        (title_only,) = store.list_conversations("recipes")
        assert title_only.snippet == ""


def test_search_short_queries(search_mode: bool, store: ConversationStore) -> None:
    conv = store.create_conversation("misc")
    store.add_message(conv.id, "user", "Is Go good? Q")
    assert search_titles(store, "go") == ["misc"]
    assert search_titles(store, "q") == ["misc"]
    assert search_titles(store, "zz") == []


def test_search_content_beyond_ascii_with_fts5(store: ConversationStore) -> None:
    if not store.full_text:
        unavailable("this sqlite build has no FTS5", FTS5_FIX)
    conv = store.create_conversation("x")
    store.add_message(conv.id, "user", "Скажи ПРИВЕТ миру")
    assert search_titles(store, "привет") == ["x"]


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("100%", ["percent"]),
        ("%", ["percent"]),
        ("a_b", ["underscore"]),
        ("_", ["underscore"]),
        ("don't", ["quote"]),
        ("'", ["quote"]),
        ('say "hi"', ["double quote"]),
        ('"', ["double quote"]),
        ("\\n", ["backslash"]),
        ("AND OR NOT *", ["fts words"]),
    ],
)
def test_search_special_characters_are_literal(
    search_mode: bool, store: ConversationStore, query: str, expected: list[str]
) -> None:
    for title, text in [
        ("percent", "it is 100% done"),
        ("underscore", "call a_b now"),
        ("quote", "don't panic"),
        ("double quote", 'then say "hi" back'),
        ("backslash", "use \\n for newlines"),
        ("fts words", "x AND OR NOT * y"),
        ("decoy", "1000 done, aXb, dont, say hi, AND, n"),
    ]:
        store.add_message(store.create_conversation(title).id, "user", text)
    assert search_titles(store, query) == expected


def test_streaming_reply_becomes_searchable_when_it_ends(search_mode: bool, store: ConversationStore) -> None:
    conv = store.create_conversation("chat")
    msg = store.add_message(conv.id, "assistant", "", status="streaming")
    store.update_message(msg.id, content="zebra crossing")
    assert search_titles(store, "zebra") == []
    store.update_message(msg.id, content="zebra crossing ahead", status="complete")
    assert search_titles(store, "zebra") == ["chat"]
    store.update_message(msg.id, content="lion")  # re-indexed on edit: the old text is gone from the index
    assert search_titles(store, "zebra") == []
    assert search_titles(store, "lion") == ["chat"]
    store.delete_messages_from(conv.id, msg.id)
    assert search_titles(store, "lion") == []


def test_search_index_catches_up_after_a_build_without_fts5(db_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with ConversationStore(db_path) as s:
        if not s.full_text:
            unavailable("this sqlite build has no FTS5", FTS5_FIX)
        s.add_message(s.create_conversation("one").id, "user", "apple pie")
    with monkeypatch.context() as m:
        m.setattr(app.store.schema, "fts5_available", lambda conn: False)
        with ConversationStore(db_path) as s:
            s.add_message(s.create_conversation("two").id, "user", "apple tart")
            assert search_titles(s, "apple") == ["two", "one"]
    with ConversationStore(db_path) as s:
        assert s.full_text
        assert search_titles(s, "apple") == ["two", "one"]
        assert search_titles(s, "tart") == ["two"]


def test_search_is_fast_over_many_messages(search_mode: bool, store: ConversationStore) -> None:
    words = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel"]
    for c in range(50):
        doc = export_doc(0)
        doc["title"] = f"chat {c}"
        doc["messages"] = [
            {"role": "user", "content": " ".join(words[(c + i + k) % 8] for k in range(60)) + f" n{c}x{i}"}
            for i in range(120)
        ]
        store.import_json(doc)
    start = time.perf_counter()
    found = store.list_conversations("n7x11")
    elapsed = time.perf_counter() - start
    print(f"\nsearch over 6,000 messages ({'FTS5' if store.full_text else 'LIKE'}): {elapsed * 1000:.1f} ms")
    assert [s.title for s in found] == ["chat 7"]
    assert elapsed < 0.5


# -- speed -----------------------------------------------------------------------------------------------------


def test_5000_messages_load_fast(store: ConversationStore) -> None:
    doc = export_doc(0)
    doc["messages"] = [
        {
            "role": "user" if i % 2 == 0 else "assistant",
            "content": f"message {i} " + "lorem ipsum dolor sit amet " * 20,
            "reasoning": "thinking " * 10 if i % 2 else "",
            "stats": STATS.to_json() if i % 2 else None,
            "draft_spans": SPANS if i % 2 else None,
            "thought_seconds": 1.5 if i % 2 else None,
        }
        for i in range(5000)
    ]
    start = time.perf_counter()
    conv = store.import_json(doc)
    imported = time.perf_counter() - start
    start = time.perf_counter()
    messages = store.messages(conv.id)
    elapsed = time.perf_counter() - start
    start = time.perf_counter()
    msg = store.add_message(conv.id, "assistant", "", status="streaming")
    for i in range(50):
        store.update_message(msg.id, content="streamed text " * (20 * i))
    per_update = (time.perf_counter() - start) / 51
    print(
        f"\n5,000 messages: import {imported * 1000:.0f} ms, load {elapsed * 1000:.0f} ms; "
        f"add/update while streaming {per_update * 1000:.2f} ms each"
    )
    assert len(messages) == 5000 and messages[4999].content.startswith("message 4999 ")
    assert messages[1].stats == STATS
    assert elapsed < 1.0
    assert per_update < 0.05


# -- export and import -----------------------------------------------------------------------------------------


def make_rich_conversation(store: ConversationStore) -> int:
    conv = store.create_conversation("Trip: Paris & back", "Answer in French.\n\nBe brief.")
    store.add_message(conv.id, "user", "Plan a day?")
    store.add_message(
        conv.id,
        "assistant",
        "**Morning**: Louvre\n\n- lunch\n- walk",
        reasoning="User wants a plan.",
        stats=STATS,
        draft_spans=SPANS,
        thought_seconds=12.4,
    )
    store.add_message(conv.id, "user", "Shorter")
    store.add_message(conv.id, "assistant", "Louvre, then", reasoning="hmm", status="stopped", thought_seconds=0.8)
    return conv.id


def test_export_markdown(store: ConversationStore) -> None:
    text = store.export_markdown(make_rich_conversation(store))
    assert text.startswith("# Trip: Paris & back\n\n**System prompt**\n\n> Answer in French.\n>\n> Be brief.\n")
    assert text.count("## User") == 2 and text.count("## Assistant") == 2
    assert "<details><summary>Thought for 12 s</summary>\n\nUser wants a plan.\n\n</details>" in text
    assert "<summary>Thought for 0.8 s</summary>" in text
    assert "**Morning**: Louvre\n\n- lunch\n- walk" in text
    assert "stopped before it finished" in text
    assert text.index("Plan a day?") < text.index("User wants a plan.") < text.index("**Morning**")


def test_export_json_import_round_trip(store: ConversationStore) -> None:
    conv_id = make_rich_conversation(store)
    exported = store.export_json(conv_id)
    assert exported["format"] == "stride-conversation" and exported["version"] == 2
    assert exported["messages"][1]["stats"] == STATS.to_json()
    assert exported["messages"][1]["draft_spans"] == SPANS

    imported = store.import_json(json.loads(json.dumps(exported)))
    assert imported.id != conv_id
    assert store.export_json(imported.id) == exported
    assert store.list_conversations()[0].id == imported.id  # an import lands at the top of the list
    assert store.export_markdown(imported.id) == store.export_markdown(conv_id)


def test_import_fills_defaults_and_stops_streaming_replies(store: ConversationStore) -> None:
    doc = export_doc(1)
    doc["messages"].append({"role": "assistant", "content": "cut", "status": "streaming"})
    conv = store.import_json(doc)
    assert conv.system_prompt == ""
    first, second = store.messages(conv.id)
    assert (first.content, first.reasoning, first.status, first.created_at) == ("message 0", "", "complete", 1000.0)
    assert second.status == "stopped"
    assert store.mark_interrupted() == 0


def _bad(**changes: Any) -> dict[str, Any]:
    doc = export_doc(3)
    for key, value in changes.items():
        if key.startswith("m2_"):
            doc["messages"][2][key[3:]] = value
        else:
            doc[key] = value
    return doc


@pytest.mark.parametrize(
    ("data", "why"),
    [
        ([1, 2], "expected a JSON object"),
        ({"title": "x", "messages": []}, '"format" must be'),
        (_bad(format="chatgpt"), '"format" must be'),
        (_bad(version="1"), '"version" must be an integer'),
        (_bad(version=True), '"version" must be an integer'),
        (_bad(version=3), r"version 3 is newer than this Stride reads \(2\); update Stride"),
        (_bad(version=0), "unknown version"),
        (_bad(title=None), '"title" is missing'),
        (_bad(title=5), '"title" must be text'),
        (_bad(system_prompt=["x"]), '"system_prompt" must be text'),
        (_bad(created_at="yesterday"), '"created_at" must be a unix time'),
        (_bad(created_at=float("nan")), '"created_at" must be a unix time'),
        (_bad(messages={"0": {}}), '"messages" must be a list'),
        (_bad(messages=[{"role": "user", "content": "ok"}, "hello"]), r'"messages\[1\]" must be an object'),
        (_bad(m2_role="bot"), r'"messages\[2\].role" must be one of'),
        (_bad(m2_role=None), r'"messages\[2\].role" is missing'),
        (_bad(m2_content=None), r'"messages\[2\].content" is missing'),
        (_bad(m2_content=7), r'"messages\[2\].content" must be text'),
        (_bad(m2_reasoning=False), r'"messages\[2\].reasoning" must be text'),
        (_bad(m2_status="done"), r'"messages\[2\].status" must be one of'),
        (_bad(m2_created_at=True), r'"messages\[2\].created_at" must be a unix time'),
        (_bad(m2_thought_seconds=-1), r'"messages\[2\].thought_seconds"'),
        (_bad(m2_stats=[1]), r'"messages\[2\].stats" must be an object'),
        (_bad(m2_stats={"x": {1, 2}}), r'"messages\[2\].stats" is not plain JSON'),
        (_bad(m2_draft_spans={"answer": [[3, 1]]}), r'"messages\[2\].draft_spans"'),
        (_bad(m2_draft_spans={"answer": [[0, 1, 2]]}), r'"messages\[2\].draft_spans"'),
        (_bad(m2_draft_spans=[[0, 1]]), r'"messages\[2\].draft_spans" must be an object'),
    ],
)
def test_bad_imports_are_refused_and_change_nothing(
    store: ConversationStore, db_path: Path, data: Any, why: str
) -> None:
    make_rich_conversation(store)
    before = (store.list_conversations(), total_messages(db_path))
    with pytest.raises(StoreError, match=f"^this file is not a Stride conversation export: {why}"):
        store.import_json(data)
    assert (store.list_conversations(), total_messages(db_path)) == before


def test_import_failing_midway_leaves_nothing(store: ConversationStore, db_path: Path) -> None:
    make_rich_conversation(store)
    before = (store.list_conversations(), total_messages(db_path))
    pages = store._conn.execute("PRAGMA page_count").fetchone()[0]
    store._conn.execute(f"PRAGMA max_page_count = {pages + 20}")  # a disk that fills up during the import
    doc = export_doc(0)
    doc["messages"] = [{"role": "user", "content": f"{i} " + "x" * 2000} for i in range(200)]
    with pytest.raises(StoreError, match="disk is full; free space or choose another data folder"):
        store.import_json(doc)
    assert (store.list_conversations(), total_messages(db_path)) == before
    store._conn.execute("PRAGMA max_page_count = 1073741823")
    store.add_message(before[0][0].id, "user", "still works")  # the store stays usable after the error


# -- damaged files and unwritable folders ----------------------------------------------------------------------


def make_db(path: Path, n: int = 40) -> None:
    with ConversationStore(path) as s:
        for c in range(n):
            conv = s.create_conversation(f"chat {c}")
            for i in range(10):
                s.add_message(conv.id, "user", f"text {c} {i} " * 30)


def assert_recovered(path: Path, damaged_bytes: bytes) -> None:
    with ConversationStore(path) as s:
        assert s.recovered_from is not None
        assert s.recovered_from.parent == path.parent
        assert s.recovered_from.name.startswith(path.name + ".damaged-")
        assert s.recovered_from.read_bytes() == damaged_bytes  # kept for the user, untouched
        assert s.recovery_message is not None
        assert str(path) in s.recovery_message and str(s.recovered_from) in s.recovery_message
        assert "is damaged" in s.recovery_message and "started a new one" in s.recovery_message
        assert s.list_conversations() == []
        conv = s.create_conversation("fresh")
        s.add_message(conv.id, "user", "works")
    with ConversationStore(path) as s:  # the new database is healthy: no second recovery
        assert s.recovered_from is None
        assert [c.title for c in s.list_conversations()] == ["fresh"]


def test_garbage_file_is_moved_aside(db_path: Path) -> None:
    make_db(db_path)
    garbage = os.urandom(8192)
    db_path.write_bytes(garbage)
    assert_recovered(db_path, garbage)


def test_garbage_over_the_first_page_only(db_path: Path) -> None:
    make_db(db_path)
    data = bytearray(db_path.read_bytes())
    data[100:4096] = os.urandom(3996)  # header intact, schema page destroyed
    db_path.write_bytes(bytes(data))
    assert_recovered(db_path, bytes(data))


@pytest.mark.parametrize("fraction", [0.5, 0.05])
def test_truncated_file_is_moved_aside(db_path: Path, fraction: float) -> None:
    make_db(db_path)
    data = db_path.read_bytes()[: int(db_path.stat().st_size * fraction)]
    db_path.write_bytes(data)
    assert_recovered(db_path, data)


def test_damaged_file_takes_its_wal_along(db_path: Path) -> None:
    make_db(db_path)
    db_path.write_bytes(b"not a database" * 100)
    db_path.with_name(db_path.name + "-wal").write_bytes(b"stale wal")
    # Another connection (say a second Stride window) keeps SQLite from deleting the WAL when the store closes it.
    keeper = sqlite3.connect(db_path)
    with pytest.raises(sqlite3.DatabaseError):
        keeper.execute("PRAGMA user_version")
    try:
        with ConversationStore(db_path) as s:
            assert s.recovered_from is not None
            assert s.recovered_from.with_name(s.recovered_from.name + "-wal").read_bytes() == b"stale wal"
            s.add_message(s.create_conversation().id, "user", "the new database ignores the old WAL")
    finally:
        keeper.close()
    with ConversationStore(db_path) as s:
        assert s.recovered_from is None and len(s.list_conversations()) == 1


def test_two_recoveries_in_one_second_keep_both_files(db_path: Path) -> None:
    moved = []
    for content in (b"first garbage" * 50, b"second garbage" * 50):
        db_path.unlink(missing_ok=True)
        db_path.parent.mkdir(parents=True, exist_ok=True)
        db_path.write_bytes(content)
        with ConversationStore(db_path) as s:
            assert s.recovered_from is not None
            moved.append(s.recovered_from)
    assert moved[0] != moved[1]
    assert [p.read_bytes()[:6] for p in moved] == [b"first ", b"second"]


def test_folder_under_a_file_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("I am a file")
    with pytest.raises(StoreError, match=r"^cannot write .*file: .*; free space or choose another data folder$"):
        ConversationStore(tmp_path / "file" / "x.db")


def test_database_path_that_is_a_folder_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "conversations.db").mkdir()
    with pytest.raises(StoreError, match=r"^cannot write .*conversations\.db: .*choose another data folder$"):
        ConversationStore(tmp_path / "conversations.db")
    assert (tmp_path / "conversations.db").is_dir()  # not "recovered": it is not a damaged database


def test_read_only_folder_is_a_clear_error() -> None:
    def check(base: Path) -> None:  # as a user root's powers do not reach past chmod
        folder = base / "ro"
        folder.mkdir()
        folder.chmod(0o555)
        with pytest.raises(StoreError, match=r"^cannot write .*choose another data folder$"):
            ConversationStore(folder / "conversations.db")

    as_unprivileged_user(check)


# -- crash safety ----------------------------------------------------------------------------------------------

CRASH_WRITER = """
import sys, time
from pathlib import Path
from app.store import ConversationStore

store = ConversationStore(Path(sys.argv[1]))
conv = store.create_conversation("crash")
msg = store.add_message(conv.id, "assistant", "", status="streaming")
print(msg.id, flush=True)
i = 0
while True:
    i += 1
    store.update_message(msg.id, content=f"update {i}: " + "token " * (i % 300))
    print(i, flush=True)  # printed only after the update committed
    time.sleep(float(sys.argv[2]))
"""


def crash_text(i: int) -> str:
    return f"update {i}: " + "token " * (i % 300)


@pytest.mark.parametrize("interval", [0.05, 0.0], ids=["every-50ms", "flat-out"])
def test_sigkill_while_streaming_loses_at_most_one_update(db_path: Path, interval: float) -> None:
    db_path.parent.mkdir(parents=True)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-c", CRASH_WRITER, str(db_path), str(interval)],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
        cwd=ROOT,
    )
    assert proc.stdout is not None
    message_id = int(proc.stdout.readline())  # the writer is up and streaming
    time.sleep(1.0)
    proc.send_signal(signal.SIGKILL)
    out, _ = proc.communicate(timeout=10)
    assert proc.returncode == -signal.SIGKILL
    last = int(out.split()[-1])
    assert last >= (10 if interval else 100), "the writer barely ran"

    with sqlite3.connect(db_path) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    with ConversationStore(db_path) as s:
        assert s.recovered_from is None
        (conv,) = s.list_conversations()
        (msg,) = s.messages(conv.id)
        assert msg.id == message_id and msg.status == "streaming"
        assert msg.content in (crash_text(last), crash_text(last + 1))
        assert s.mark_interrupted() == 1
        assert s.messages(conv.id)[0].status == "stopped"
    print(f"\nSIGKILL after {last} updates ({interval * 1000:.0f} ms apart): the latest committed text survived")
