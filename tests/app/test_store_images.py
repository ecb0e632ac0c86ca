"""Pictures in the store: one file per content hash, written before the row, pruned when no message
names it, carried through JSON export and import, linked from Markdown, migrated from schema 1."""

from __future__ import annotations

import base64
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.store import ConversationStore, StoreError
from tests.fixtures import vision as vf

RED_PNG = vf.png_bytes(vf.solid(vf.RED, 8, 6))
BLUE_PNG = vf.png_bytes(vf.solid(vf.BLUE, 8, 6))


@pytest.fixture
def store(tmp_path: Path) -> Iterator[ConversationStore]:
    with ConversationStore(tmp_path / "conversations.db") as s:
        yield s


def stored_files(store: ConversationStore) -> list[Path]:
    return sorted((store.path.parent / "images").rglob("*.png"))


def test_a_picture_is_stored_once_by_content_hash(store: ConversationStore) -> None:
    conv = store.create_conversation()
    first = store.add_message(conv.id, "user", "look", images=[RED_PNG, BLUE_PNG])
    second = store.add_message(conv.id, "user", "again", images=[RED_PNG])
    assert first.images[0] == second.images[0] and len(first.images) == 2
    path = store.image_path(first.images[0])
    assert path.parent.name == first.images[0][:2] and path.name == first.images[0] + ".png"
    assert len(stored_files(store)) == 2 and path.read_bytes() == RED_PNG
    assert [m.images for m in store.messages(conv.id)] == [first.images, second.images]


def test_deleting_removes_only_pictures_no_message_names(store: ConversationStore) -> None:
    kept, dropped = store.create_conversation(), store.create_conversation()
    store.add_message(kept.id, "user", "red", images=[RED_PNG])
    store.add_message(dropped.id, "user", "red and blue", images=[RED_PNG, BLUE_PNG])
    store.delete_conversation(dropped.id)
    [red] = store.messages(kept.id)[0].images
    assert stored_files(store) == [store.image_path(red)]  # blue went; red is still named by the other chat
    store.delete_conversation(kept.id)
    assert stored_files(store) == []


def test_editing_away_a_message_prunes_its_picture(store: ConversationStore) -> None:
    conv = store.create_conversation()
    msg = store.add_message(conv.id, "user", "blue", images=[BLUE_PNG])
    store.delete_messages_from(conv.id, msg.id)
    assert stored_files(store) == []


def test_the_file_is_written_before_the_row(store: ConversationStore) -> None:
    """A message whose row cannot be written (its conversation is gone) leaves at most a file, never a
    row naming a missing file."""
    with pytest.raises(StoreError, match="does not exist"):
        store.add_message(12345, "user", "x", images=[RED_PNG])
    assert len(stored_files(store)) == 1
    with sqlite3.connect(store.path) as conn:
        assert conn.execute("SELECT count(*) FROM message_images").fetchone()[0] == 0


def test_only_png_is_stored(store: ConversationStore) -> None:
    conv = store.create_conversation()
    with pytest.raises(StoreError, match="not one"):
        store.add_message(conv.id, "user", "x", images=[b"GIF89a..."])
    assert store.messages(conv.id) == []


def test_json_export_embeds_pictures_and_import_brings_them_back(tmp_path: Path, store: ConversationStore) -> None:
    conv = store.create_conversation("Pictures")
    store.add_message(conv.id, "user", "what colour?", images=[BLUE_PNG])
    exported = store.export_json(conv.id)
    [item] = exported["messages"][0]["images"]
    assert item["media_type"] == "image/png" and base64.b64decode(item["base64"]) == BLUE_PNG
    with ConversationStore(tmp_path / "other" / "conversations.db") as other:
        imported = other.import_json(exported)
        [message] = other.messages(imported.id)
        assert other.image_bytes(message.images[0]) == BLUE_PNG


@pytest.mark.parametrize(
    ("images", "problem"),
    [
        ("abc", r'"messages\[0\].images" must be a list'),
        ([{"base64": "!!!"}], "is not valid base64"),
        ([{"base64": base64.b64encode(b"GIF89a").decode()}], "is not a PNG picture"),
        ([42], r'"messages\[0\].images\[0\]" must be an object'),
    ],
)
def test_bad_embedded_pictures_are_refused(store: ConversationStore, images: object, problem: str) -> None:
    doc = {
        "format": "stride-conversation",
        "version": 2,
        "title": "x",
        "messages": [{"role": "user", "content": "x", "images": images}],
    }
    with pytest.raises(StoreError, match=problem):
        store.import_json(doc)
    assert store.list_conversations() == [] and stored_files(store) == []


def test_markdown_links_pictures_in_the_folder_given(store: ConversationStore) -> None:
    conv = store.create_conversation()
    msg = store.add_message(conv.id, "user", "see", images=[RED_PNG])
    text = store.export_markdown(conv.id, "chat files")
    assert f"![Picture 1](chat%20files/{msg.images[0]}.png)" in text


def test_a_schema_1_database_gains_the_picture_table(tmp_path: Path) -> None:
    path = tmp_path / "conversations.db"
    with ConversationStore(path) as s:
        conv = s.create_conversation()
        s.add_message(conv.id, "user", "old")
    with sqlite3.connect(path) as conn:  # back to how schema 1 left it
        conn.execute("DROP TABLE message_images")
        conn.execute("PRAGMA user_version = 1")
    with ConversationStore(path) as s:
        [old] = s.messages(conv.id)
        assert old.content == "old" and old.images == ()
        s.add_message(conv.id, "user", "new", images=[RED_PNG])
        assert len(s.messages(conv.id)[1].images) == 1
