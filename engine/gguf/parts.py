"""Multi-part GGUF sets: every real Step Flash file ships as `NAME-00001-of-0000N.gguf` ... .

llama.cpp's `gguf-split` writes each part as a GGUF of its own holding some of the
tensors; the keys `split.no` (0-based, UINT16), `split.count` (UINT16) and
`split.tensors.count` (INT32) tie them together, and only part 1 carries the model's
metadata. llama.cpp (src/llama-model-loader.cpp) must be given part 1, finds the others
by the name pattern alone (`llama_split_prefix` / `llama_split_path`) or takes an explicit
ordered list (`llama_model_load_from_splits`), checks each part's `split.no`, refuses a
tensor found twice and compares the tensor total with `split.tensors.count`.

Here any part, or several parts picked together, opens the whole set; everything
llama.cpp would refuse is refused first, with the file named and the fix said.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import gguf

from engine.api import ModelFileError
from engine.gguf.reader import GgufFile, read_gguf, type_name

_VT = gguf.GGUFValueType
_SPLIT_NO = "split.no"
_SPLIT_COUNT = "split.count"
_SPLIT_TENSORS = "split.tensors.count"
_PART_SUFFIX = re.compile(r"-(\d{5})-of-(\d{5})\.gguf$")


@dataclass(frozen=True)
class SplitKeys:
    """Where one file sits in its set."""

    no: int  # 0-based
    count: int
    n_tensors: int | None  # the whole set's tensor count, as written into each part


def split_keys(f: GgufFile) -> SplitKeys | None:
    """The file's place in a multi-part set, or None for a single file (llama.cpp ignores split.no then)."""
    count = _key(f, _SPLIT_COUNT, _VT.UINT16)
    if count is None or count <= 1:
        return None
    no = _key(f, _SPLIT_NO, _VT.UINT16)
    if no is None:
        raise f.damaged(f"it says it is one of {count} parts but has no {_SPLIT_NO} key")
    if no >= count:
        raise f.damaged(f"it says it is part {no + 1} of {count}")
    return SplitKeys(no, count, _key(f, _SPLIT_TENSORS, _VT.INT32))


def _key(f: GgufFile, key: str, vtype: int) -> int | None:
    """An integer key of exactly the type llama.cpp's get_key reads it as (any other fails the load)."""
    v = f.kv.get(key)
    if v is None:
        return None
    if v.type != vtype:
        raise f.damaged(f"key {key} has type {type_name(v)}, expected {_VT(vtype).name}")
    assert isinstance(v.value, int)
    return v.value


def part_path(path: Path, no: int, count: int) -> Path | None:
    """Part `no` (0-based) of the set `path` is a part of, by llama.cpp's naming; None if its name is not so."""
    m = _PART_SUFFIX.search(path.name)
    if m is None:
        return None
    return path.with_name(f"{path.name[: m.start()]}-{no + 1:05d}-of-{count:05d}.gguf")


def looks_like_part(path: Path) -> bool:
    """Whether the name follows llama.cpp's `PREFIX-%05d-of-%05d.gguf` pattern for parts of a set."""
    m = _PART_SUFFIX.search(path.name)
    return m is not None and int(m.group(2)) > 1


def first_part(path: Path) -> Path:
    """Part 1 of the set a file's name says it belongs to, or the file itself: what a recent list keeps."""
    m = _PART_SUFFIX.search(path.name)
    if m is None or int(m.group(2)) <= 1:
        return path
    return path.with_name(f"{path.name[: m.start()]}-00001-of-{m.group(2)}.gguf")


@dataclass(frozen=True)
class ModelFiles:
    """A model's files as llama.cpp will load them: the parts in order, merged into one header."""

    merged: GgufFile  # part 1's metadata, every part's tensors, the set's total size
    parts: tuple[Path, ...]  # part 1 first; a single file is a set of one
    opened_part: int  # 0-based index of the part the user chose

    @property
    def path(self) -> Path:
        return self.parts[0]


