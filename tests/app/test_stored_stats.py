"""Reply figures written by earlier versions still read: SQLite rows and exported JSON files alike."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from app.store import ConversationStore
from engine.api import StatsSnapshot

# What an early Stride stored: no auto_mode, no speed-up estimate, no live rate; one key since dropped.
OLD_STATS = {
    "n_prompt": 31,
    "n_predicted": 64,
    "n_drafted": 90,
    "n_accepted": 51,
    "acceptance": 0.5667,
    "acceptance_per_position": [0.8, None],
    "drafted_per_position": [45, 0],
    "accepted_per_position": [36, 0],
    "tokens_per_second": 38.2,
    "ttft_s": 0.4,
    "mtp_depth": 2,
    "mtp_depth_requested": "auto",
    "mtp_note": None,
    "stop_reason": "eog",
    "heads_used": 2,
}


def test_a_stats_row_from_an_earlier_version_reads(tmp_path: Path) -> None:
    db = tmp_path / "conversations.db"
    with ConversationStore(db) as store:
        conv = store.create_conversation("old")
        reply = store.add_message(conv.id, "assistant", "hello")
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE messages SET stats = ? WHERE id = ?", (json.dumps(OLD_STATS), reply.id))
    with ConversationStore(db) as store:
        stats = store.messages(conv.id)[0].stats
    assert stats is not None
    assert (stats.n_predicted, stats.n_accepted, stats.tokens_per_second) == (64, 51, 38.2)
    assert stats.acceptance_per_position == (0.8, None) and stats.drafted_per_position == (45, 0)
    assert (stats.mtp_depth_requested, stats.stop_reason) == ("auto", "eog")
    assert stats.auto_mode is None and stats.estimated_speedup_vs_plain is None and stats.decode_seconds == 0.0


def test_an_export_from_an_earlier_version_imports(tmp_path: Path) -> None:
    exported = {
        "format": "stride-conversation",
        "version": 1,
        "title": "from an older Stride",
        "messages": [
            {"role": "user", "content": "hi", "created_at": 1.0},
            {"role": "assistant", "content": "hello", "created_at": 2.0, "stats": OLD_STATS},
        ],
    }
    with ConversationStore(tmp_path / "conversations.db") as store:
        conv = store.import_json(json.loads(json.dumps(exported)))
        stats = store.messages(conv.id)[1].stats
        again = store.export_json(conv.id)["messages"][1]["stats"]
    assert stats is not None and stats.n_predicted == 64 and stats.acceptance == 0.5667
    assert "heads_used" not in again and again == stats.to_json()
    assert StatsSnapshot.from_json(again) == stats
