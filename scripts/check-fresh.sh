#!/usr/bin/env bash
# Proves that the README's two commands work on a newcomer's machine: builds a minimal Debian
# bookworm root with debootstrap (minbase plus git and ca-certificates, nothing else), clones the
# committed project into it with ../shared beside it (read-only, as in CI), and runs
# `scripts/test.sh` and then `scripts/demo.sh` there as root, with /proc, /sys and /dev bound in
# and the root bind-mounted onto itself so that / is a mount point (as on a real machine).
#
# Not part of scripts/test.sh or CI: with the build it takes about an hour on 2 cores.
#
# Usage: scripts/check-fresh.sh [ROOT]      (default ROOT: /var/tmp/digestd-fresh)
#   DIGESTD_FRESH_KEEP=1   reuse ROOT's base system if it has one (faster, but no longer fresh)
#   DIGESTD_FRESH_CMDS     the commands to run, default "scripts/test.sh scripts/demo.sh"
# Prints one line per command, "check-fresh: <command> exit <code>", and exits non-zero if any
# failed. Only what is committed is tested (the clone is of HEAD).
set -uo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" -eq 0 ] || { echo "check-fresh: run as root (debootstrap, chroot, mounts)" >&2; exit 2; }
ROOT=${1:-/var/tmp/digestd-fresh}
CMDS=${DIGESTD_FRESH_CMDS:-"scripts/test.sh scripts/demo.sh"}
SRC=$(git rev-parse --show-toplevel)
SHARED=$(cd "$SRC/../shared" 2>/dev/null && pwd) || { echo "check-fresh: ../shared not found" >&2; exit 2; }

unmount_all() {
  # Deepest first; a test that failed may have left mounts below the root.
  grep -o " $ROOT[^ ]* " /proc/self/mountinfo 2>/dev/null | sort -r | while read -r m; do
    umount -l "$m" 2>/dev/null
  done
}
trap unmount_all EXIT
unmount_all

if [ -z "${DIGESTD_FRESH_KEEP:-}" ] && [ -e "$ROOT" ]; then
  rm -rf --one-file-system "$ROOT"
fi
if [ ! -x "$ROOT/bin/bash" ]; then
  command -v debootstrap >/dev/null || {
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
  } || { echo "check-fresh: cannot install debootstrap" >&2; exit 2; }
  # The machine's own Debian mirror (deb822 or one-line sources).
  uri=$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/*.sources 2>/dev/null)
  [ -n "$uri" ] || uri=$(awk '/^deb /{print $2; exit}' /etc/apt/sources.list 2>/dev/null)
  mkdir -p "$(dirname "$ROOT")"
  echo "check-fresh: debootstrap bookworm into $ROOT (log: $ROOT.debootstrap.log)"
  debootstrap --variant=minbase --include=git,ca-certificates bookworm "$ROOT" \
    "${uri:-http://deb.debian.org/debian}" >"$ROOT.debootstrap.log" 2>&1 ||
    { echo "check-fresh: debootstrap failed (see $ROOT.debootstrap.log)" >&2; exit 2; }
  cp /etc/apt/sources.list.d/debian.sources "$ROOT/etc/apt/sources.list.d/" 2>/dev/null
fi
rm -rf "$ROOT/srv/project" "$ROOT/srv/shared"
mkdir -p "$ROOT/srv"
git clone -q "$SRC" "$ROOT/srv/project"
cp -a "$SHARED" "$ROOT/srv/shared" && chmod -R a-w "$ROOT/srv/shared"
cp /etc/resolv.conf "$ROOT/etc/resolv.conf" 2>/dev/null

failed=0
for cmd in $CMDS; do
  log="$ROOT.$(basename "$cmd" .sh).log"
  echo "check-fresh: $cmd (log: $log)"
  # A private mount namespace: / is a mount point inside (unshare --propagation needs it), and
  # every mount the tests make goes away with the namespace.
  unshare -m --propagation private /bin/bash -c '
    set -e
    root=$1; cmd=$2
    mount --rbind "$root" "$root"
    for m in proc sys dev; do mount --rbind "/$m" "$root/$m"; done
    exec chroot "$root" /usr/bin/env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
      HOME=/root CI=true LANG=C.UTF-8 /bin/bash -c "cd /srv/project && $cmd"
  ' check-fresh "$ROOT" "$cmd" >"$log" 2>&1
  rc=$?
  tail -n 5 "$log" | sed 's/^/  | /'
  echo "check-fresh: $cmd exit $rc"
  [ "$rc" -eq 0 ] || failed=1
done
exit "$failed"
