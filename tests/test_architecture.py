"""Layering rules that keep the engine testable without a display and the app behind one door.

Each rule names every offending file:line. Imports are read from the source (inside functions
too), so a rule cannot be dodged by importing late; the import-time checks run in a fresh
interpreter, so they see what importing a module really loads.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ENGINE, APP = ROOT / "engine", ROOT / "app"
QT_ADAPTER = ENGINE / "qt_worker.py"  # the one module that turns engine callbacks into Qt signals
LLAMA_BINDING = ENGINE / "llama"  # the one package that touches llama_cpp
CLI = (ENGINE / "cli.py", ENGINE / "cli_parser.py")  # stride-cli: an entry point, like the app, not the core
CLI_MODULES = ("engine.cli", "engine.cli_parser")
API = "engine.api"  # the plain data engine and app share


def sources(folder: Path) -> list[Path]:
    return sorted(folder.rglob("*.py"))


def module_of(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> Iterator[tuple[int, str]]:
    """(line, dotted module) for every module a file imports; `from a import b` gives a and a.b."""
    package = module_of(path).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            module = ".".join([*base, *([node.module] if node.module else [])])
            yield node.lineno, module
            for alias in node.names:
                yield node.lineno, f"{module}.{alias.name}"


def within(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


def engine_module_outside(*allowed: str) -> Callable[[str], bool]:
    """A module of the engine's other than `allowed` (and their submodules)."""
    return lambda m: m.startswith("engine.") and not any(within(m, a) for a in allowed)


def offenders(files: list[Path], bad: Callable[[str], bool]) -> list[str]:
    return sorted(
        {f"{p.relative_to(ROOT)}:{line} imports {module}" for p in files for line, module in imports(p) if bad(module)}
    )


def engine_core() -> list[Path]:
    return [p for p in sources(ENGINE) if p != QT_ADAPTER and p not in CLI]


def test_the_rules_see_every_module_in_packages_too() -> None:
    assert ENGINE / "gguf" / "reader.py" in engine_core()
    assert any(p.parent.name == "store" for p in sources(APP))
    assert any(p.parent.name == "views" for p in sources(APP))


def test_engine_core_imports_no_qt() -> None:
    assert offenders(engine_core(), lambda m: within(m, "PySide6") or within(m, "shiboken6")) == []


def test_engine_core_imports_neither_the_app_nor_the_adapter_nor_the_cli() -> None:
    bad = ("app", "engine.qt_worker", *CLI_MODULES)
    assert offenders(engine_core(), lambda m: any(within(m, b) for b in bad)) == []


def test_only_the_binding_package_touches_llama_cpp() -> None:
    files = [p for p in sources(ENGINE) + sources(APP) if not p.is_relative_to(LLAMA_BINDING)]
    assert offenders(files, lambda m: within(m, "llama_cpp")) == []


def test_the_app_reaches_the_engine_only_through_the_api_and_the_adapter() -> None:
    assert offenders(sources(APP), engine_module_outside(API, "engine.qt_worker")) == []


def test_nothing_in_the_app_imports_the_cli() -> None:
    assert offenders(sources(APP), lambda m: any(within(m, c) for c in CLI_MODULES)) == []


def test_views_import_only_the_plain_data_from_the_engine() -> None:
    assert offenders(sources(APP / "views"), engine_module_outside(API)) == []


@pytest.mark.parametrize("module", [API, "app.settings"])
def test_importing_loads_no_llama_cpp_and_no_qt(module: str) -> None:
    check = (
        f"import sys, {module}; "
        "loaded = sorted(m for m in sys.modules if m.split('.')[0] in ('llama_cpp', 'PySide6', 'engine.llama')); "
        "assert 'engine.llama' not in sys.modules and not loaded, loaded"
    )
    result = subprocess.run([sys.executable, "-c", check], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


def test_a_rule_names_the_file_and_line_it_catches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The rules can fail: a view that imports an engine module is named with its line."""
    views = tmp_path / "app" / "views"
    views.mkdir(parents=True)
    (views / "bad.py").write_text("from engine.api import AUTO\n\n\ndef f() -> None:\n    from engine.gguf import x\n")
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    assert offenders(sources(views), engine_module_outside(API)) == [
        "app/views/bad.py:5 imports engine.gguf",
        "app/views/bad.py:5 imports engine.gguf.x",
    ]
