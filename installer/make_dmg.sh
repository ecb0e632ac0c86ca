#!/usr/bin/env bash
# macOS: wrap DIST/Stride.app (made by installer/stride.spec's BUNDLE step) in a drag-to-install
# disk image, DIST/stride-<version>-macos-<arch>.dmg. UNTESTED: no Mac was available.
# installer/build.sh runs this on macOS; by hand: installer/make_dmg.sh [DIST]   (default dist)
#
# The app is ad-hoc signed (PyInstaller does that, and Apple Silicon needs it); users see
# Gatekeeper's "unidentified developer" warning unless it is signed with a Developer ID and
# notarized (codesign --deep -s "Developer ID Application: ..." then xcrun notarytool submit).
set -euo pipefail
cd "$(dirname "$0")/.."

DIST=${1:-dist}
APP="$DIST/Stride.app"
VERSION=$(sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)
[ -d "$APP" ] || { echo "make_dmg: no $APP (run installer/build.sh on macOS)" >&2; exit 1; }

stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
cp -R "$APP" "$stage/"
ln -s /Applications "$stage/Applications"
dmg="$DIST/stride-$VERSION-macos-$(uname -m).dmg"
hdiutil create -volname "Stride $VERSION" -srcfolder "$stage" -fs HFS+ -format UDZO -ov "$dmg" >/dev/null
echo "make_dmg: $dmg is $(du -m "$dmg" | cut -f1) MiB" >&2
