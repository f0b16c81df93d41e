# Sourced by fetch-cosign.sh and fetch-libfuse.sh: a private apt set-up for Debian trixie that
# never touches the system's own. Its only source is the machine's Debian archive URI (read from
# its apt sources) with suite trixie; apt verifies everything against the archive's signed
# Release files as usual.
#   trixie_apt DIR TYPE   TYPE is "deb" or "deb-src"; writes DIR/apt.conf, exports APT_CONFIG,
#                         runs apt-get update.

trixie_apt() {
  local dir=$1 type=$2 uri="" f
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] || continue
    uri=$(awk '/^URIs:/ { for (i = 2; i <= NF; i++) if ($i !~ /security/) { print $i; exit } }' "$f")
    [ -n "$uri" ] && break
  done
  if [ -z "$uri" ] && [ -f /etc/apt/sources.list ]; then
    uri=$(awk '$1 == "deb" && $0 !~ /security/ { for (i = 2; i <= NF; i++) if ($i ~ /^(https?|file):/) { print $i; exit } }' /etc/apt/sources.list)
  fi
  [ -n "$uri" ] || { echo "trixie_apt: no Debian archive URI in the apt sources" >&2; return 1; }
  mkdir -p "$dir/lists/partial" "$dir/cache/archives/partial" "$dir/etc/preferences.d" \
    "$dir/etc/apt.conf.d"
  echo "$type [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $uri trixie main" \
    > "$dir/sources.list"
  cat > "$dir/apt.conf" <<CONF
Dir::Etc::SourceList "$dir/sources.list";
Dir::Etc::SourceParts "/nonexistent";
Dir::Etc::Preferences "$dir/etc/preferences";
Dir::Etc::PreferencesParts "$dir/etc/preferences.d";
Dir::Etc::Parts "$dir/etc/apt.conf.d";
Dir::State::Lists "$dir/lists";
Dir::State::status "/var/lib/dpkg/status";
Dir::Cache "$dir/cache";
Dir::Cache::archives "$dir/cache/archives";
APT::Architecture "$(dpkg --print-architecture)";
CONF
  export APT_CONFIG="$dir/apt.conf"
  apt-get update -qq -o APT::Sandbox::User=root >&2
}
