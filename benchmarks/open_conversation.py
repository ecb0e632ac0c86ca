"""Time to open a 5,000-message conversation in the real window (offscreen), until painted.

Builds a database with one long conversation (user questions, assistant replies with Markdown,
code blocks, reasoning and speed stats, like real chats), opens the real MainWindow and
ChatController on it without a model, clicks it open and stops the clock when the transcript
has been laid out and painted at the bottom. Median of the repeats; the database build is
not timed.

    QT_QPA_PLATFORM=offscreen python -m benchmarks.open_conversation --messages 5000 --repeat 5
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

from PySide6.QtWidgets import QApplication

from app.controller import ChatController
from app.settings import LoadResult, Settings
from app.store import ConversationStore
from app.views.main_window import MainWindow
from engine.api import StatsSnapshot

REPLY = (
    "Here is how to do it.\n\n1. Read the file.\n2. Parse each line with `split()`.\n\n"
    "```python\nfor line in open(path):\n    key, value = line.split('=', 1)\n    config[key] = value\n```\n\n"
    "That keeps **every** setting; see the *docs* for the edge cases. "
)
STATS = StatsSnapshot(
    n_prompt=900,
    n_predicted=160,
    tokens_per_second=41.5,
    mtp_depth=3,
    mtp_depth_requested=3,
    acceptance=0.78,
    n_accepted=110,
    n_drafted=141,
    ttft_s=0.21,
)


def build_database(path: Path, n_messages: int) -> int:
    with ConversationStore(path) as store:
        conversation = store.create_conversation("A long chat")
        for i in range(n_messages):
            if i % 2 == 0:
                store.add_message(conversation.id, "user", f"Question {i}: how do I read a config file in Python?")
            else:
                store.add_message(
                    conversation.id,
                    "assistant",
                    REPLY * (1 + i % 3),
                    reasoning="The user wants a short example. " * 4,
                    stats=STATS,
                    thought_seconds=1.5,
                )
        return conversation.id


def time_open(app: QApplication, db: Path, conversation_id: int) -> float:
    window = MainWindow()
    window.resize(1200, 800)
    window.show()
    store = ConversationStore(db)
    controller = ChatController(window, store, LoadResult(Settings(), None))
    app.processEvents()
    start = time.perf_counter()
    controller.open_conversation(conversation_id)
    window.transcript.viewport().repaint()  # lay out and paint what is on screen now
    app.processEvents()
    took = time.perf_counter() - start
    controller.engine.shutdown()
    window.allow_close()
    window.close()
    store.close()
    return took


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=5000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    app = QApplication([])
    with tempfile.TemporaryDirectory() as folder:
        db = Path(folder) / "conversations.db"
        conversation_id = build_database(db, args.messages)
        times = [time_open(app, db, conversation_id) for _ in range(args.repeat)]
    print(f"messages={args.messages} repeat={args.repeat}")
    print(f"open + paint: median {statistics.median(times):.3f} s, max {max(times):.3f} s")


if __name__ == "__main__":
    main()
