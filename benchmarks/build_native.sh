#!/usr/bin/env bash
# Build llama.cpp's own tools (llama-speculative-simple, llama-bench, llama-completion, llama-quantize,
# llama-gguf-split)
# from the llama.cpp source vendored in the pinned llama-cpp-python sdist, so
# native numbers come from exactly the same llama.cpp/ggml as our Python driver.
#
# Everything goes into a cache folder outside the repo:
#   ${STRIDE_NATIVE_CACHE:-$HOME/.cache/stride/native}/
#     sdist/llama_cpp_python-<ver>.tar.gz     (downloaded if not found)
#     llama.cpp-<ver>/                        (vendor/llama.cpp from the sdist)
#     llama.cpp-<ver>/build/bin/llama-*       (the binaries)
#
# Output contract: logs go to stderr; stdout gets exactly these lines
#   LLAMA_SPECULATIVE_SIMPLE=/abs/path/llama-speculative-simple
#   LLAMA_BENCH=/abs/path/llama-bench
#   LLAMA_QUANTIZE=/abs/path/llama-quantize
#   LLAMA_COMPLETION=/abs/path/llama-completion
#   LLAMA_GGUF_SPLIT=/abs/path/llama-gguf-split
# so callers can `eval "$(benchmarks/build_native.sh)"` or parse KEY=VALUE.
#
# Idempotent: if the binaries exist and were built from the same sdist with the
# same configuration, it only prints the paths.
#
# Environment:
#   STRIDE_NATIVE_CACHE   cache root (default $HOME/.cache/stride/native)
#   STRIDE_SDIST          path to an existing llama_cpp_python-<ver>.tar.gz
#   STRIDE_NATIVE_JOBS    parallel build jobs (default 2)
#   STRIDE_NATIVE_NICE    nice level for configure/build (default 10)
#   STRIDE_NATIVE_REBUILD set to 1 to force reconfigure + rebuild
#
# ggml CPU flags vs. the pip-built wheel (llama-cpp-python 0.3.36 CMakeLists.txt
# + pyproject [tool.scikit-build]):
#   * the wheel is Release (scikit-build-core default), BUILD_SHARED_LIBS=On,
#     forces LLAMA_CURL=OFF and touches no GGML_* option on Linux, so ggml uses its
#     defaults: GGML_NATIVE=ON (-march=native; the default flips to OFF only when
#     cross-compiling or when SOURCE_DATE_EPOCH is set), GGML_OPENMP=ON,
#     GGML_LLAMAFILE=ON, GGML_CPU_REPACK=ON, GGML_BACKEND_DL=OFF, no BLAS/GPU.
#   * we pass the same values explicitly. Differences, none of which touch the
#     ggml/llama compute code: LLAMA_OPENSSL=OFF (no HTTPS in common's downloader;
#     LLAMA_CURL is deprecated and ignored in this llama.cpp), LLAMA_BUILD_SERVER=OFF
#     (so no web-UI download at configure time; this also drops llama-cli, which
#     lives under the server switch), tests/app off, ccache off.
#   * -march=native means both builds only match when built on the same CPU:
#     rebuild this cache (and the wheel) on the benchmark machine.
#
# One source patch, outside the libraries: llama-speculative-simple prints its
# summary (decoded/n_drafted/n_accept/accept) through common_log's async worker
# thread, whose singleton is intentionally leaked and never flushed at exit
# (common/log.h: "Call common_log_flush() before exit if you want to ensure all
# logs are flushed"; upstream issue ggml-org/llama.cpp#22142). Unpatched, about
# 1 run in 10 on a loaded machine loses the tail of its output, summary included.
# We add that one common_log_flush() call before main()'s final `return 0;`.
# libllama/libggml/libllama-common are built from the sdist unmodified.
set -euo pipefail

LCP_VERSION="0.3.36"
# sha256 of the pinned sdist (llama_cpp_python-0.3.36.tar.gz from PyPI).
LCP_SDIST_SHA256="832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e"
# llama.cpp commit vendored in that sdist, per its CHANGELOG ("update llama.cpp to
# ggml-org/llama.cpp@0c1e57098"). The sdist ships no git metadata, so without this
# the binaries would report "commit unknown" (llama-bench JSON: build_commit).
LLAMA_CPP_COMMIT="0c1e57098"

CACHE="${STRIDE_NATIVE_CACHE:-$HOME/.cache/stride/native}"
JOBS="${STRIDE_NATIVE_JOBS:-2}"
NICE="${STRIDE_NATIVE_NICE:-10}"
SDIST_NAME="llama_cpp_python-${LCP_VERSION}.tar.gz"
SRC="${CACHE}/llama.cpp-${LCP_VERSION}"
BUILD="${SRC}/build"
TARGETS=(llama-speculative-simple llama-bench llama-quantize llama-completion llama-gguf-split)

