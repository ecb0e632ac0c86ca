"""The model picker on Step 3.5 Flash at its real size (the published Q4_K_M set, header only): it won't fit."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from PySide6.QtCore import QThreadPool
from PySide6.QtWidgets import QLabel
from pytestqt.qtbot import QtBot

from app import model_inspector
from app.views.model_dialog import ModelPickerDialog
from engine.api import format_bytes
from engine.gguf import ModelInfo, estimate_memory, free_memory_bytes
from tests.fixtures import step_flash as sf

GIB = 1 << 30
N_CTX = 32768


@pytest.fixture(scope="module")
def flash(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    return sf.write_set(tmp_path_factory.mktemp("step-flash"))


@pytest.fixture
def free(monkeypatch: pytest.MonkeyPatch) -> int:
    """This machine's free memory, measured once, so that the text can be checked to the digit."""
    amount = free_memory_bytes()
    monkeypatch.setattr(model_inspector, "free_memory_bytes", lambda: amount)
    return amount


@pytest.fixture
def dialog(qtbot: QtBot, free: int) -> Iterator[ModelPickerDialog]:
    d = ModelPickerDialog([], n_ctx=N_CTX)
    qtbot.addWidget(d)
    yield d
    QThreadPool.globalInstance().waitForDone()


def field(d: ModelPickerDialog, name: str) -> str:
    found = [w.text() for w in d.findChildren(QLabel) if w.accessibleName().startswith(f"{name}: ")]
    assert len(found) == 1, f"no single {name!r} field"
    return found[0]


def test_part_one_of_the_set_wont_fit(qtbot: QtBot, dialog: ModelPickerDialog, flash: list[Path], free: int) -> None:
    with qtbot.waitSignal(dialog.sig_inspected, timeout=20_000) as blocker:
        dialog.set_path(str(flash[0]))
    info = blocker.args[0]
    assert isinstance(info, ModelInfo), info
    needed = estimate_memory(info, N_CTX).total
    if free >= needed:
        pytest.skip(f"this machine has {free / GIB:.0f} GiB free: the set would fit")

    memory = field(dialog, "Memory")
    advice = "choose a smaller quantization or context"
    assert memory == f"Won't fit: needs {format_bytes(needed)} of {format_bytes(free)} free; {advice}"
    m = re.fullmatch(r"Won't fit: needs (\d+\.\d) GiB of (\d+\.\d) GiB free; .*", memory)
    assert m is not None, memory
    assert 117 < float(m.group(1)) < 119  # 116.2 GiB of weights, 1.6 GiB of KV cache at 32K, buffers

    assert field(dialog, "File size").startswith(format_bytes(info.file_bytes))  # 116.2 GiB
    assert format_bytes(info.file_bytes) == "116.2 GiB"
    # The file type llama-quantize wrote (its type argument, the Q8_0 default the publisher kept), then the bytes.
    assert field(dialog, "Quantization") == "Q4_K_M (Q4_K / Q5_K / Q8_0)"
    assert field(dialog, "Parameters") == "199.4 B"
    assert field(dialog, "Trained context") == "262,144 tokens"
    assert field(dialog, "MTP heads").startswith("3 heads, in this")
    assert field(dialog, "Memory estimate").startswith(
        f"For {N_CTX:,} tokens of context: weights 116.2 GiB, KV cache 1.6 GiB"
    )
