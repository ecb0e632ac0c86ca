"""A data folder Stride cannot write to: read-only, full, or blocked by a file. Clear message, no crash.

Tests run as root here, and root writes through chmod, so "read-only" and "full" are
real file systems instead: a read-only tmpfs and a 256 KB tmpfs, mounted in a private
mount namespace (`unshare -m`) that only the child process sees. Where that is not
allowed, those tests skip, or fail under CI=true; the blocked-by-a-file case runs everywhere.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PySide6.QtWidgets import QApplication, QMessageBox
from pytestqt.qtbot import QtBot

from app import main as app_main
from app.controller import ChatController
from app.settings import Settings, load_settings
from app.views.error_dialog import ErrorDialog
from tests.capabilities import require_tool, unavailable

ROOT = Path(__file__).resolve().parents[2]
MESSAGE_END = "; free space or choose another data folder"

# The real `stride` entry point; the blocking "cannot start" box prints its text instead.
START_APP = """
import json, sys
from PySide6.QtWidgets import QApplication, QMessageBox
from pytestqt.qtbot import QtBot
def critical(_parent, title, text, *_args):
    print(json.dumps([title, text]), flush=True)
    return QMessageBox.StandardButton.Ok
QMessageBox.critical = critical
from app.main import main
sys.exit(main([]))
"""

# The real window, controller and store on a tiny file system: new chats (each carrying a
# 20 KB system prompt) until the disk is full, then what the user was shown and whether
# the database survived.
FILL_DISK = """
import json, sqlite3, sys
from dataclasses import replace
from pathlib import Path
from PySide6.QtWidgets import QApplication
from app.controller import ChatController
from app.settings import LoadResult, Settings
from app.store import ConversationStore
from app.views.error_dialog import ErrorDialog
from app.views.main_window import MainWindow
app = QApplication([])
folder = Path(sys.argv[1])
settings = replace(Settings(), system_prompt="x" * 20_000)
window = MainWindow()
store = ConversationStore(folder / "conversations.db")
controller = ChatController(window, store, LoadResult(settings, None), settings_path=folder / "settings.toml")
controller.start()
created = 0
while created < 1000 and not window.findChildren(ErrorDialog):
    controller.new_conversation()
    created += 1
dialogs = [(d.windowTitle(), d._message) for d in window.findChildren(ErrorDialog)]
controller.shutdown()
with sqlite3.connect(folder / "conversations.db") as db:
    check = db.execute("PRAGMA integrity_check").fetchone()[0]
    saved = db.execute("SELECT count(*) FROM conversations").fetchone()[0]
print(json.dumps({"dialogs": dialogs, "created": created, "saved": saved, "integrity": check}), flush=True)
"""


def in_mount_namespace(
    mount_options: str, folder: Path, python_code: str, *args: str
) -> subprocess.CompletedProcess[str]:
    """Run Python with a fresh tmpfs (mount_options) on folder as its user data folder (XDG_DATA_HOME),
    in a mount namespace of its own: nothing else sees the mount, and it goes when the process ends."""
    if not sys.platform.startswith("linux"):
        pytest.skip("needs Linux mount namespaces")
    unshare = require_tool("unshare", "install util-linux (apt-get install util-linux)")
    probe = subprocess.run(
        [unshare, "-m", "sh", "-c", f"mount -t tmpfs -o size=64k tmpfs {folder}"], capture_output=True, text=True
    )
    if probe.returncode != 0:
        unavailable(
            f"cannot mount in a private namespace here ({probe.stderr.strip()})",
            "run the tests as root with CAP_SYS_ADMIN (docker run --privileged)",
        )
    script = 'mount -t tmpfs -o "$1" tmpfs "$2" && shift 2 && exec "$@"'
    env = {**os.environ, "PYTHONPATH": str(ROOT), "QT_QPA_PLATFORM": "offscreen", "XDG_DATA_HOME": str(folder)}
    command = [sys.executable, "-c", python_code, *args]
    return subprocess.run(
        [unshare, "-m", "sh", "-c", script, "sh", mount_options, str(folder), *command],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=ROOT,
    )


def test_a_read_only_data_folder_stops_the_app_with_a_clear_message(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    proc = in_mount_namespace("ro", data, START_APP)
    assert proc.returncode == 2, proc.stderr[-2000:]
    title, text = json.loads(proc.stdout.strip().splitlines()[-1])
    assert title == "Stride cannot start"
    assert text == f"cannot write {data / 'Stride'}: Read-only file system{MESSAGE_END}"


def test_a_full_data_folder_says_so_and_keeps_the_database_whole(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    proc = in_mount_namespace("size=256k", data, FILL_DISK, str(data))
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["dialogs"] == [
        ["Conversation not saved", f"cannot write {data / 'conversations.db'}: the disk is full{MESSAGE_END}"]
    ]
    assert result["integrity"] == "ok" and 1 < result["saved"] <= result["created"]


def test_a_file_in_place_of_the_data_folder_stops_the_app_with_a_clear_message(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    blocker = tmp_path / "Stride"
    blocker.write_text("a file where the data folder should be")
    shown: list[tuple[str, str]] = []

    def critical(_parent: object, title: str, text: str, *_args: object) -> QMessageBox.StandardButton:
        shown.append((title, text))
        return QMessageBox.StandardButton.Ok

    monkeypatch.setattr(QMessageBox, "critical", critical)
    monkeypatch.setattr(app_main, "default_db_path", lambda: blocker / "conversations.db")
    assert app_main.main([]) == 2
    assert shown == [("Stride cannot start", f"cannot write {blocker}: File exists{MESSAGE_END}")]


def test_a_corrupt_settings_file_is_backed_up_and_the_window_says_where(
    qtbot: QtBot, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Through the real `stride` start-up: defaults, a backup next to the file, and a dialog naming it."""
    settings_file = tmp_path / "settings.toml"
    settings_file.write_bytes(b'temperature = 0.3\nmodel_path = "unterminated\n')
    monkeypatch.setattr(app_main, "load_settings", lambda: load_settings(settings_file))
    monkeypatch.setattr(app_main, "default_db_path", lambda: tmp_path / "data" / "conversations.db")
    started: list[ChatController] = []
    monkeypatch.setattr(ChatController, "start", lambda self, *_args: started.append(self))
    monkeypatch.setattr(QApplication, "exec", lambda *_: 0)  # stop where the event loop would run
    assert app_main.main([]) == 0
    (controller,) = started
    qtbot.addWidget(controller.window)  # deleted after the test, with the dialog it owns
    (dialog,) = controller.window.findChildren(ErrorDialog)
    backups = list(tmp_path.glob("settings.toml.*"))
    assert dialog.windowTitle() == "Settings were reset" and len(backups) == 1
    assert "not valid TOML" in dialog._message and str(backups[0]) in dialog._message
    assert controller.settings == Settings()
    dialog.close()
    controller.shutdown()
