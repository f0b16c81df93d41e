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

# The machine's Debian archive URI (the first one that is not the security archive).
uri=""
for f in /etc/apt/sources.list.d/*.sources; do
  [ -f "$f" ] || continue
  uri=$(awk '/^URIs:/ { for (i = 2; i <= NF; i++) if ($i !~ /security/) { print $i; exit } }' "$f")
  [ -n "$uri" ] && break
done
if [ -z "$uri" ] && [ -f /etc/apt/sources.list ]; then
  uri=$(awk '$1 == "deb" && $0 !~ /security/ { for (i = 2; i <= NF; i++) if ($i ~ /^(https?|file):/) { print $i; exit } }' /etc/apt/sources.list)
fi
[ -n "$uri" ] || { echo "fetch-cosign: no Debian archive URI in the apt sources" >&2; exit 1; }

APTDIR="$TOOLS/apt-trixie"
mkdir -p "$APTDIR/lists/partial" "$APTDIR/cache/archives/partial" "$APTDIR/etc/preferences.d" \
  "$APTDIR/etc/apt.conf.d" "$TOOLS/cosign"
cat > "$APTDIR/sources.list" <<SRC
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $uri trixie main
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
APT::Architecture "$(dpkg --print-architecture)";
CONF
export APT_CONFIG="$APTDIR/apt.conf"
apt-get update -qq -o APT::Sandbox::User=root >&2
(cd "$APTDIR/cache/archives" && apt-get download -qq -o APT::Sandbox::User=root cosign >&2)
deb=$(ls -t "$APTDIR"/cache/archives/cosign_*.deb | head -n 1)
dpkg-deb -x "$deb" "$TOOLS/cosign"
"$BIN" version >/dev/null 2>&1 || { echo "fetch-cosign: extracted cosign does not run" >&2; exit 1; }
echo "$BIN"
