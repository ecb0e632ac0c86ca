"""Shared fixtures: user folders in a temporary place, synthetic GGUFs built once per session."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import platformdirs
import pytest

# The user's cache folder, before the sandbox hides it: the llama-cpp-python sdist some tests read is there.
os.environ.setdefault("STRIDE_USER_CACHE", platformdirs.user_cache_dir("stride", appauthor=False))
# Keep every test away from the real user's data, settings and logs (platformdirs reads XDG_*).
_SANDBOX = Path(os.environ.setdefault("STRIDE_TEST_HOME", f"/tmp/stride-test-home-{os.getpid()}"))
for _var in ("XDG_DATA_HOME", "XDG_CONFIG_HOME", "XDG_STATE_HOME", "XDG_CACHE_HOME"):
    os.environ[_var] = str(_SANDBOX / _var.lower())
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from engine.api import LoadOptions  # noqa: E402
from engine.generate import Generator  # noqa: E402
from engine.runtime import Runtime  # noqa: E402
from tests.fixtures import builders, native  # noqa: E402

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


# --- Mixture of experts, shaped like Step 3.5 Flash (builders.moe_shape), made as real files are ---

T = TypeVar("T")


def _native(make: Callable[[], T]) -> T:
    """Run a llama.cpp tool step; a missing or failing tool fails the test with what to do, never skips it."""
    try:
        return make()
    except native.NativeToolError as exc:
        pytest.fail(str(exc), pytrace=False)


def _head_tensor(name: str) -> bool:
    return builders.is_head_tensor(name, builders.moe_shape(builders.moe_oracle()).n_layer)


@pytest.fixture(scope="session")
def moe_gguf(fixture_dir: Path) -> Path:
    """1 dense + 2 MoE trunk layers (32 experts, top-8, a shared expert) and three dense heads, in F16."""
    return builders.build_moe(fixture_dir / "moe-f16.gguf", builders.moe_oracle())


_DECODE_A_BATCH = """
import sys
from pathlib import Path
from engine import llama
from engine.gguf import inspect_model
model = llama.Model(inspect_model(Path(sys.argv[1])).parts, load_mtp=True)
llama.Context(model, llama.ContextParams(n_ctx=256, n_threads=1), mtp=False).decode(list(range(8)), 0, outputs="all")
"""


def _decodes_in_a_child(path: Path) -> Path:
    """Decode a batch of the file in a child process first: should llama.cpp crash on what llama-quantize
    made, the tests using it fail with the signal instead of the crash ending the whole session.

    Seen on x86 VMs whose CPU reports AMX: ggml puts Q8_0/K-quant weights in its AMX buffer type and its
    tile kernels fault (SIGSEGV at ldtilecfg, SIGILL at tilezero) on any batch of two or more tokens, in
    the pip-built llama-cpp-python and the native tools alike; loading with the model parameter
    use_extra_bufts = False (llama-bench --repack 0) avoids them."""
    repo = str(Path(__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [repo, os.environ.get("PYTHONPATH")]))}
    run = subprocess.run([sys.executable, "-c", _DECODE_A_BATCH, str(path)], capture_output=True, text=True, env=env)
    if run.returncode != 0:
        how = f"signal {-run.returncode}" if run.returncode < 0 else f"exit {run.returncode}"
        hint = "on a CPU with AMX, ggml's AMX matmul for quantized weights is the known cause (see tests/conftest.py)"
        pytest.fail(f"llama.cpp died ({how}) decoding a batch of {path.name}; {hint}\n{run.stderr[-1500:]}", False)
    return path


@pytest.fixture(scope="session")
def moe_q8_gguf(moe_gguf: Path) -> Path:
    return _decodes_in_a_child(_native(lambda: native.quantize(moe_gguf, moe_gguf.with_name("moe-q8_0.gguf"), "Q8_0")))


@pytest.fixture(scope="session")
def moe_q4km_gguf(moe_gguf: Path) -> Path:
    """Q4_K_M (Q4_K, with Q6_K for attn_v and some down projections) and the heads in Q8_0, as published
    Step Flash quants keep them (llama-quantize --tensor-type)."""
    s = builders.moe_shape(builders.moe_oracle())
    heads = "|".join(str(layer) for layer in range(s.n_layer, s.n_layer_all))
    dst = moe_gguf.with_name("moe-q4_k_m.gguf")
    return _decodes_in_a_child(
        _native(lambda: native.quantize(moe_gguf, dst, "Q4_K_M", "--tensor-type", rf"blk\.({heads})\.=q8_0"))
    )


@pytest.fixture(scope="session")
def moe_split_set(moe_q8_gguf: Path) -> list[Path]:
    """The Q8_0 model as a 3-part set, as published Step Flash quants ship: the heads all in the last part.
    (Not the Q4_K_M: its Q8_0 heads are a third of it, more than a part can hold with the trunk in two.)"""

    def make() -> list[Path]:
        mb = native.split_size_mb(moe_q8_gguf, 3, _head_tensor)
        return native.split(moe_q8_gguf, moe_q8_gguf.parent / "set" / "moe-q8_0", "--split-max-size", f"{mb}M")

    return _native(make)


@pytest.fixture(scope="session")
def moe_split_set_empty_first(moe_q8_gguf: Path) -> list[Path]:
    """A 3-part set whose first part holds the metadata only (gguf-split --no-tensor-first-split)."""

    def make() -> list[Path]:
        mb = native.split_size_mb(moe_q8_gguf, 3, _head_tensor, no_tensor_first_split=True)
        prefix = moe_q8_gguf.parent / "set-empty-first" / "moe-q8_0"
        return native.split(moe_q8_gguf, prefix, "--split-max-size", f"{mb}M", "--no-tensor-first-split")

    return _native(make)


@pytest.fixture(scope="session")
def moe_split_pair(fixture_dir: Path) -> tuple[list[Path], list[Path]]:
    """The MoE model as StepFun ships Step-3.7-Flash, each file a multi-part set: the trunk in two
    parts and the MTP-only file in three."""
    o = builders.moe_oracle()
    trunk = builders.build_moe(fixture_dir / "moe-trunk.gguf", o, mtp=False)
    heads = builders.build_moe(fixture_dir / "moe-mtp.gguf", o, trunk=False)
    sets = fixture_dir / "pair"
    return _native(
        lambda: (
            native.split(trunk, sets / "moe-trunk", "--split-max-tensors", "20"),
            native.split(heads, sets / "moe-mtp", "--split-max-tensors", "15"),
        )
    )


@pytest.fixture
def screenshot_dir(tmp_path: Path) -> Path:
    """Where screenshot tests save: docs/screenshots with STRIDE_UPDATE_SCREENSHOTS=1 (to refresh the
    README's pictures), otherwise a temporary folder, so a plain test run leaves the tree clean."""
    if os.environ.get("STRIDE_UPDATE_SCREENSHOTS") == "1":
        return Path(__file__).resolve().parents[1] / "docs" / "screenshots"
    return tmp_path / "screenshots"


@pytest.fixture
def rollback_off() -> Iterator[None]:
    """Rejected drafts stay in the KV caches: the bug the lossless tests exist to catch."""
    Generator.rollback_enabled = False
    yield
    Generator.rollback_enabled = True


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
