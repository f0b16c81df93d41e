#!/usr/bin/env bash
# Builds libfuse >= 3.16 (FUSE passthrough) from Debian trixie's own fuse3 source package as a
# static library in a project-local prefix, without changing the system's apt set-up: a private
# APT_CONFIG whose only source is the machine's Debian archive URI (read from its apt sources)
# with `deb-src` for suite trixie. apt verifies the .dsc against the archive's signed Sources
# index, and dpkg-source verifies every tarball against the .dsc's checksums. The system's
# libfuse 3.14 (headers and .so) stays installed and untouched.
# Prints the prefix (pkg-config: PREFIX/lib/<multiarch>/pkgconfig). Idempotent. Needs meson and
# ninja-build (bookworm's). Not wired into the build yet: issue #8 (passthrough) will.
set -euo pipefail
cd "$(dirname "$0")/.."
TOOLS=${DIGESTD_TOOLS_DIR:-$PWD/.tools}
VERSION=${DIGESTD_LIBFUSE_VERSION:-3.17.2-3}   # pinned: the trixie fuse3 source package
PREFIX="$TOOLS/libfuse-$VERSION"
if [ -f "$PREFIX/.built" ]; then
  echo "$PREFIX"
  exit 0
fi

uri=""
for f in /etc/apt/sources.list.d/*.sources; do
  [ -f "$f" ] || continue
  uri=$(awk '/^URIs:/ { for (i = 2; i <= NF; i++) if ($i !~ /security/) { print $i; exit } }' "$f")
  [ -n "$uri" ] && break
done
if [ -z "$uri" ] && [ -f /etc/apt/sources.list ]; then
  uri=$(awk '$1 == "deb" && $0 !~ /security/ { for (i = 2; i <= NF; i++) if ($i ~ /^(https?|file):/) { print $i; exit } }' /etc/apt/sources.list)
fi
[ -n "$uri" ] || { echo "fetch-libfuse: no Debian archive URI in the apt sources" >&2; exit 1; }

APTDIR="$TOOLS/apt-trixie-src"
mkdir -p "$APTDIR/lists/partial" "$APTDIR/cache/archives/partial" "$APTDIR/etc/preferences.d" \
  "$APTDIR/etc/apt.conf.d"
cat > "$APTDIR/sources.list" <<SRC
deb-src [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $uri trixie main
SRC
cat > "$APTDIR/apt.conf" <<CONF
Dir::Etc::SourceList "$APTDIR/sources.list";
Dir::Etc::SourceParts "/nonexistent";
Dir::Etc::Preferences "$APTDIR/etc/preferences";
Dir::Etc::PreferencesParts "$APTDIR/etc/preferences.d";
Dir::Etc::Parts "$APTDIR/etc/apt.conf.d";
Dir::State::Lists "$APTDIR/lists";
Dir::State::status "/var/lib/dpkg/status";
Dir::Cache "$APTDIR/cache";
Dir::Cache::archives "$APTDIR/cache/archives";
CONF
export APT_CONFIG="$APTDIR/apt.conf"
apt-get update -qq -o APT::Sandbox::User=root >&2
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
