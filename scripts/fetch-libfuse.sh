#!/usr/bin/env bash
# Builds libfuse >= 3.16 (FUSE passthrough) from Debian trixie's own fuse3 source package as a
# static library in a project-local prefix, without changing the system's apt set-up: a private
# APT_CONFIG whose only source is the machine's Debian archive URI (read from its apt sources)
# with `deb-src` for suite trixie. apt verifies the .dsc against the archive's signed Sources
# index, and dpkg-source verifies every tarball against the .dsc's checksums. The system's
# libfuse 3.14 (headers and .so) stays installed and untouched.
# Prints the prefix (pkg-config: PREFIX/lib/<multiarch>/pkgconfig). Idempotent. Needs meson and
# ninja-build (bookworm's). Run by scripts/install-deps.sh; fusefs/CMakeLists.txt builds against
# this prefix (FUSE passthrough needs libfuse >= 3.16).
set -euo pipefail
cd "$(dirname "$0")/.."
TOOLS=${DIGESTD_TOOLS_DIR:-$PWD/.tools}
VERSION=${DIGESTD_LIBFUSE_VERSION:-3.17.2-3}   # pinned: the trixie fuse3 source package
PREFIX="$TOOLS/libfuse-$VERSION"
if [ -f "$PREFIX/.built" ]; then
  echo "$PREFIX"
  exit 0
fi

. scripts/lib/trixie-apt.sh
APTDIR="$TOOLS/apt-trixie-src"
trixie_apt "$APTDIR" deb-src
SRC_DIR="$APTDIR/src"
rm -rf "$SRC_DIR" && mkdir -p "$SRC_DIR"
(cd "$SRC_DIR" && apt-get source -qq --download-only -o APT::Sandbox::User=root "fuse3=$VERSION" >&2)
dsc=$(ls "$SRC_DIR"/fuse3_*.dsc | head -n 1)
(cd "$SRC_DIR" && dpkg-source -x "$(basename "$dsc")" fuse3-src >&2)
BUILD="$SRC_DIR/build"
meson setup "$BUILD" "$SRC_DIR/fuse3-src" --prefix="$PREFIX" --default-library=static \
  -Dutils=false -Dtests=false -Dexamples=false -Duseroot=false >&2
ninja -C "$BUILD" >&2
ninja -C "$BUILD" install >&2
touch "$PREFIX/.built"
echo "$PREFIX"
