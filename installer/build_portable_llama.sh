#!/usr/bin/env bash
# Build llama-cpp-python (the version pyproject pins) without -march=native and with
# llama.cpp's runtime CPU dispatch: every x86 CPU backend variant (x64, sse42, ..., haswell,
# skylakex, zen4) is built as its own libggml-cpu-<variant>.so and the best one for the
# running CPU is chosen at start-up. The result is a wheel in a cache of its own, keyed by
# the version and the flags, because pip's wheel cache ignores CMAKE_ARGS.
#
#   installer/build_portable_llama.sh            build (or reuse) the wheel, print its path
#   STRIDE_LLAMA_CMAKE_ARGS="..." installer/...  other flags, e.g. a GPU variant (see README)
#
# The wheel is repacked so the backend modules sit in llama_cpp/lib next to libggml.so
# (CMake installs them into the wheel's top-level bin/), where engine/llama/backend.py loads them.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
VERSION=$(sed -n 's/.*"llama-cpp-python==\([^"]*\)".*/\1/p' pyproject.toml)
CMAKE_ARGS=${STRIDE_LLAMA_CMAKE_ARGS:-"-DGGML_NATIVE=OFF -DGGML_BACKEND_DL=ON -DGGML_CPU_ALL_VARIANTS=ON"}
KEY=$("$PY" -c 'import hashlib, sys; print(hashlib.sha256(f"{sys.argv[1]}\n{sys.argv[2]}\n".encode()).hexdigest()[:12])' \
    "$VERSION" "$CMAKE_ARGS")
CACHE=${STRIDE_PORTABLE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/stride/portable-$KEY}
WHEEL_DIR="$CACHE/wheel"

existing=$(ls "$WHEEL_DIR"/llama_cpp_python-"$VERSION"-*.whl 2>/dev/null || true)
if [ -n "$existing" ]; then
    echo "$existing"
    exit 0
fi

mkdir -p "$CACHE"
printf 'llama-cpp-python %s\nCMAKE_ARGS=%s\n' "$VERSION" "$CMAKE_ARGS" > "$CACHE/flags.txt"
# The raw wheel is kept, so a failed repack never costs another compile.
if ! ls "$CACHE/raw"/llama_cpp_python-"$VERSION"-*.whl >/dev/null 2>&1; then
    echo "build_portable_llama: building llama-cpp-python $VERSION with $CMAKE_ARGS (20-40 min on 2 cores)" >&2
    start=$(date +%s)
    # --no-cache-dir: neither reuse nor pollute pip's wheel cache, whose key ignores CMAKE_ARGS.
    CMAKE_ARGS="$CMAKE_ARGS" CMAKE_BUILD_PARALLEL_LEVEL=${CMAKE_BUILD_PARALLEL_LEVEL:-$(getconf _NPROCESSORS_ONLN)} \
        nice -n 10 "$PY" -m pip wheel --disable-pip-version-check --no-cache-dir --no-deps \
        --no-binary llama-cpp-python -w "$CACHE/raw.tmp" "llama-cpp-python==$VERSION" >&2
    mv "$CACHE/raw.tmp" "$CACHE/raw"
    echo "$(( $(date +%s) - start ))" > "$CACHE/build_seconds.txt"
    echo "build_portable_llama: cold build took $(cat "$CACHE/build_seconds.txt") s" >&2
fi

"$PY" installer/repack_llama_wheel.py "$CACHE/raw"/llama_cpp_python-"$VERSION"-*.whl "$WHEEL_DIR" >&2
ls "$WHEEL_DIR"/llama_cpp_python-"$VERSION"-*.whl
