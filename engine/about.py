"""What `--version` says, the same for `stride-cli` and `stride`: Stride's version, the llama.cpp it runs on
(llama-cpp-python's version and the llama.cpp commit that release vendors) and the CPU build in use."""

from __future__ import annotations

from engine import llama
from engine.automemory import stride_version

# The llama.cpp commit vendored in llama-cpp-python 0.3.36, per its CHANGELOG ("update llama.cpp to
# ggml-org/llama.cpp@0c1e57098"); benchmarks/build_native.sh builds the native tools from the same one.
LLAMA_CPP_COMMIT = "0c1e57098"


def version_text(program: str) -> str:
    """Three lines, e.g. `stride-cli 0.1.0` / `llama-cpp-python 0.3.36 (llama.cpp 0c1e57098)` /
    `CPU backend: haswell` (the self-test's cpu_variant: "native" for pip's default build)."""
    try:
        variant = llama.cpu_variant() or "unknown"
    except llama.LlamaError as exc:  # --version must answer even when the backend will not start
        variant = f"unavailable ({exc})"
    return "\n".join(
        [
            f"{program} {stride_version()}",
            f"llama-cpp-python {llama.LLAMA_CPP_PYTHON_VERSION} (llama.cpp {LLAMA_CPP_COMMIT})",
            f"CPU backend: {variant}",
        ]
    )
