"""Command-line values, checked the same way by `stride-cli` and `stride` (its self-test).

A value out of range is refused while parsing: one `error:` line on stderr and exit code 2,
with the range in the message, never a traceback or a silent clamp.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import NoReturn

from engine.api import AUTO

EXIT_USAGE = 2
MAX_SEED = 2**32 - 2  # 2**32 - 1 is llama.cpp's "pick a random seed"


class Parser(argparse.ArgumentParser):
    """argparse that reports a bad value as one `error:` line (not usage plus a message) and exits 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"error: {message}; see `{self.prog} --help`\n")


class VersionAction(argparse.Action):
    """`--version`: print the text `about()` returns, computed only when asked (it starts llama.cpp)."""

    def __init__(self, option_strings: list[str], dest: str, about: Callable[[], str], **kw: object) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kw)  # type: ignore[arg-type]
        self.about = about

    def __call__(self, parser: argparse.ArgumentParser, *_args: object, **_kw: object) -> None:
        sys.stdout.write(self.about() + "\n")
        parser.exit(0)


def positive_int(text: str) -> int:
    """A whole number 1 or more."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{value} must be 1 or more")
    return value


def non_negative_int(text: str) -> int:
    """A whole number 0 or more."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value} must be 0 or more")
    return value


def seed(text: str) -> int:
    """A sampler seed, 0 to MAX_SEED."""
    value = non_negative_int(text)
    if value > MAX_SEED:
        raise argparse.ArgumentTypeError(f"{value} is outside 0..{MAX_SEED}")
    return value


def port(text: str) -> int:
    """A TCP port, 0 (any free one) to 65535."""
    value = non_negative_int(text)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"{value} is outside 0..65535")
    return value


def ranged_float(low: float, high: float) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not low <= value <= high:  # NaN fails this too
            raise argparse.ArgumentTypeError(f"{value} is outside {low:g}..{high:g}")
        return value

    return parse


def depth(text: str) -> int | str:
    """An MTP depth: a whole number 0 or more, or "auto"."""
    return AUTO if text.strip().lower() == AUTO else non_negative_int(text)


def depths(text: str) -> list[int | str]:
    """Comma-separated depths: 0,1,2,3,auto."""
    values = [depth(x) for x in text.split(",") if x.strip()]
    if not values:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of depths like 0,1,2,3,auto")
    return values


METAVARS = {
    "--model": "FILE",
    "--mtp-model": "FILE",
    "--ctx": "N",
    "--prompt": "TEXT",
    "--prompt-file": "FILE",
    "--system": "TEXT",
    "--max-tokens": "N",
    "--mtp-depth": "D",
    "--depths": "LIST",
    "--p-min": "P",
    "--temperature": "T",
    "--top-k": "K",
    "--top-p": "P",
    "--min-p": "P",
    "--repeat-penalty": "R",
    "--seed": "N",
    "--stop": "TEXT",
    "--threads": "N",
    "--gpu-layers": "N",
    "--repeat": "K",
    "--out": "FILE",
    "--screenshot": "PATH",
    "--host": "ADDRESS",
    "--port": "N",
    "--api-key": "KEY",
    "--cors-origin": "ORIGIN",
    "--max-tokens-limit": "N",
    "--queue": "N",
}


def name_values(parser: argparse.ArgumentParser) -> None:
    """Short value names in --help (`--ctx N`, not `--ctx CTX`), here and in every subcommand."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                name_values(sub)
        elif action.metavar is None and action.nargs != 0:
            for option in action.option_strings:
                if option in METAVARS:
                    action.metavar = METAVARS[option]


# The same words for the same options in both programs.
THREADS_HELP = "CPU threads, 1 or more (default: all cores)"
MAX_TOKENS_HELP = "most tokens to generate, 1 or more (default: %(default)s)"
MTP_DEPTH_HELP = (
    "MTP depth: auto (default: plain decoding or dynamic drafting, whichever is faster here), "
    "0 = off, or 1 to the model's head count (more is lowered to it, with a note)"
)
