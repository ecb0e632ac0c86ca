"""Layering rules that keep the engine testable without a display."""

from __future__ import annotations

import ast
from pathlib import Path

ENGINE = Path(__file__).resolve().parents[1] / "engine"
QT_ADAPTER = {"qt_worker.py"}  # the one module allowed to turn engine callbacks into Qt signals
LLAMA_BINDING = {"llama.py"}  # the one module allowed to touch llama_cpp


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_engine_core_never_imports_qt() -> None:
    offenders = [p.name for p in ENGINE.glob("*.py") if p.name not in QT_ADAPTER and "PySide6" in imported_modules(p)]
    assert offenders == []


def test_only_the_binding_module_touches_llama_cpp() -> None:
    offenders = [
        p.name for p in ENGINE.glob("*.py") if p.name not in LLAMA_BINDING and "llama_cpp" in imported_modules(p)
    ]
    assert offenders == []
