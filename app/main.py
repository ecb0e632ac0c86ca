"""Entry point of the `stride` GUI, and its `--self-test`.

`stride --self-test [--model FILE] [--mtp-depth D] [--out FILE]` opens the real
window, loads the model (default: the built-in demo), types a prompt and clicks
Send exactly as a user would, waits for the reply and prints one JSON line:
ok, n_predicted, tokens_per_second, acceptance, max_ui_stall_ms, screenshot, and
cpu_variant (which build of llama.cpp's CPU backend runs: "haswell", "sse42", ... in a
portable build, "native" in pip's default one).
It uses a temporary data folder, so it never touches the user's conversations.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
import traceback

STARTED = time.perf_counter()  # before Qt and the app load: "start to window shown" counts from here

from dataclasses import replace  # noqa: E402
from pathlib import Path  # noqa: E402
from types import TracebackType  # noqa: E402
from typing import Any  # noqa: E402

from PySide6.QtCore import QTimer  # noqa: E402
from PySide6.QtWidgets import QApplication, QMessageBox  # noqa: E402

from app.controller import ChatController  # noqa: E402
from app.model_files import choice_of  # noqa: E402
from app.resources import icon  # noqa: E402
from app.settings import LoadResult, Settings, load_settings  # noqa: E402
from app.store import ConversationStore, StoreError, default_db_path  # noqa: E402
from app.theme import apply_theme  # noqa: E402
from app.views.error_dialog import show_error  # noqa: E402
from app.views.main_window import MainWindow  # noqa: E402
from engine import llama  # noqa: E402
from engine.cli import parse_depth  # noqa: E402
from engine.demo import DEMO_NAME  # noqa: E402
from engine.logs import configure_logging  # noqa: E402
from engine.qt_worker import LoadedModel, ReplyResult  # noqa: E402

log = logging.getLogger("stride")
SELF_TEST_PROMPT = "Hello! What can you do?"
SELF_TEST_TIMEOUT_MS = 15 * 60 * 1000
STALL_TIMER_MS = 10


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="stride", description="Stride: offline chat with Step Flash and MTP.")
    parser.add_argument("--self-test", action="store_true", help="run the GUI end to end once and print JSON")
    parser.add_argument(
        "--model",
        default=None,
        help=f"GGUF file to open, any part of a split model ('{DEMO_NAME}': the built-in demo model)",
    )
    # What a file manager passes (the .desktop entry's `Exec=stride %f`, the Windows file association);
    # several files are the parts of one split model, opened once.
    parser.add_argument("model_files", nargs="*", metavar="FILE", help="GGUF file(s) to open, as --model")
    parser.add_argument("--mtp-model", default="", help="separate MTP-only GGUF for --self-test")
    parser.add_argument("--mtp-depth", type=parse_depth, default=None, help="MTP depth for --self-test (0-3 or auto)")
    parser.add_argument("--prompt", default=SELF_TEST_PROMPT, help="prompt for --self-test")
    parser.add_argument("--max-tokens", type=int, default=512, help="reply length for --self-test")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads for --self-test (0: all cores)")
    parser.add_argument("--out", type=Path, default=None, help="also write the self-test JSON to this file")
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args(argv)
    files = [_absolute(f) for f in ([args.model] if args.model else args.model_files)]
    args.model = choice_of(files) or None
    args.mtp_model = _absolute(args.mtp_model) if args.mtp_model else ""
    return args


def _absolute(path: str) -> str:
    """A path from the command line as it is remembered: it must still work from another folder."""
    return path if path == DEMO_NAME else str(Path(path).absolute())


def _install_excepthook(window: MainWindow) -> None:
    """An unexpected error in a slot becomes a dialog with copyable details, never a silent crash."""

    def hook(kind: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
        details = "".join(traceback.format_exception(kind, exc, tb))
        log.error("unhandled exception:\n%s", details)
        show_error(window, "Something went wrong", f"{kind.__name__}: {exc}", details)

    sys.excepthook = hook


class StallMeter:
    """The longest gap between ticks of a 10 ms timer on the GUI thread: how long the UI froze."""

    def __init__(self) -> None:
        self.timer = QTimer(interval=STALL_TIMER_MS)
        self.timer.timeout.connect(self._tick)
        self.last = 0.0
        self.max_gap_ms = 0.0

    def start(self) -> None:
        self.last = time.perf_counter()
        self.timer.start()

    def stop(self) -> None:
        self.timer.stop()

    def _tick(self) -> None:
        now = time.perf_counter()
        self.max_gap_ms = max(self.max_gap_ms, (now - self.last) * 1000)
        self.last = now


def run_self_test(app: QApplication, args: argparse.Namespace) -> int:
    folder = Path(tempfile.mkdtemp(prefix="stride-self-test-"))
    settings = replace(
        Settings(),
        max_tokens=args.max_tokens,
        threads=args.threads,
        temperature=0.0,
    )
    if args.mtp_depth is not None:
        settings = replace(settings, mtp_depth=args.mtp_depth)
    apply_theme(app, settings.theme)
    window = MainWindow()
    store = ConversationStore(folder / "conversations.db")
    controller = ChatController(window, store, LoadResult(settings, None), settings_path=folder / "settings.toml")
    _install_excepthook(window)
    stall = StallMeter()
    outcome: dict[str, Any] = {
        "ok": False,
        "n_predicted": 0,
        "tokens_per_second": None,
        "acceptance": None,
        "max_ui_stall_ms": None,
        "screenshot": None,
        "cpu_variant": None,
    }

    def send(_loaded: LoadedModel) -> None:
        outcome["cpu_variant"] = llama.cpu_variant()  # the backend is up once a model has loaded
        window.composer.edit.setPlainText(args.prompt)
        stall.start()
        window.composer.send_button.click()  # the same path a user's click takes

    def finished(result: ReplyResult | None) -> None:
        stall.stop()
        app.processEvents()
        shot = (args.out.parent if args.out else folder) / "stride-self-test.png"
        window.grab().save(str(shot))
        outcome["max_ui_stall_ms"] = round(stall.max_gap_ms, 1)
        outcome["screenshot"] = str(shot)
        if result is not None:
            stats = result.stats
            outcome.update(
                n_predicted=stats["n_predicted"],
                tokens_per_second=stats["tokens_per_second"],
                acceptance=stats["acceptance"],
                mtp_depth=stats["mtp_depth"],
                stop_reason=stats["stop_reason"],
                text=result.text[:200],
            )
            outcome["ok"] = stats["n_predicted"] > 0 and stats["stop_reason"] in ("eog", "max_tokens")
        finish()

    def failed(message: str) -> None:
        outcome["error"] = message
        finish()

    def timed_out() -> None:
        outcome["error"] = "the self-test did not finish in time"
        finish()

    def finish() -> None:
        window.close()  # the controller shuts the engine down cleanly first
        app.quit()  # an error dialog left open must not keep the self-test alive

    controller.sig_model_ready.connect(send)
    controller.sig_reply_finished.connect(finished)
    controller.sig_model_failed.connect(failed)
    QTimer.singleShot(SELF_TEST_TIMEOUT_MS, timed_out)
    window.show()
    # The first turn of the event loop after show(): the window is on screen.
    QTimer.singleShot(0, lambda: outcome.update(window_shown_s=round(time.perf_counter() - STARTED, 3)))
    controller.start(args.model or DEMO_NAME, args.mtp_model)
    app.exec()
    line = json.dumps(outcome)
    print(line, flush=True)
    if args.out:
        args.out.write_text(line + "\n", encoding="utf-8")
    return 0 if outcome["ok"] else 1


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    configure_logging(verbose=args.verbose)
    app = QApplication.instance() or QApplication(sys.argv[:1])
    assert isinstance(app, QApplication)
    app.setApplicationName("Stride")
    app.setOrganizationName("Stride")
    app.setWindowIcon(icon("stride"))
    if args.self_test:
        return run_self_test(app, args)

    settings = load_settings()
    apply_theme(app, settings.settings.theme)
    window = MainWindow()
    try:
        store = ConversationStore(default_db_path())
    except StoreError as exc:
        # Nothing else can run without the conversation folder: a blocking message is right here.
        QMessageBox.critical(None, "Stride cannot start", str(exc))
        return 2
    controller = ChatController(window, store, settings)
    _install_excepthook(window)
    window.restore_geometry()
    window.show()
    controller.start(args.model, args.mtp_model)  # None: the last model used
    return app.exec()


if __name__ == "__main__":
    sys.exit(main())
