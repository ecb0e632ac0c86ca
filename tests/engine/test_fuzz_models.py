"""Fuzzing the model-file path: mutated GGUF headers must give one clear message, never a crash.

Hypothesis mutates a valid tiny Step3.5 file at the starts of its header fields (counts,
key lengths, value types, values, tensor dimensions, types and offsets) and at random
bytes, so most cases get past the magic number and version into the metadata and the
tensor directory. Every case goes through inspect_model in this process (it must return
or raise ModelFileError with one line). The cases it accepts are then loaded by llama.cpp
and run for a few tokens, in batches in a subprocess: an abort inside llama.cpp fails this
test (naming the case, which is kept for replay) instead of killing the suite.

Multi-part sets get the same treatment: a mutated part header, a dropped part, a part
swapped in from another set or renamed, then inspected through any part and loaded.

The suite runs the same 1,000 cases every time (derandomized), so a new finding never turns
CI red by chance; STRIDE_FUZZ_RANDOM=1 (and STRIDE_FUZZ_CASES=N) explores new ones. Add what
it finds as an @example below.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import gguf
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from engine.api import ModelFileError
from engine.gguf import inspect_model
from tests.fixtures.builders import tiny
from tests.fixtures.parts import part_name, split_file

ROOT = Path(__file__).resolve().parents[2]
FUZZ_CASES = int(os.environ.get("STRIDE_FUZZ_CASES", "1000"))
EXPLORE = os.environ.get("STRIDE_FUZZ_RANDOM") == "1"
PARSE_LIMIT_S = 1.0  # one inspection of a 400 KB file; a slow case means a walk over a corrupt count
LOAD_TIMEOUT_S = 300
INTERESTING = (0, 1, 2, 3, 4, 7, 8, 16, 31, 32, 63, 64, 255, 256, 4096, 65535, 2**31 - 1, 2**31, 2**32 - 1)
INTERESTING_64 = (*INTERESTING, 2**32, 2**40, 2**62, 2**63 - 1, 2**63, 2**64 - 1)


def field_offsets(path: Path) -> list[int]:
    """Where each part of every metadata key and tensor description starts (per gguf's reader)."""
    reader = gguf.GGUFReader(path)
    offsets = {8, 16}  # tensor count, key count
    for f in [*reader.fields.values(), *(t.field for t in reader.tensors)]:
        at = f.offset
        for part in f.parts:
            offsets.add(at)
            at += int(part.nbytes)
    return sorted(offsets)


def mutations(offsets: list[int], end: int) -> st.SearchStrategy[list[tuple[object, ...]]]:
    where = st.one_of(st.sampled_from(offsets), st.integers(8, end - 1))
    one = st.one_of(
        st.tuples(st.just("byte"), where, st.integers(0, 255)),
        st.tuples(st.just("u32"), where, st.sampled_from(INTERESTING) | st.integers(0, 2**32 - 1)),
        st.tuples(st.just("u64"), where, st.sampled_from(INTERESTING_64)),
        st.tuples(st.just("truncate"), where),
        st.tuples(st.just("delete"), where, st.integers(1, 16)),
        st.tuples(st.just("insert"), where, st.binary(min_size=1, max_size=16)),
    )
    return st.lists(one, min_size=1, max_size=3)


def mutate(data: bytes, steps: list[tuple[object, ...]]) -> bytes:
    out = bytearray(data)
    for kind, at, *arg in steps:
        assert isinstance(at, int)
        at = min(at, len(out))
        if kind == "byte" and at < len(out):
            out[at] = int(arg[0])  # type: ignore[call-overload]
        elif kind in ("u32", "u64"):
            size = 4 if kind == "u32" else 8
            out[at : at + size] = int(arg[0]).to_bytes(size, "little")  # type: ignore[call-overload]
        elif kind == "truncate":
            del out[at:]
        elif kind == "delete":
            del out[at : at + int(arg[0])]  # type: ignore[call-overload]
        elif kind == "insert":
            out[at:at] = bytes(arg[0])  # type: ignore[call-overload]
    return bytes(out)


LOADER = r"""
import json, sys, traceback
from pathlib import Path
from engine.generate import GenerationParams
from engine.api import ModelFileError
from engine.runtime import LoadOptions, ModelLoadError, Runtime

for line in sys.stdin:
    path = Path(line.strip())
    print("@fuzz", json.dumps({"start": str(path)}), flush=True)
    try:
        runtime = Runtime.load(path, None, LoadOptions(n_ctx=256, n_threads=1))
        try:
            runtime.chat_prompt([{"role": "user", "content": "hi"}])
            for depth in (0, 3):
                runtime.generator.reset()
                runtime.generate(runtime.tokenize(" alpha"), GenerationParams(max_tokens=4, mtp_depth=depth))
        finally:
            runtime.close()
        outcome = {"outcome": "ok"}
    except (ModelFileError, ModelLoadError) as exc:
        outcome = {"outcome": "error", "message": str(exc)}
    except Exception:
        outcome = {"outcome": "exception", "message": traceback.format_exc()}
    print("@fuzz", json.dumps({"done": str(path), **outcome}), flush=True)
"""


def why_it_died(stderr: str) -> str:
    """The assertion or exception line from a dying process's stderr (ggml appends a long gdb backtrace)."""
    lines = [
        line
        for line in stderr.splitlines()
        if re.search(r"GGML_ASSERT|GGML_ABORT|terminate called|what\(\)|Fatal", line)
    ]
    return " | ".join(lines) or stderr[-500:]


def load_in_subprocess(paths: list[Path]) -> tuple[dict[str, dict[str, str]], dict[str, str]]:
    """Load every path in as few subprocesses as possible: (outcomes by path, crashes by path)."""
    outcomes: dict[str, dict[str, str]] = {}
    crashes: dict[str, str] = {}
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    remaining = list(paths)
    while remaining:
        proc = subprocess.run(
            [sys.executable, "-c", LOADER],
            input="".join(f"{p}\n" for p in remaining),
            capture_output=True,
            text=True,
            timeout=LOAD_TIMEOUT_S,
            env=env,
            cwd=ROOT,
        )
        started = None
        noise = []
        for line in proc.stdout.splitlines():
            if not line.startswith("@fuzz "):  # llama.cpp writes some complaints straight to stdout
                noise.append(line)
                continue
            record = json.loads(line.removeprefix("@fuzz "))
            if "start" in record:
                started = record["start"]
            else:
                outcomes[record.pop("done")] = {**record, "stdout": "\n".join(noise[-5:])}
                started = None
                noise = []
        if proc.returncode == 0:
            break
        assert started is not None, proc.stderr[-2000:]  # died between cases: a bug here, not in a case
        crashes[started] = f"exit code {proc.returncode}: {why_it_died(proc.stderr)}"
        names = [str(p) for p in remaining]
        remaining = remaining[names.index(started) + 1 :]  # carry on after the case that killed it
    return outcomes, crashes


ROPE_DIMS_KEY = b"step35.rope.dimension_count" + struct.pack("<I", gguf.GGUFValueType.UINT32)  # then its value


def test_mutated_headers_give_one_clear_message_and_never_crash_llama_cpp(tmp_path: Path) -> None:
    base_path = tiny(tmp_path / "base.gguf")
    base = base_path.read_bytes()
    data_start = gguf.GGUFReader(base_path).data_offset
    offsets = field_offsets(base_path)
    cases = tmp_path / "cases"
    cases.mkdir()
    path = cases / "case.gguf"
    accepted: dict[str, bytes] = {}
    kinds: Counter[str] = Counter()
    slowest = 0.0

    @settings(
        max_examples=FUZZ_CASES,
        derandomize=not EXPLORE,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    )
    # What earlier runs found, replayed every run: a NUL inside token "<0x41>" makes it "<", a
    # duplicate for llama.cpp; renaming "<0x0A>" leaves byte 0x0a unspellable by the tokenizer;
    # an odd rope dimension count trips ggml's rope assert at the first decode.
    @example([("byte", base.index(b"<0x41>") + 1, 0)])
    @example([("byte", base.index(b"<0x0A>") + 2, ord("y"))])
    @example([("byte", base.index(ROPE_DIMS_KEY) + len(ROPE_DIMS_KEY), 7)])
    @given(mutations(offsets, data_start))
    def check_one(steps: list[tuple[object, ...]]) -> None:
        nonlocal slowest
        data = mutate(base, steps)
        path.write_bytes(data)
        started = time.perf_counter()
        try:
            inspect_model(path)
            kind = "accepted"
            accepted.setdefault(hashlib.sha1(data).hexdigest()[:16], data)
        except ModelFileError as exc:
            kind = exc.kind
            message = str(exc)
            assert message and "\n" not in message and path.name in message, message
        elapsed = time.perf_counter() - started
        slowest = max(slowest, elapsed)
        assert elapsed < PARSE_LIMIT_S, (steps, elapsed)
        kinds[kind] += 1
        event(kind)

    fuzz_started = time.perf_counter()
    check_one()
    fuzz_s = time.perf_counter() - fuzz_started
    n_cases = sum(kinds.values())
    past_header = n_cases - kinds["not_gguf"] - kinds["unsupported"]
    assert n_cases >= min(FUZZ_CASES, 1000)
    assert past_header >= 0.8 * n_cases, kinds  # the mutations reach metadata and tensors, not just the magic

    paths = []
    for digest, data in accepted.items():
        case = cases / f"{digest}.gguf"
        case.write_bytes(data)
        paths.append(case)
    load_s, loaded = assert_loads_end_cleanly(paths, tmp_path / "crashes")
    print(
        f"\n{n_cases} cases in {fuzz_s:.1f} s (slowest parse {slowest * 1000:.0f} ms): {dict(kinds)}; "
        f"{len(paths)} distinct accepted files loaded in {load_s:.1f} s: {dict(loaded)}"
    )


def assert_loads_end_cleanly(paths: list[Path], keep_default: Path) -> tuple[float, Counter[str]]:
    """Load each accepted case in a subprocess: no crash, no exception, one-line errors. (seconds, outcomes)"""
    load_started = time.perf_counter()
    outcomes, crashes = load_in_subprocess(paths)
    load_s = time.perf_counter() - load_started
    if crashes:  # keep the killers for replay: STRIDE_FUZZ_KEEP names a folder
        keep = Path(os.environ.get("STRIDE_FUZZ_KEEP", keep_default))
        keep.mkdir(parents=True, exist_ok=True)
        for name in crashes:
            shutil.copytree(Path(name).parent, keep / Path(name).parent.name, dirs_exist_ok=True)
    assert not crashes, f"llama.cpp died on files inspect_model accepted (copies in {keep_default}): {crashes}"
    exceptions = {name: o["message"] for name, o in outcomes.items() if o["outcome"] == "exception"}
    assert not exceptions, exceptions
    for o in outcomes.values():
        if o["outcome"] == "error":
            assert o["message"] and "\n" not in o["message"], o
    return load_s, Counter(o["outcome"] for o in outcomes.values())


# --- multi-part sets: a mutated part header, a dropped part, a part swapped in from another set ---

SET_CASES = max(FUZZ_CASES // 4, 50)
N_PARTS = 3


def set_operations(part_offsets: list[list[int]], part_ends: list[int]) -> st.SearchStrategy[list[tuple[object, ...]]]:
    def mutate_part(k: int) -> st.SearchStrategy[tuple[object, ...]]:
        return st.tuples(st.just("mutate"), st.just(k), mutations(part_offsets[k], part_ends[k]))

    part = st.integers(0, N_PARTS - 1)
    one = st.one_of(
        part.flatmap(mutate_part),
        st.tuples(st.just("drop"), part),
        st.tuples(st.just("swap"), part, st.sampled_from(["wider", "two-part"])),
        st.tuples(st.just("rename"), part),
    )
    return st.lists(one, min_size=1, max_size=2)


def test_broken_sets_give_one_clear_message_and_never_crash_llama_cpp(tmp_path: Path) -> None:
    def cut(source: Path, name: str, n: int) -> list[bytes]:
        (tmp_path / name).mkdir()
        return [p.read_bytes() for p in split_file(source, tmp_path / name, n, prefix="model")]

    base = cut(tiny(tmp_path / "base.gguf"), "base", N_PARTS)
    others = {
        "wider": cut(tiny(tmp_path / "wide.gguf", n_embd=64), "wider", N_PARTS),
        "two-part": cut(tiny(tmp_path / "b.gguf"), "two", 2),
    }
    offsets, ends = [], []
    for data in base:
        probe = tmp_path / "probe.gguf"
        probe.write_bytes(data)
        offsets.append(field_offsets(probe))
        ends.append(gguf.GGUFReader(probe).data_offset)
    cases = tmp_path / "cases"
    accepted: dict[str, Path] = {}
    kinds: Counter[str] = Counter()

    @settings(
        max_examples=SET_CASES,
        derandomize=not EXPLORE,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    )
    @given(set_operations(offsets, ends))
    def check_one(ops: list[tuple[object, ...]]) -> None:
        files: dict[str, bytes] = {part_name("model", k, N_PARTS): data for k, data in enumerate(base)}
        names = list(files)
        for op, k, *arg in ops:
            assert isinstance(k, int)
            name = names[k]
            if name not in files:
                continue
            if op == "mutate":
                files[name] = mutate(files[name], arg[0])  # type: ignore[arg-type]
            elif op == "drop":
                del files[name]
            elif op == "swap":
                other = others[str(arg[0])]
                files[name] = other[min(k, len(other) - 1)]
            elif op == "rename":
                files[f"renamed-{k}.gguf"] = files.pop(name)
        digest = hashlib.sha1(repr(sorted(files.items())).encode()).hexdigest()[:16]
        folder = cases / digest
        folder.mkdir(parents=True, exist_ok=True)
        for name, data in files.items():
            (folder / name).write_bytes(data)
        chosen = next((folder / n for n in names if n in files), folder / sorted(files)[0]) if files else None
        if chosen is None:
            return
        try:
            info = inspect_model(chosen)
            kind = "accepted"
            accepted.setdefault(digest, info.path)
        except ModelFileError as exc:
            kind = exc.kind
            message = str(exc)
            assert message and "\n" not in message and chosen.name in message, message
        kinds[kind] += 1
        event(kind)

    check_one()
    assert sum(kinds.values()) >= SET_CASES * 0.9
    assert kinds["accepted"] and kinds["missing"] and kinds["mismatch"], kinds  # every kind of break was reached
    load_s, loaded = assert_loads_end_cleanly(list(accepted.values()), tmp_path / "crashes")
    print(f"\n{dict(kinds)}; {len(accepted)} accepted sets loaded in {load_s:.1f} s: {dict(loaded)}")
