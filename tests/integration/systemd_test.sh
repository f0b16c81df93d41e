#!/usr/bin/env bash
# The systemd unit verifies, the sample config/policy/trust load as the daemon loads them, and
# `cmake --install` lays out binaries, units, samples and docs.
# Usage: systemd_test.sh SOURCE_DIR BUILD_DIR DIGESTD_BIN
set -euo pipefail
SRC=$1 BUILD=$2 DIGESTD=$3
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT

# 1. systemd-analyze verify (ExecStart must exist: point it at the built binary).
sed "s|/usr/local/bin/digestd|$DIGESTD|" "$SRC/systemd/digestd.service" > "$T/digestd.service"
out=$(systemd-analyze verify "$T/digestd.service" 2>&1) || { echo "$out"; exit 1; }
if echo "$out" | grep -v "Failed to .*bus\|No such file or directory.*proc\|Cannot determine" | grep -qi "digestd.service"; then
  echo "systemd-analyze complained about the unit:"; echo "$out"; exit 1
fi
for sock in digestd.socket digestd-snapshotter.socket; do
  cp "$SRC/systemd/$sock" "$T/$sock"
  out=$(systemd-analyze verify "$T/$sock" "$T/digestd.service" 2>&1) || { echo "$out"; exit 1; }
  if echo "$out" | grep -v "Failed to .*bus\|No such file or directory.*proc\|Cannot determine" | grep -qi "$sock"; then
    echo "systemd-analyze complained about $sock:"; echo "$out"; exit 1
  fi
done
# Live restart needs the fd store, and the socket units' names must be the ones digestd takes.
grep -q '^FileDescriptorStoreMax=[1-9]' "$SRC/systemd/digestd.service" || { echo "no fd store in the unit"; exit 1; }
grep -q '^FileDescriptorName=control$' "$SRC/systemd/digestd.socket" || { echo "digestd.socket: name"; exit 1; }
grep -q '^FileDescriptorName=snapshotter$' "$SRC/systemd/digestd-snapshotter.socket" || { echo "snapshotter socket: name"; exit 1; }
# No private mount namespace (the mount must be the host's, and the next process must find it),
# no RestrictSUIDSGID (systemd fails openat2 with ENOSYS under it).
for opt in ProtectSystem ProtectHome PrivateTmp ReadWritePaths ReadOnlyPaths InaccessiblePaths \
           ProtectKernelModules ProtectControlGroups ProtectKernelLogs BindPaths TemporaryFileSystem \
           RestrictSUIDSGID; do
  if grep -q "^$opt=" "$SRC/systemd/digestd.service"; then echo "digestd.service must not set $opt="; exit 1; fi
done
echo "systemd-analyze verify: ok"
# Every reader of the mount costs digestd an fd: the unit must not leave it at systemd's 1024.
nofile=$(sed -n 's/^LimitNOFILE=//p' "$SRC/systemd/digestd.service")
[ -n "$nofile" ] && [ "$nofile" -ge 65536 ] || { echo "LimitNOFILE missing or under 65536"; exit 1; }

# 2. The samples, with their paths pointed at this temporary directory.
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$T/release.pem" 2>/dev/null
openssl pkey -in "$T/release.pem" -pubout -out "$T/release.pub"
sed "s|/etc/digestd/keys/release.pub|$T/release.pub|" "$SRC/systemd/policy.json.sample" > "$T/policy.json"
sed "s|/etc/digestd/keys/release.pub|$T/release.pub|" "$SRC/systemd/trust.json.sample" > "$T/trust.json"
sed "s|/etc/digestd/|$T/|g" "$SRC/systemd/digestd.toml.sample" > "$T/digestd.toml"
"$DIGESTD" --check --config "$T/digestd.toml"
# A bad key in the config is refused with the key named.
printf '[daemon]\nsockt = "/x"\n' > "$T/bad.toml"
if "$DIGESTD" --check --config "$T/bad.toml" 2> "$T/bad.err"; then echo "bad config accepted"; exit 1; fi
grep -q "sockt" "$T/bad.err" || { cat "$T/bad.err"; exit 1; }

# 3. cmake --install into a staging root.
DESTDIR="$T/root" cmake --install "$BUILD" --prefix /usr/local > /dev/null
for f in usr/local/bin/digestd usr/local/bin/digestctl usr/local/bin/digestd-supervise \
         usr/local/lib/systemd/system/digestd.service usr/local/lib/systemd/system/digestd.socket \
         usr/local/lib/systemd/system/digestd-snapshotter.socket \
         usr/local/lib/tmpfiles.d/digestd.conf usr/local/share/digestd/examples/digestd.toml.sample \
         usr/local/share/doc/digestd/operations.md usr/local/share/doc/digestd/api.md; do
  [ -e "$T/root/$f" ] || { echo "not installed: $f"; exit 1; }
done
echo "systemd_test: passed"