log() { printf '[build_native] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

CMAKE_ARGS=(
    -DCMAKE_BUILD_TYPE=Release
    -DBUILD_SHARED_LIBS=ON
    -DGGML_NATIVE=ON
    -DGGML_OPENMP=ON
    -DGGML_LLAMAFILE=ON
    -DGGML_CPU_REPACK=ON
    -DGGML_BACKEND_DL=OFF
    -DGGML_BLAS=OFF
    -DGGML_CUDA=OFF
    -DGGML_VULKAN=OFF
    -DGGML_METAL=OFF
    -DGGML_RPC=OFF
    -DGGML_CCACHE=OFF
    -DLLAMA_CURL=OFF
    -DLLAMA_OPENSSL=OFF
    -DLLAMA_BUILD_COMMON=ON
    -DLLAMA_BUILD_EXAMPLES=ON
    -DLLAMA_BUILD_TOOLS=ON
    -DLLAMA_BUILD_SERVER=OFF
    -DLLAMA_USE_PREBUILT_UI=OFF
    -DLLAMA_BUILD_TESTS=OFF
    -DLLAMA_BUILD_APP=OFF
    -DLLAMA_BUILD_COMMIT="${LLAMA_CPP_COMMIT}"
)

print_paths() {
    printf 'LLAMA_SPECULATIVE_SIMPLE=%s\n' "${BUILD}/bin/llama-speculative-simple"
    printf 'LLAMA_BENCH=%s\n' "${BUILD}/bin/llama-bench"
    printf 'LLAMA_QUANTIZE=%s\n' "${BUILD}/bin/llama-quantize"
    printf 'LLAMA_COMPLETION=%s\n' "${BUILD}/bin/llama-completion"
    printf 'LLAMA_GGUF_SPLIT=%s\n' "${BUILD}/bin/llama-gguf-split"
}

sha256_of() { sha256sum "$1" | cut -d' ' -f1; }

# Stamp = what the binaries were built from; a mismatch forces a reconfigure and
# an (incremental) rebuild.
STAMP_FILE="${BUILD}/.stride-build-stamp"
PATCH_MARK="stride: flush async log before exit"
STAMP="sdist=${LCP_SDIST_SHA256} patch=log-flush-v1 targets=${TARGETS[*]} args=${CMAKE_ARGS[*]}"

binaries_ok() {
    local t
    for t in "${TARGETS[@]}"; do
        [[ -x "${BUILD}/bin/${t}" ]] || return 1
    done
    [[ -f "${STAMP_FILE}" ]] && [[ "$(cat "${STAMP_FILE}")" == "${STAMP}" ]]
}

if [[ "${STRIDE_NATIVE_REBUILD:-0}" != "1" ]] && binaries_ok; then
    print_paths
    exit 0
fi

command -v cmake >/dev/null || die "cmake not found"
command -v sha256sum >/dev/null || die "sha256sum not found"

mkdir -p "${CACHE}"

# Serialise concurrent invocations sharing one cache; re-check once we hold it.
if command -v flock >/dev/null; then
    exec 9>"${CACHE}/.build.lock"
    flock 9
    if [[ "${STRIDE_NATIVE_REBUILD:-0}" != "1" ]] && binaries_ok; then
        print_paths
        exit 0
    fi
fi

# ---- 1. locate or download the sdist ---------------------------------------
find_sdist() {
    local c
    for c in "${STRIDE_SDIST:-}" "${CACHE}/sdist/${SDIST_NAME}" "${CACHE}/${SDIST_NAME}"; do
        if [[ -n "${c}" && -f "${c}" ]]; then
            printf '%s\n' "${c}"
            return 0
        fi
    done
    return 1
}

if ! SDIST="$(find_sdist)"; then
    log "sdist not found; downloading llama-cpp-python==${LCP_VERSION} from PyPI"
    mkdir -p "${CACHE}/sdist"
    PY="${PYTHON:-python3}"
    "${PY}" -m pip download --no-deps --no-binary :all: \
        "llama-cpp-python==${LCP_VERSION}" -d "${CACHE}/sdist" >&2
    SDIST="$(find_sdist)" || die "pip download did not produce ${SDIST_NAME}"
fi

got_sha="$(sha256_of "${SDIST}")"
[[ "${got_sha}" == "${LCP_SDIST_SHA256}" ]] \
    || die "${SDIST}: sha256 ${got_sha} != pinned ${LCP_SDIST_SHA256}"
log "sdist: ${SDIST}"

# ---- 2. extract vendor/llama.cpp -------------------------------------------
SRC_STAMP="${SRC}/.stride-sdist-sha256"
if [[ ! -f "${SRC_STAMP}" || "$(cat "${SRC_STAMP}")" != "${LCP_SDIST_SHA256}" \
      || ! -f "${SRC}/CMakeLists.txt" ]]; then
    log "extracting vendor/llama.cpp -> ${SRC}"
    tmp="$(mktemp -d "${CACHE}/.extract.XXXXXX")"
    trap 'rm -rf "${tmp}"' EXIT
    tar -xzf "${SDIST}" -C "${tmp}" --strip-components=3 \
        "llama_cpp_python-${LCP_VERSION}/vendor/llama.cpp"
    [[ -f "${tmp}/CMakeLists.txt" ]] || die "vendor/llama.cpp missing from ${SDIST}"
    printf '%s\n' "${LCP_SDIST_SHA256}" > "${tmp}/.stride-sdist-sha256"
    rm -rf "${SRC}"
    mv "${tmp}" "${SRC}"
    trap - EXIT
fi

# ---- 3. patch: flush the async logger before llama-speculative-simple exits --
SPEC_MAIN="${SRC}/examples/speculative-simple/speculative-simple.cpp"
if ! grep -qF "${PATCH_MARK}" "${SPEC_MAIN}"; then
    n_ret="$(grep -c '^    return 0;$' "${SPEC_MAIN}" || true)"
    [[ "${n_ret}" == "1" ]] \
        || die "log-flush patch: expected 1 '    return 0;' in ${SPEC_MAIN}, found ${n_ret}"
    sed -i "s|^    return 0;\$|    common_log_flush(common_log_main()); // ${PATCH_MARK}\n\n    return 0;|" \
        "${SPEC_MAIN}"
    grep -qF "${PATCH_MARK}" "${SPEC_MAIN}" || die "log-flush patch did not apply"
    log "patched ${SPEC_MAIN#"${SRC}/"} (common_log_flush before exit)"
fi

# ---- 4. configure + build ---------------------------------------------------
GENERATOR=()
GEN_NAME="Unix Makefiles"
if command -v ninja >/dev/null; then
    GENERATOR=(-G Ninja)
    GEN_NAME="Ninja"
fi
if [[ -f "${BUILD}/CMakeCache.txt" ]]; then
    old_gen="$(sed -n 's/^CMAKE_GENERATOR:INTERNAL=//p' "${BUILD}/CMakeCache.txt")"
    if [[ "${STRIDE_NATIVE_REBUILD:-0}" == "1" || "${old_gen}" != "${GEN_NAME}" ]]; then
        log "removing build tree ${BUILD}"
        rm -rf "${BUILD}"
    elif [[ ! -f "${STAMP_FILE}" || "$(cat "${STAMP_FILE}")" != "${STAMP}" ]]; then
        # Configuration changed: drop the CMake cache so every option is taken
        # fresh from CMAKE_ARGS (no stale values), but keep the object files;
        # the build tool recompiles only what the new flags affect.
        log "configuration changed; resetting CMake cache"
        rm -rf "${BUILD}/CMakeCache.txt" "${BUILD}/CMakeFiles"
    fi
fi

t0="$(date +%s)"
log "configuring (${GEN_NAME})"
# SOURCE_DATE_EPOCH flips ggml's GGML_NATIVE default to OFF; we pass
# GGML_NATIVE=ON explicitly anyway, and unset it so nothing else depends on it.
env -u SOURCE_DATE_EPOCH nice -n "${NICE}" \
    cmake -S "${SRC}" -B "${BUILD}" ${GENERATOR[@]+"${GENERATOR[@]}"} "${CMAKE_ARGS[@]}" >&2

log "building ${TARGETS[*]} with -j${JOBS}"
env -u SOURCE_DATE_EPOCH nice -n "${NICE}" \
    cmake --build "${BUILD}" --config Release -j "${JOBS}" --target "${TARGETS[@]}" >&2
t1="$(date +%s)"

for t in "${TARGETS[@]}"; do
    [[ -x "${BUILD}/bin/${t}" ]] || die "build finished but ${BUILD}/bin/${t} is missing"
done
printf '%s\n' "${STAMP}" > "${STAMP_FILE}"
printf '%s\n' "$((t1 - t0))" > "${BUILD}/.stride-last-build-seconds"
log "built in $((t1 - t0)) s (configure + build, -j${JOBS})"

print_paths
