#!/usr/bin/env bash
# Package the one-folder bundle DIST/Stride/ (from installer/stride.spec) for Linux:
#   DIST/stride_<version>_<arch>.deb   /opt/stride, /usr/bin/stride and /usr/bin/stride-cli
#                                      launchers, a menu entry and the icon in hicolor
#   DIST/stride-<version>-linux-<machine>.tar.gz   portable: unpack anywhere, run Stride/stride
# usage: installer/make_packages.sh [DIST]   (DIST defaults to dist; installer/build.sh calls this)
set -euo pipefail
cd "$(dirname "$0")/.."

DIST=${1:-dist}
BUNDLE="$DIST/Stride"
PY=${PYTHON:-.venv/bin/python}
VERSION=$(sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)
ARCH=$(dpkg --print-architecture)
[ -x "$BUNDLE/stride" ] || { echo "make_packages: no bundle in $BUNDLE (run installer/build.sh)" >&2; exit 1; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
pkg="$work/root"

mkdir -p "$pkg/opt" "$pkg/usr/bin" "$pkg/DEBIAN"
cp -a "$BUNDLE" "$pkg/opt/stride"
for name in stride stride-cli; do
    # A script, not a link: stride-cli must keep its name (the executable picks the CLI by it).
    # It finds /opt/stride from its own place, so a copy unpacked elsewhere (dpkg -x) runs too.
    cat > "$pkg/usr/bin/$name" <<LAUNCHER
#!/bin/sh
exec "\$(dirname "\$(readlink -f "\$0")")/../../opt/stride/$name" "\$@"
LAUNCHER
done
install -D -m 644 resources/stride.desktop "$pkg/usr/share/applications/stride.desktop"
install -D -m 644 resources/icons/stride.svg "$pkg/usr/share/icons/hicolor/scalable/apps/stride.svg"
"$PY" installer/make_icons.py "$work/icons"
for png in "$work"/icons/stride-*.png; do
    size=$(basename "$png" .png)
    size=${size#stride-}
    install -D -m 644 "$png" "$pkg/usr/share/icons/hicolor/${size}x${size}/apps/stride.png"
done
chmod -R u=rwX,go=rX "$pkg"
chmod 755 "$pkg/usr/bin/"*

# The newest glibc symbol version any bundled binary uses is the oldest glibc it runs on.
glibc=$(find "$pkg/opt/stride" -type f \( -name '*.so*' -o -name stride \) -exec objdump -T {} + 2>/dev/null \
    | grep -o 'GLIBC_[0-9][0-9.]*' | sed 's/GLIBC_//' | sort -V | tail -1)
# What the bundle needs from the system and PyInstaller leaves out (zlib, OpenGL/EGL, DRM,
# libxcb itself, two xcb utility libraries it did not find here); Wayland is optional: Qt falls
# back to X11 without it.
cat > "$pkg/DEBIAN/control" <<CONTROL
Package: stride
Version: $VERSION
Architecture: $ARCH
Maintainer: Stride developers <stride@localhost>
Installed-Size: $(du -sk "$pkg" | cut -f1)
Depends: libc6 (>= $glibc), zlib1g, libgl1, libegl1, libdrm2, libxcb1, libxcb-icccm4, libxcb-keysyms1
Recommends: libwayland-client0, libwayland-cursor0, libwayland-egl1
Section: utils
Priority: optional
Homepage: https://github.com/stride-chat/stride
Description: Offline desktop chat for Step 3.5/3.7 Flash with multi-token prediction
 Stride runs GGUF language models locally through llama.cpp, faster with the model's own
 multi-token prediction (MTP) heads. Everything it needs, Python included, is in /opt/stride.
CONTROL

deb="$DIST/stride_${VERSION}_${ARCH}.deb"
tarball="$DIST/stride-$VERSION-linux-$(uname -m).tar.gz"
dpkg-deb --build --root-owner-group -Zxz "$pkg" "$deb" >/dev/null
tar -C "$DIST" --owner=0 --group=0 -czf "$tarball" Stride
echo "make_packages: $deb is $(du -m "$deb" | cut -f1) MiB, $tarball is $(du -m "$tarball" | cut -f1) MiB" >&2
