#!/usr/bin/env bash
# restart_bench: how long a reader of the mount waits, and whether it ever fails, while digestd
# restarts under it (issue #18). digestd runs under digestd-supervise, which speaks systemd's
# fd-store protocol; a reader (bench/stall_reader: 4 KiB reads at random offsets of a file it
# holds open, and opens + reads of random small files) reads an image's rootfs through the mount
# in four phases:
#   steady:   no restart: the baseline, the reader's own worst wait on this machine
#   graceful: N hand-overs to a waiting successor (SIGUSR2, passed on by the supervisor as by
#             `systemctl kill -s USR2 --kill-who=main digestd`: digestd starts the next process,
#             which loads while the old one serves, then hands over at a request boundary)
#   restart:  N stop-then-start restarts (SIGHUP to the supervisor = what `systemctl restart`
#             does: SIGTERM, hand-over at a request boundary, then the next process starts and
#             adopts the mount)
#   crash:    N SIGKILLs of digestd (restarted after --restart-sec, as Restart=always does)
# Prints `bench restart_stall_max_ms_{steady,graceful,restart,crash} <ms> ms`, `bench
# restart_read_errors <n> count` (must be 0), and `ratio restart_graceful_vs_goal` (50 ms over the
# graceful stall) and `ratio restart_crash_vs_goal` (1000 ms over the crash stall): >= 1 meets
# the goal. Starts its own registry on a free loopback port. Root (it mounts).
#
# Usage: bench/restart_bench.sh [--build DIR] [--restarts N] [--files N] [--big-mib N]
#                               [--restart-sec S] [--dir DIR]
set -euo pipefail
BUILD=build/default
RESTARTS=10
FILES=2000
BIG_MIB=64
RESTART_SEC=0.1
BASE=/var/tmp
while [ $# -gt 0 ]; do
  case $1 in
    --build) BUILD=$2; shift 2 ;;
    --restarts) RESTARTS=$2; shift 2 ;;
    --files) FILES=$2; shift 2 ;;
    --big-mib) BIG_MIB=$2; shift 2 ;;
    --restart-sec) RESTART_SEC=$2; shift 2 ;;
    --dir) BASE=$2; shift 2 ;;
    *) echo "usage: $0 [--build DIR] [--restarts N] [--files N] [--big-mib N] [--restart-sec S] [--dir DIR]" >&2; exit 2 ;;
  esac
