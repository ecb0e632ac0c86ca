"""`stride --self-test`: the real window, the demo model, a click on Send, one JSON line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PySide6.QtCore import QPoint
from pytestqt.qtbot import QtBot

from tests.app.pixels import load, speed_panel_accent, strongly_red

ROOT = Path(__file__).resolve().parents[2]


def test_self_test_prints_one_json_line_and_writes_out(tmp_path: Path) -> None:
    out = tmp_path / "result.json"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "QT_QPA_PLATFORM": "offscreen"}
    proc = subprocess.run(
        [sys.executable, "-m", "app.main", "--self-test", "--mtp-depth", "2", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 1
    data = json.loads(lines[0])
    assert json.loads(out.read_text()) == data
    assert data["ok"] is True and data["n_predicted"] > 50
    assert data["mtp_depth"] == 2 and 0 < data["acceptance"] < 1
    assert data["tokens_per_second"] > 0 and data["max_ui_stall_ms"] is not None
    assert data["cpu_variant"]  # "native" for pip's default build, e.g. "haswell" for the portable one
    # The shot is the window after the reply: the speed panel's sparkline and accent-filled head bars.
    shot = load(data["screenshot"])
    assert speed_panel_accent(shot) > 1000 and strongly_red(shot) == 0


def test_a_file_manager_opens_a_model_by_its_path() -> None:
    """The .desktop entry runs `stride %f`: a bare path is the model; with no file, no model is forced."""
    from app.main import parse_args

    assert parse_args(["/models/x.gguf"]).model == "/models/x.gguf"
    assert parse_args(["--model", "demo"]).model == "demo"
    assert parse_args([]).model is None


# The first hour (issue 18): bad values, no display, a bad model, --screenshot --------------------------


def bare_env(**extra: str) -> dict[str, str]:
    """A session without a display and without QT_QPA_PLATFORM, as on a server or in a plain ssh login."""
    env = {k: v for k, v in os.environ.items() if k not in ("QT_QPA_PLATFORM", "DISPLAY", "WAYLAND_DISPLAY")}
    return {**env, "PYTHONPATH": str(ROOT), **extra}


def test_the_self_test_rejects_what_the_cli_rejects(capsys: pytest.CaptureFixture[str]) -> None:
    from app.main import parse_args

    for option, value in [("--max-tokens", "-5"), ("--threads", "-2"), ("--threads", "0"), ("--mtp-depth", "x")]:
        with pytest.raises(SystemExit) as exit_info:
            parse_args(["--self-test", option, value])
        assert exit_info.value.code == 2
        gui, cli_err = capsys.readouterr().err, _cli_error(option, value)
        assert gui.count("\n") == 1 and gui.startswith(f"error: argument {option}: ")
        assert gui.split("; see")[0] == cli_err.split("; see")[0]  # one validation, one message


def _cli_error(option: str, value: str) -> str:
    proc = subprocess.run(
        [sys.executable, "-m", "engine.cli", "generate", "--model", "demo", "--prompt", "x", option, value],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert proc.returncode == 2
    return proc.stderr


def test_every_stride_option_says_its_default_and_range() -> None:
    from app.main import build_parser
    from tests.engine.test_cli_contract import every_option_says_its_default_and_range

    every_option_says_its_default_and_range(build_parser())


def test_stride_version_matches_stride_cli() -> None:
    def version(module: str) -> list[str]:
        proc = subprocess.run(
            [sys.executable, "-m", module, "--version"], capture_output=True, text=True, timeout=60, env=bare_env()
        )
        assert proc.returncode == 0 and proc.stderr == "", proc.stderr  # no display needed to say it
        return proc.stdout.splitlines()

    gui, cli = version("app.main"), version("engine.cli")
    assert gui[0].split()[0] == "stride" and cli[0].split()[0] == "stride-cli"
    assert gui[1:] == cli[1:] and "llama.cpp 0c1e57098" in gui[1] and gui[2].startswith("CPU backend: ")


def test_without_a_display_the_self_test_runs_offscreen_and_a_bad_model_is_shot_with_its_dialog(
    tmp_path: Path,
) -> None:
    """No DISPLAY and no QT_QPA_PLATFORM used to abort with Qt's xcb message (exit 134); a bad model
    ended the self-test before anyone could see the dialog."""
    from engine.demo import ensure_demo_model

    data = ensure_demo_model().read_bytes()
    half = tmp_path / "half.gguf"
    half.write_bytes(data[: len(data) // 2])
    shot = tmp_path / "shots" / "bad-model.png"
    proc = subprocess.run(
        [sys.executable, "-m", "app.main", "--self-test", "--model", str(half), "--screenshot", str(shot)],
        capture_output=True,
        text=True,
        timeout=300,
        env=bare_env(),
        cwd=ROOT,
    )
    assert proc.returncode == 1, proc.stderr
    result = json.loads(proc.stdout)
    assert result["ok"] is False and "half.gguf is truncated" in result["error"]
    # The shot shows the error dialog (its red icon) over a window whose speed panel has nothing to draw.
    assert result["screenshot"] == str(shot)
    pixels = load(shot)
    assert strongly_red(pixels) > 300 and speed_panel_accent(pixels) == 0


def test_the_screenshot_shows_the_dialogs_over_the_window(qtbot: QtBot) -> None:
    from PySide6.QtGui import QColor
    from PySide6.QtWidgets import QDialog, QWidget

    from app.self_test import grab_with_dialogs

    window = QWidget()
    window.setStyleSheet("background: white;")
    window.resize(400, 300)
    qtbot.addWidget(window)
    window.show()
    dialog = QDialog(window)
    dialog.setStyleSheet("background: black;")
    dialog.resize(100, 80)
    dialog.show()
    dialog.move(window.geometry().topLeft() + QPoint(150, 110))
    qtbot.waitUntil(dialog.isVisible)
    image = grab_with_dialogs(window).toImage()
    ratio = image.devicePixelRatio()
    assert image.pixelColor(int(200 * ratio), int(150 * ratio)) == QColor("black")  # the dialog
    assert image.pixelColor(int(20 * ratio), int(20 * ratio)) == QColor("white")  # the window around it
    assert window.grab().toImage().pixelColor(int(200 * ratio), int(150 * ratio)) == QColor("white")


def test_the_window_without_a_display_says_so_in_one_line() -> None:
    command = [sys.executable, "-m", "app.main", "--model", "demo"]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=60, env=bare_env())
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: no display") and proc.stderr.count("\n") == 1


def test_no_display_is_told_only_where_qt_would_abort() -> None:
    from app.main import no_display

    assert no_display({}, "linux")
    assert not no_display({"DISPLAY": ":0"}, "linux") and not no_display({"WAYLAND_DISPLAY": "wayland-0"}, "linux")
    assert not no_display({"QT_QPA_PLATFORM": "offscreen"}, "linux")
    assert not no_display({}, "darwin") and not no_display({}, "win32")


def test_a_truncated_file_on_the_command_line_gets_the_dialog_and_its_name_in_the_log(
    qtbot: QtBot, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`stride half.gguf` printed nothing and left no trace in the log."""
    from PySide6.QtWidgets import QApplication

    from app import main as app_main
    from app import settings as app_settings
    from app.controller import ChatController
    from app.views.error_dialog import ErrorDialog
    from engine.logs import log_dir

    half = tmp_path / "half.gguf"
    half.write_bytes(b"GGUF" + bytes(60))
    monkeypatch.setattr(app_settings, "settings_path", lambda: tmp_path / "config" / "settings.toml")
    monkeypatch.setattr(app_main, "default_db_path", lambda: tmp_path / "data" / "conversations.db")
    monkeypatch.setattr(QApplication, "exec", lambda *_: 0)
    monkeypatch.setattr(sys, "excepthook", sys.excepthook)
    started: list[ChatController] = []
    original = ChatController.start

    def start(self: ChatController, *args: object) -> None:
        started.append(self)
        original(self, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(ChatController, "start", start)
    assert app_main.main([str(half)]) == 0
    controller = started[0]
    qtbot.addWidget(controller.window)
    with qtbot.waitSignal(controller.sig_model_failed, timeout=60_000):
        pass
    dialogs = [d for d in controller.window.findChildren(ErrorDialog) if d.isVisible()]
    assert len(dialogs) == 1 and "half.gguf" in dialogs[0].clipboard_text()
    controller.shutdown()
    logged = (log_dir() / "stride.log").read_text(encoding="utf-8")
    assert f"could not load {half}: half.gguf" in logged
