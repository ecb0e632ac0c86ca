"""Entry point of the `stride` GUI, and its `--self-test` (app/self_test.py).

`stride [FILE ...]` opens the window on a model (any part of a split model; several files are the
parts of one), else on the last one used. `stride --self-test [--model FILE] [--mtp-depth D]
[--out FILE] [--screenshot PATH]` drives the real window once and prints one JSON line.
Without a display (Linux, no DISPLAY or WAYLAND_DISPLAY, no QT_QPA_PLATFORM), the self-test runs
offscreen by itself, and the window says in one `error:` line why it cannot open.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
import traceback
from collections.abc import Mapping

STARTED = time.perf_counter()  # before Qt and the app load: "start to window shown" counts from here

from pathlib import Path  # noqa: E402
from types import TracebackType  # noqa: E402

from PySide6.QtWidgets import QApplication, QMessageBox  # noqa: E402

from app.controller import ChatController  # noqa: E402
from app.model_files import choice_of  # noqa: E402
from app.resources import icon  # noqa: E402
from app.self_test import SELF_TEST_PROMPT, StallMeter, run_self_test  # noqa: E402
from app.settings import load_settings  # noqa: E402
from app.store import ConversationStore, StoreError, default_db_path  # noqa: E402
from app.theme import apply_theme  # noqa: E402
from app.views.error_dialog import show_error  # noqa: E402
from app.views.main_window import MainWindow  # noqa: E402
from engine.api import DEMO_NAME  # noqa: E402
from engine.qt_worker import configure_logging, options, version_text  # noqa: E402

__all__ = ["StallMeter", "main", "parse_args"]  # StallMeter: where the tests have always found it

log = logging.getLogger("stride")


def build_parser() -> argparse.ArgumentParser:
    parser = options.Parser(prog="stride", description="Stride: offline chat with Step Flash and MTP.")
    parser.add_argument(
        "--version",
        action=options.VersionAction,
        about=lambda: version_text("stride"),
        help="print Stride's version, llama-cpp-python's and llama.cpp's, and the CPU backend in use, then exit",
    )
    parser.add_argument(
        "--self-test",
        action="store_true",
        help="open the window, load the model, send one prompt as a user would, and print one JSON line "
        "(works without a display: it falls back to offscreen)",
    )
    parser.add_argument(
        "--model",
        default=None,
        help=f"GGUF file to open, any part of a split model ('{DEMO_NAME}': the built-in demo model; "
        "default: the last model used, with --self-test the demo)",
    )
    # What a file manager passes (the .desktop entry's `Exec=stride %f`, the Windows file association);
    # several files are the parts of one split model, opened once.
    parser.add_argument("model_files", nargs="*", metavar="FILE", help="GGUF file(s) to open, as --model")
    parser.add_argument("--mtp-model", default="", help="separate MTP-only GGUF (default: none)")
    self_test = parser.add_argument_group("self-test options")
    self_test.add_argument("--mtp-depth", type=options.depth, default=None, help=options.MTP_DEPTH_HELP)
    self_test.add_argument("--prompt", default=SELF_TEST_PROMPT, help="the prompt it sends (default: %(default)r)")
    self_test.add_argument("--max-tokens", type=options.positive_int, default=512, help=options.MAX_TOKENS_HELP)
    self_test.add_argument("--threads", type=options.positive_int, default=None, help=options.THREADS_HELP)
    self_test.add_argument(
        "--out",
        type=Path,
        default=None,
        help="also write the JSON line to this file (default: stdout only); the screenshot goes beside it",
    )
    self_test.add_argument(
        "--screenshot",
        type=Path,
        default=None,
        help="save the window's screenshot (PNG) here (default: beside --out, else in a temporary folder); "
        "the JSON's `screenshot` says where it is",
    )
    parser.add_argument(
        "--verbose",
        action="store_true",
        help="debug logging: llama.cpp's whole log (kept at warnings otherwise) in stride.log, and the log on stderr",
    )
    options.name_values(parser)
    return parser


def parse_args(argv: list[str]) -> argparse.Namespace:
    args = build_parser().parse_args(argv)
    files = [_absolute(f) for f in ([args.model] if args.model else args.model_files)]
    args.model = choice_of(files) or None
    args.mtp_model = _absolute(args.mtp_model) if args.mtp_model else ""
    return args


def no_display(environ: Mapping[str, str], platform: str = sys.platform) -> bool:
    """Whether Qt would find no display (and abort): Linux with neither X11 nor Wayland, and no platform chosen."""
    if not platform.startswith("linux") or environ.get("QT_QPA_PLATFORM"):
        return False
    return not (environ.get("DISPLAY") or environ.get("WAYLAND_DISPLAY"))


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


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    configure_logging(verbose=args.verbose)
    if QApplication.instance() is None and no_display(os.environ):
        if not args.self_test:
            log.error("no display: DISPLAY and WAYLAND_DISPLAY are unset")
            print(
                "error: no display to open Stride's window on (DISPLAY and WAYLAND_DISPLAY are unset); "
                "start it from a desktop session",
                file=sys.stderr,
            )
            return options.EXIT_USAGE
        os.environ["QT_QPA_PLATFORM"] = "offscreen"  # the self-test needs no screen: it grabs the window
    app = QApplication.instance() or QApplication(sys.argv[:1])
    assert isinstance(app, QApplication)
    app.setApplicationName("Stride")
    app.setOrganizationName("Stride")
    app.setWindowIcon(icon("stride"))
    if args.self_test:
        return run_self_test(app, args, STARTED, _install_excepthook)

    settings = load_settings()
    apply_theme(app, settings.settings.theme)
    window = MainWindow()
    try:
        store = ConversationStore(default_db_path())
    except StoreError as exc:
        # Nothing else can run without the conversation folder: a blocking message is right here.
        log.error("cannot start: %s", exc)
        QMessageBox.critical(None, "Stride cannot start", str(exc))
        return 2
    controller = ChatController(window, store, settings)
    _install_excepthook(window)
    window.restore_geometry()
    window.show()
    if args.model:
        log.info("opening %s from the command line", args.model)
    controller.start(args.model, args.mtp_model)  # None: the last model used
    return app.exec()


if __name__ == "__main__":
    sys.exit(main())