def read_model_files(chosen: Sequence[Path]) -> ModelFiles:
    """Read the whole set that the chosen file(s) belong to, checked the way llama.cpp checks it.

    One file: a single-file model, or any part of a set whose other parts sit beside it
    under llama.cpp's names. Several files: parts of one set picked together (they may
    be renamed; they are put in order by their split.no).
    """
    if not chosen:
        raise ValueError("no file chosen")
    _refuse_repeats(chosen)
    given = [(path, read_gguf(path)) for path in chosen]
    keys = [(path, f, split_keys(f)) for path, f in given]
    singles = [path for path, _, k in keys if k is None]
    if singles:
        if len(chosen) == 1:
            f = given[0][1]
            return ModelFiles(replace(f, parts=(f.path,)), (f.path,), 0)
        raise ModelFileError(
            f"{singles[0].name} is a whole model, not a part of a split one; open it on its own", "mismatch"
        )
    count = _common_count(keys)
    by_no: dict[int, tuple[Path, GgufFile]] = {}
    for path, f, k in keys:
        assert k is not None
        if k.no in by_no:
            raise ModelFileError(
                f"{by_no[k.no][0].name} and {path.name} are both part {k.no + 1} of {count}; keep one of them",
                "mismatch",
            )
        by_no[k.no] = (path, f)
    for no in range(count):
        if no not in by_no:
            by_no[no] = _find_part(no, count, by_no)
    parts = [by_no[no] for no in range(count)]
    set_name = parts[0][0].name
    for no, (_, f) in enumerate(parts):
        k = split_keys(f)
        if k is None or k.count != count or k.no != no:
            found = "a single-file model" if k is None else f"part {k.no + 1} of {k.count}"
            raise ModelFileError(
                f"{f.name}, part {no + 1} of the split model {set_name}, is {found}: it comes from another "
                "set or was renamed; download that part again",
                "mismatch",
            )
    merged = _merge([f for _, f in parts])
    first_chosen = keys[0][2]
    assert first_chosen is not None
    return ModelFiles(merged, merged.parts, first_chosen.no)


def _refuse_repeats(chosen: Sequence[Path]) -> None:
    seen: dict[Path, Path] = {}
    for path in chosen:
        key = path.resolve()
        if key in seen:
            raise ModelFileError(f"{path.name} was given twice; give each part once", "mismatch")
        seen[key] = path


def _common_count(keys: Sequence[tuple[Path, GgufFile, SplitKeys | None]]) -> int:
    first_path, _, first = keys[0]
    assert first is not None
    for path, _, k in keys[1:]:
        assert k is not None
        if k.count != first.count:
            raise ModelFileError(
                f"{first_path.name} belongs to a set of {first.count} parts but {path.name} to one of {k.count}: "
                "they come from different downloads; open the parts of one set",
                "mismatch",
            )
    return first.count


def _find_part(no: int, count: int, known: dict[int, tuple[Path, GgufFile]]) -> tuple[Path, GgufFile]:
    """A part the user did not give, found beside a given one by llama.cpp's naming."""
    anchor = known[min(known)][0]
    path = part_path(anchor, no, count)
    if path is None:
        raise ModelFileError(
            f"{anchor.name} is part {min(known) + 1} of {count} of a split model, but its name does not end in "
            f"-{min(known) + 1:05d}-of-{count:05d}.gguf, so its other parts cannot be found; "
            f"open all {count} parts together, or give them their original names",
            "missing",
        )
    if not path.exists():
        if no == 0:
            raise ModelFileError(
                f"{anchor.name} is part {min(known) + 1} of {count} of a split model, and its part 1 ({path.name}) "
                f"is not beside it; put all {count} parts in one folder and open {path.name}",
                "missing",
            )
        raise ModelFileError(
            f"the split model {anchor.name} is missing part {no + 1} of {count} ({path.name}); "
            "download it into the same folder as the other parts",
            "missing",
        )
    try:
        return path, read_gguf(path)
    except ModelFileError as e:  # name the set too: the user opened another file
        raise ModelFileError(f"part {no + 1} of {count} of the split model {anchor.name}: {e}", e.kind) from None


def _merge(parts: Sequence[GgufFile]) -> GgufFile:
    """One header for the set: part 1's metadata (the only part llama.cpp reads it from), all tensors."""
    first = parts[0]
    owner: dict[str, str] = {}
    for f in parts:
        for t in f.tensors:
            if t.name in owner:
                raise ModelFileError(
                    f"the parts of the split model {first.name} overlap: tensor {t.name} is in both {owner[t.name]} "
                    f"and {f.name}, so they come from different sets; download the set again",
                    "mismatch",
                )
            owner[t.name] = f.name
    tensors = [t for f in parts for t in f.tensors]
    k = split_keys(first)
    assert k is not None
    if k.n_tensors is None:
        raise first.damaged(f"it is part 1 of {k.count} but has no {_SPLIT_TENSORS} key")
    if k.n_tensors != len(tensors):
        raise ModelFileError(
            f"the split model {first.name} should hold {k.n_tensors:,} tensors but its {k.count} parts hold "
            f"{len(tensors):,}: a part is incomplete or from another set; download the set again",
            "mismatch",
        )
    return replace(
        first,
        size=sum(f.size for f in parts),
        tensors=tensors,
        parts=tuple(f.path for f in parts),
    )
