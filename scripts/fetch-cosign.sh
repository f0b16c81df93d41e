#!/usr/bin/env bash
# Fetches Debian trixie's `cosign` package (cosign 2.x; bookworm has none) into a project-local
# tools directory, without changing the system's apt set-up: a private APT_CONFIG whose only source
# is the machine's own Debian archive URI (read from its apt sources) with suite trixie. apt
# verifies the package against the archive's signed Release file as usual.
# Prints the path of the cosign binary. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
TOOLS=${DIGESTD_TOOLS_DIR:-$PWD/.tools}
BIN="$TOOLS/cosign/usr/bin/cosign"
if [ -x "$BIN" ] && "$BIN" version >/dev/null 2>&1; then
  echo "$BIN"
  exit 0
fi

. scripts/lib/trixie-apt.sh
APTDIR="$TOOLS/apt-trixie"
trixie_apt "$APTDIR" deb
(cd "$APTDIR/cache/archives" && apt-get download -qq -o APT::Sandbox::User=root cosign >&2)
deb=$(ls -t "$APTDIR"/cache/archives/cosign_*.deb | head -n 1)
dpkg-deb -x "$deb" "$TOOLS/cosign"
"$BIN" version >/dev/null 2>&1 || { echo "fetch-cosign: extracted cosign does not run" >&2; exit 1; }
echo "$BIN"
