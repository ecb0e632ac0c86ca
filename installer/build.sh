#!/usr/bin/env bash
# Build Stride's installers with one command, from the repository root or anywhere:
#
#   installer/build.sh              the llama-cpp-python of the dev venv (.venv, pip's default
#                                   build, tuned to this machine's CPU): quick; what CI runs
#   installer/build.sh --portable   llama-cpp-python built for any x86-64 CPU, with runtime
#                                   dispatch (installer/build_portable_llama.sh, 20-40 min the
#                                   first time, then cached): what to ship
#
# Output in dist/ (dist/portable/ with --portable): Stride/ (the one-folder bundle, run
# Stride/stride), and on Linux stride_<version>_<arch>.deb and stride-<version>-linux-<machine>.tar.gz.
# On macOS also Stride.app and a .dmg, on Windows (Git Bash, with Inno Setup's iscc on PATH) a
# setup .exe: both UNTESTED, no such machine was available. Every stage prints how long it took.
set -euo pipefail
cd "$(dirname "$0")/.."

portable=false
case "${1:-}" in
    "") ;;
    --portable) portable=true ;;
    *) echo "usage: installer/build.sh [--portable]" >&2; exit 2 ;;
esac

timed() {
    local label=$1 start
    shift
    start=$(date +%s)
    "$@"
    echo "build: $label took $(( $(date +%s) - start )) s" >&2
}

if $portable; then
    wheel=$(installer/build_portable_llama.sh)
    VENV=.venv-portable DIST=dist/portable WORK=build/portable
else
    wheel=""
    VENV=${STRIDE_VENV:-.venv} DIST=dist WORK=build
fi
case "$(uname -s)" in
    Linux) os=linux ;;
    Darwin) os=macos ;;
    MINGW* | MSYS* | CYGWIN*) os=windows ;;
    *) echo "build: unsupported system $(uname -s)" >&2; exit 2 ;;
esac
PY="$VENV/bin/python"
if [ $os = windows ]; then
    PY="$VENV/Scripts/python.exe"
fi

setup() {
    # Like ./dev: keep the venv's own pip (an upgrade would recompile llama-cpp-python).
    local stamp="$VENV/.installed-installer"
    if [ ! -x "$PY" ]; then
        "${PYTHON3:-python3}" -m venv "$VENV"
    fi
    if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ "$(cat "$stamp")" != "$wheel" ]; then
        # With --portable the wheel is named beside the project, so pip takes it for the pin;
        # the forced reinstall replaces any other build of the same version already there.
        "$PY" -m pip install --disable-pip-version-check -q -e '.[installer]' ${wheel:+"$wheel"}
        if [ -n "$wheel" ]; then
            "$PY" -m pip install --disable-pip-version-check -q --no-deps --force-reinstall "$wheel"
        fi
        echo "$wheel" > "$stamp"
    fi
}

timed "venv setup ($VENV)" setup
timed "PyInstaller bundle" nice -n 10 "$PY" -m PyInstaller --noconfirm --log-level WARN \
    --distpath "$DIST" --workpath "$WORK/pyinstaller" installer/stride.spec
case $os in
    linux) timed ".deb and .tar.gz" env PYTHON="$PY" installer/make_packages.sh "$DIST" ;;
    macos) timed ".dmg" installer/make_dmg.sh "$DIST" ;;
    windows)
        version=$(sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)
        timed "Inno Setup installer" iscc "/DAppVersion=$version" "/O$DIST" installer/stride.iss
        ;;
esac
