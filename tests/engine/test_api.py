"""The plain data shared by engine and app: the stats snapshot's JSON round trip and tolerance."""

from __future__ import annotations

import json
from dataclasses import fields

from engine.api import StatsSnapshot
from engine.stats import ReplyStats


def measured() -> StatsSnapshot:
    stats = ReplyStats(n_heads=3, mtp_depth=2, mtp_depth_requested="auto", mtp_note="depth_clamped")
    stats.prompt_done(12, 7)
    for drafted, accepted in ((2, 2), (2, 1), (1, 0)):
        stats.step(drafted, accepted, accepted + 1)
    stats.stop_reason = "max_tokens"
    stats.auto_mode = "drafting"
    stats.estimated_speedup_vs_plain = 1.25
    return stats.snapshot()


def test_snapshot_round_trips_through_json() -> None:
    snapshot = measured()
    data = json.loads(json.dumps(snapshot.to_json()))
    assert list(data) == [f.name for f in fields(StatsSnapshot)]
    assert StatsSnapshot.from_json(data) == snapshot
    assert (snapshot.n_predicted, snapshot.n_accepted, snapshot.drafted_per_position) == (6, 3, (3, 2))
    assert snapshot.acceptance_per_position == (2 / 3, 1 / 2)  # heads past the depth are left out


def test_from_json_takes_defaults_for_missing_and_ill_typed_keys() -> None:
    read = StatsSnapshot.from_json(
        {
            "n_predicted": "12",  # a string is not a count
            "n_accepted": True,  # nor is a boolean
            "acceptance": 0.5,
            "mtp_note": "a note from the future",
            "stop_reason": "eog",
            "mtp_depth_requested": -1,
            "accepted_per_position": [1, "x", 2],
            "unknown": [1, 2, 3],
        }
    )
    assert read == StatsSnapshot(acceptance=0.5, stop_reason="eog", accepted_per_position=(1, 2))
    assert StatsSnapshot.from_json({}) == StatsSnapshot()
