"""How the app names a model's files: one file, any part of a multi-part set, or parts picked together.

Real Step Flash GGUFs ship as `NAME-00001-of-0000N.gguf` ... parts. The engine opens the
whole set from any part; what the app remembers (settings, the recent list) is part 1, so a
set is one entry however it was opened. Parts picked together are kept as a tuple: renamed
parts cannot be found from part 1's name, so they must reach the engine all together.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

from engine.api import DEMO_NAME
from engine.qt_worker import first_part, looks_like_part

ModelChoice = str | tuple[str, ...]  # a path ("" none, "demo" the built-in model), or several parts of one set


def choice_of(paths: Sequence[str]) -> ModelChoice:
    """One path as itself, several as a tuple, none as ""."""
    if not paths:
        return ""
    return paths[0] if len(paths) == 1 else tuple(paths)


def paths_of(choice: ModelChoice) -> tuple[str, ...]:
    if isinstance(choice, str):
        return (choice,) if choice else ()
    return choice


def engine_paths(choice: ModelChoice) -> Path | list[Path]:
    """What inspect_model and Runtime.load take: one file, or the parts as a list."""
    return Path(choice) if isinstance(choice, str) else [Path(p) for p in choice]


def set_key(path: str) -> str:
    """The same string for every part of a set (its part 1, by name): one recent entry per set."""
    return path if path in ("", DEMO_NAME) else str(first_part(Path(path)))


def remembered(choice: ModelChoice) -> str:
    """What settings and the recent list keep: part 1 of a set when it is there, else what was chosen.

    A later part whose part 1 is missing stays as chosen, so that loading it again names the
    missing part instead of saying that part 1 does not exist.
    """
    paths = paths_of(choice)
    if not paths:
        return ""
    first = set_key(paths[0])
    return first if first == paths[0] or Path(first).exists() else paths[0]


def part_count(path: str) -> int:
    """How many parts a file's name says its set has (1 for a single file)."""
    # looks_like_part guarantees the name ends in "-NNNNN-of-NNNNN.gguf".
    return int(path[-10:-5]) if looks_like_part(Path(path)) else 1


def recent_with(recent: Sequence[str], path: str, limit: int = 10) -> list[str]:
    """`path` first, then the others, with any other entry for the same set dropped."""
    key = set_key(path)
    return [path, *[p for p in recent if set_key(p) != key]][:limit]


def without_projectors(paths: Sequence[str]) -> list[str]:
    """Several files picked or dropped at once (a whole download folder, say): the vision projector among
    them is paired by its folder, not opened as a part of the model."""
    models = [p for p in paths if "mmproj" not in Path(p).name.lower()]
    return models if len(paths) > 1 and models else list(paths)


NAME_MAX = 40  # longer general.name values are usually repository paths or descriptions: use the file's name
_PART_SUFFIX = re.compile(r"-\d{5}-of-\d{5}$")


def display_name(general_name: str | None, path: Path | str, quantization: str = "") -> str:
    """A short, clean name for the header: the GGUF's `general.name` tidied (spaces collapsed, a
    repository prefix such as "stepfun-ai/" dropped) when it is short, else the file's name without
    ".gguf", the part number of a multi-part set and the quantization (shown beside it anyway)."""
    name = " ".join((general_name or "").split()).rsplit("/", 1)[-1].strip(" -_")
    if name and len(name) <= NAME_MAX and not name.lower().endswith(".gguf"):
        return name
    stem = Path(path).name
    stem = stem[:-5] if stem.lower().endswith(".gguf") else stem
    stem = _PART_SUFFIX.sub("", stem)
    quant = quantization.split(" ", 1)[0]
    if quant and len(stem) > len(quant) + 1 and stem.lower().endswith(quant.lower()):
        trimmed = stem[: -len(quant)]
        if trimmed[-1] in "-_.":
            stem = trimmed.rstrip("-_.")
    return stem or Path(path).name
