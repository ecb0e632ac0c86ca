#!/usr/bin/env bash
# Run a frozen Stride on an emulated older CPU (Debian's qemu-user: apt install qemu-user), to
# check that the bundled llama.cpp only uses instructions that CPU has. The default, Nehalem
# (2008: SSE4.2, no AVX), is what the portable build's sse42 variant targets; a bundle built
# with pip's default -march=native llama.cpp dies there with an illegal instruction.
#
#   installer/run_on_old_cpu.sh [BUNDLE] [-- STRIDE ARGS...]
#       BUNDLE      the bundle folder (default dist/portable/Stride)
#       CPU         environment variable, a qemu -cpu model (default Nehalem)
#       STRIDE ARGS default: --self-test --max-tokens 32 (prints the JSON with cpu_variant);
#                   start them with "cli" to run stride-cli instead, e.g. -- cli generate ...
set -euo pipefail
cd "$(dirname "$0")/.."

bundle=$(realpath "${1:-dist/portable/Stride}")
shift || true
[ "${1:-}" = "--" ] && shift
[ $# -gt 0 ] || set -- --self-test --max-tokens 32
name=stride
if [ "$1" = cli ]; then
    name=stride-cli
    shift
fi

# PyInstaller's bootloader re-executes itself once to set LD_LIBRARY_PATH, and qemu-user runs an
# exec'd program natively: hand it the environment of that second start so it runs in place.
home=$(mktemp -d)
trap 'rm -rf "$home"' EXIT
env QT_QPA_PLATFORM=offscreen \
    XDG_DATA_HOME="$home/data" XDG_CONFIG_HOME="$home/config" XDG_STATE_HOME="$home/state" \
    XDG_CACHE_HOME="$home/cache" \
    _PYI_ARCHIVE_FILE="$bundle/stride" _PYI_PARENT_PROCESS_LEVEL=-1 LD_LIBRARY_PATH="$bundle/_internal" \
    timeout "${TIMEOUT:-1800}" qemu-x86_64 -cpu "${CPU:-Nehalem}" -0 "$bundle/$name" "$bundle/stride" "$@"
