"""The demo model is built once however many threads and processes ask for it at the same time."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import pytest

from engine import demo, synth
from engine.gguf import inspect_model

ROOT = Path(__file__).resolve().parents[2]
# Reports each build it makes, then builds for real.
BUILD_REPORTING = """
import sys
from pathlib import Path
import engine.demo as demo
build = demo.build_demo_model
demo.build_demo_model = lambda path: (print("built", flush=True), build(path))[1]
demo.ensure_demo_model(Path(sys.argv[1]))
"""


def test_two_processes_build_the_demo_once(tmp_path: Path) -> None:
    path = tmp_path / "models" / "demo.gguf"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", BUILD_REPORTING, str(path)], cwd=ROOT, stdout=subprocess.PIPE, text=True
        )
        for _ in range(2)
    ]
    outputs = [proc.communicate(timeout=120)[0] for proc in procs]
    assert [proc.returncode for proc in procs] == [0, 0]
    assert "".join(outputs).count("built") == 1
    assert inspect_model(path).n_mtp_heads == 3
    assert sorted(p.name for p in path.parent.iterdir()) == ["demo.gguf", "demo.gguf.lock"]


def test_threads_wait_for_the_build_in_progress(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "demo.gguf"
    builds: list[Path] = []
    started = threading.Event()
    build = demo.build_demo_model

    def slow_build(target: Path) -> Path:
        builds.append(target)
        started.set()
        threading.Event().wait(0.3)  # the other thread asks meanwhile
        return build(target)

    monkeypatch.setattr(demo, "build_demo_model", slow_build)
    results: list[Path] = []
    first = threading.Thread(target=lambda: results.append(demo.ensure_demo_model(path)))
    first.start()
    started.wait(10)
    second = threading.Thread(target=lambda: results.append(demo.ensure_demo_model(path)))
    second.start()
    first.join(60)
    second.join(60)
    assert results == [path, path] and builds == [path]


def test_writers_of_one_file_at_once_do_not_collide(tmp_path: Path) -> None:
    """Each writer has a temporary name of its own; the last rename wins, whole."""
    path = tmp_path / "same.gguf"
    vocab = synth.Vocab.build([])
    shape = synth.StepShape(n_vocab=len(vocab), n_embd=384, n_layer=1, n_head=2, n_head_kv=1, n_ff=64, n_swa=16)
    embd = synth.one_hot_embeddings(len(vocab), shape.n_embd)
    errors: list[BaseException] = []

    def write() -> None:
        weights = synth.StepWeights(
            token_embd=embd,
            output_norm=embd[0] * 0 + 1,
            output=synth.readout(embd, list(range(len(vocab))), 4.0),
            blocks=[synth.zero_block(shape)],
            heads=[],
        )
        try:
            synth.write_step35(path, shape, vocab, weights, name="same", mtp=False, declare_mtp=False)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=write) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    assert inspect_model(path).n_layer == 1
    assert [p.name for p in tmp_path.iterdir()] == ["same.gguf"]


def test_a_new_demo_version_removes_the_older_ones(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An upgrade builds the new demo and deletes the old files (190 MB each); other files stay."""
    old = [tmp_path / f"stride-demo-v{n}.gguf" for n in range(1, demo.DEMO_VERSION)]
    unrelated = [tmp_path / "stride-demo-vX.gguf", tmp_path / "my-model.gguf"]
    for path in old + unrelated:
        path.write_bytes(b"GGUF")
    monkeypatch.setattr(demo, "build_demo_model", lambda path: path.write_bytes(b"GGUF") and path)
    current = tmp_path / f"stride-demo-v{demo.DEMO_VERSION}.gguf"
    assert demo.ensure_demo_model(current) == current
    assert sorted(p.name for p in tmp_path.glob("*.gguf")) == sorted(p.name for p in [current, *unrelated])
