"""Shared fixtures: user folders in a temporary place, synthetic GGUFs built once per session."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

# Keep every test away from the real user's data, settings and logs (platformdirs reads XDG_*).
_SANDBOX = Path(os.environ.setdefault("STRIDE_TEST_HOME", f"/tmp/stride-test-home-{os.getpid()}"))
for _var in ("XDG_DATA_HOME", "XDG_CONFIG_HOME", "XDG_STATE_HOME", "XDG_CACHE_HOME"):
    os.environ[_var] = str(_SANDBOX / _var.lower())
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from engine.runtime import LoadOptions, Runtime  # noqa: E402
from tests.fixtures import builders  # noqa: E402

LIVE_SCALE = 0.06  # attention and FFN change the text often enough that a KV bug shows, rarely enough for MTP to help


@pytest.fixture(scope="session")
def fixture_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("gguf")


@pytest.fixture(scope="session")
def oracle_gguf(fixture_dir: Path) -> Path:
    """Trunk follows the successor table exactly; all three heads always agree."""
    return builders.build(fixture_dir / "oracle.gguf", builders.oracle())


@pytest.fixture(scope="session")
def live_gguf(fixture_dir: Path) -> Path:
    """Attention and FFN write to the residual: the text depends on the context."""
    return builders.build(fixture_dir / "live.gguf", builders.oracle(), live_scale=LIVE_SCALE)


@pytest.fixture(scope="session")
def long_live_gguf(fixture_dir: Path) -> Path:
    """The live model with a 64K trained context: replies long enough to interrupt."""
    return builders.build(
        fixture_dir / "long-live.gguf", builders.oracle(), live_scale=LIVE_SCALE, context_length=65536
    )


@pytest.fixture(scope="session")
def split_pair(fixture_dir: Path) -> tuple[Path, Path]:
    """The live model as StepFun ships Step-3.7-Flash: a trunk-only file and an MTP-only file."""
    o = builders.oracle()
    trunk = builders.build(fixture_dir / "split-trunk.gguf", o, live_scale=LIVE_SCALE, mtp=False)
    heads = builders.build(fixture_dir / "split-mtp.gguf", o, live_scale=LIVE_SCALE, trunk=False)
    return trunk, heads


@pytest.fixture(scope="session")
def absent_gguf(fixture_dir: Path) -> Path:
    """Declares three MTP heads but ships none of their weights."""
    return builders.build(fixture_dir / "absent.gguf", builders.oracle(), mtp=False)


@pytest.fixture(scope="session")
def noheads_gguf(fixture_dir: Path) -> Path:
    return builders.build(fixture_dir / "noheads.gguf", builders.oracle(), declare_mtp=False)


@pytest.fixture
def screenshot_dir(tmp_path: Path) -> Path:
    """Where screenshot tests save: docs/screenshots with STRIDE_UPDATE_SCREENSHOTS=1 (to refresh the
    README's pictures), otherwise a temporary folder, so a plain test run leaves the tree clean."""
    if os.environ.get("STRIDE_UPDATE_SCREENSHOTS") == "1":
        return Path(__file__).resolve().parents[1] / "docs" / "screenshots"
    return tmp_path / "screenshots"


@pytest.fixture
def load() -> Iterator[Callable[..., Runtime]]:
    """Load a runtime with one llama thread; every runtime is closed after the test."""
    opened: list[Runtime] = []

    def _load(path: Path, mtp_path: Path | None = None, n_ctx: int = 2048, **kw: object) -> Runtime:
        runtime = Runtime.load(path, mtp_path, LoadOptions(n_ctx=n_ctx, n_threads=1, **kw))  # type: ignore[arg-type]
        opened.append(runtime)
        return runtime

    yield _load
    for runtime in opened:
        runtime.close()