done
cd "$(dirname "$0")/.."
case $BUILD in /*) ;; *) BUILD=$PWD/$BUILD ;; esac
CTL=$BUILD/tools/digestctl
. scripts/lib/registry.sh
WORK=$(mktemp -d "$BASE/restart_bench.XXXXXX")
SUP_PID=
cleanup() {
  [ -n "$SUP_PID" ] && kill "$SUP_PID" 2>/dev/null && wait "$SUP_PID" 2>/dev/null || true
  umount -l "$WORK/mnt" 2>/dev/null || true
  stop_registry
  rm -rf "$WORK"
}
[ -n "${RESTART_BENCH_KEEP:-}" ] || trap cleanup EXIT
cd "$WORK"
start_registry "$WORK"
HOST=$REGISTRY_HOST

# The image: busybox, FILES small files, one BIG_MIB file of random bytes.
umoci init --layout img >/dev/null
umoci new --image img:v1 >/dev/null
umoci unpack --rootless --image img:v1 b >/dev/null
mkdir -p b/rootfs/bin b/rootfs/small && cp /bin/busybox b/rootfs/bin/busybox
for i in $(seq "$FILES"); do head -c 2048 /dev/urandom > "b/rootfs/small/f$i"; done
head -c "$((BIG_MIB << 20))" /dev/urandom > b/rootfs/big
umoci repack --image img:v1 b >/dev/null
skopeo copy --quiet --dest-tls-verify=false oci:img:v1 "docker://$HOST/bench/restart:v1"
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out signer.pem 2>/dev/null
openssl pkey -in signer.pem -pubout -out signer.pub
"$CTL" sign --insecure --key signer.pem "$HOST/bench/restart:v1" >/dev/null
cat > trust.json <<JSON
{"keys":[{"id":"bench","pemPath":"$WORK/signer.pub","start":"2026-01-01T00:00:00Z","scopes":["$HOST/bench"]}]}
JSON
cat > policy.json <<JSON
{"default":[{"type":"reject"}],
 "transports":{"docker":{"$HOST/bench":[{"type":"sigstoreSigned","keyPath":"$WORK/signer.pub",
   "signedIdentity":{"type":"matchRepository"}}]}}}
JSON
cat > digestd.toml <<TOML
[store]
root = "$WORK/store"
[policy]
file = "$WORK/policy.json"
trust = "$WORK/trust.json"
[daemon]
socket = "$WORK/digestd.sock"
mountpoint = "$WORK/mnt"
[[registry]]
host = "$HOST"
insecure = true
TOML

"$BUILD/tools/digestd-supervise" --restart-sec "$RESTART_SEC" --unmount "$WORK/mnt" \
  --socket "control=$WORK/digestd.sock" -- "$BUILD/daemon/digestd" --config digestd.toml \
  2> supervise.log &
SUP_PID=$!
readies() { grep -c "supervise: ready pid" supervise.log || true; }
wait_ready() {
  for _ in $(seq 1000); do [ "$(readies)" -ge "$1" ] && return 0; sleep 0.01; done
  echo "restart_bench: digestd did not come back" >&2; tail -n 20 supervise.log >&2; exit 1
}
wait_ready 1
"$CTL" --socket digestd.sock pull "$HOST/bench/restart:v1" > pull.out 2>&1 ||
  { cat pull.out >&2; exit 1; }
IMAGE=$(grep '^image ' pull.out | awk '{print $2}' | cut -d: -f2)
ROOT=$WORK/mnt/images/sha256/$IMAGE/rootfs
cat "$ROOT/big" > /dev/null  # warm: every phase starts from the same cache state

ERRORS=0
# phase NAME ACTION: runs the reader while ACTION happens RESTARTS times; prints its max stall.
phase() {
  local name=$1 action=$2
  rm -f stop
  "$BUILD/bench/stall_reader" stop "$ROOT/big" "$ROOT/small" > "reader-$name.log" 2>&1 &
  local reader=$!
  for _ in $(seq 200); do grep -q started "reader-$name.log" && break; sleep 0.01; done
  local n
  n=$(readies)
  for _ in $(seq "$RESTARTS"); do
    sleep 0.3
    case $action in
      none) ;;
      graceful) kill -USR2 "$SUP_PID"; n=$((n + 1)); wait_ready "$n" ;;
      restart) kill -HUP "$SUP_PID"; n=$((n + 1)); wait_ready "$n" ;;
      crash) pid=$(grep -o "started pid [0-9]*" supervise.log | tail -n 1 | awk '{print $3}')
             kill -KILL "$pid"; n=$((n + 1)); wait_ready "$n" ;;
    esac
  done
  sleep 0.3
  touch stop
  # A reader stuck in the kernel cannot be killed: bounded wait, then fail loudly.
  for _ in $(seq 3000); do kill -0 "$reader" 2>/dev/null || break; sleep 0.01; done
  if kill -0 "$reader" 2>/dev/null; then
    echo "restart_bench: the reader hung in phase $name" >&2
    exit 1
  fi
  wait "$reader" || true
  local line
  line=$(grep '^stall_reader ops' "reader-$name.log") || { cat "reader-$name.log" >&2; exit 1; }
  echo "restart_bench: $name: $line" >&2
  ERRORS=$((ERRORS + $(echo "$line" | sed 's/.*errors=\([0-9]*\).*/\1/')))
  echo "$line" | sed 's/.*max_ms=\([0-9.]*\).*/\1/'
}
STEADY=$(phase steady none)
GRACEFUL=$(phase graceful graceful)
RESTART=$(phase restart restart)
CRASH=$(phase crash crash)
echo "bench restart_stall_max_ms_steady $STEADY ms"
echo "bench restart_stall_max_ms_graceful $GRACEFUL ms"
echo "bench restart_stall_max_ms_restart $RESTART ms"
echo "bench restart_stall_max_ms_crash $CRASH ms"
echo "bench restart_read_errors $ERRORS count"
awk -v g="$GRACEFUL" -v c="$CRASH" 'BEGIN {
  printf "ratio restart_graceful_vs_goal %.2f\n", 50 / (g > 0 ? g : 0.001)
  printf "ratio restart_crash_vs_goal %.2f\n", 1000 / (c > 0 ? c : 0.001) }'
