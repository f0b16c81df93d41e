#!/usr/bin/env bash
# A pull's network and file I/O runs on io_uring: strace of a real pull shows io_uring_enter calls
# and no epoll/poll/select at all. Usage: io_uring_trace_test.sh PULL_ONCE
set -euo pipefail
PULL_ONCE=$1
. "$(dirname "$0")/../../scripts/lib/registry.sh"
WORK=$(mktemp -d)
cleanup() {
  stop_registry
  rm -rf "$WORK"
}
trap cleanup EXIT
start_registry "$WORK"
PORT=${REGISTRY_HOST##*:}
cd "$WORK"
umoci init --layout img >/dev/null
umoci new --image img:v1 >/dev/null
umoci unpack --rootless --image img:v1 bundle >/dev/null
mkdir -p bundle/rootfs/bin && cp /bin/busybox bundle/rootfs/bin/busybox
umoci repack --image img:v1 bundle >/dev/null
skopeo copy --quiet --dest-tls-verify=false oci:img:v1 "docker://127.0.0.1:$PORT/test/busybox:v1"
echo '{"default":[{"type":"insecureAcceptAnything"}]}' > policy.json
strace -f -c -o trace.txt \
  -e trace=io_uring_setup,io_uring_enter,epoll_create1,epoll_ctl,epoll_wait,epoll_pwait,poll,ppoll,select,pselect6 \
  "$PULL_ONCE" --store "$WORK/store" --policy policy.json --insecure "127.0.0.1:$PORT" \
  "127.0.0.1:$PORT/test/busybox:v1" 2>/dev/null | tee pull.txt
cat trace.txt
grep -q '^pulled sha256:' pull.txt || { echo "FAIL: the pull did not complete"; exit 1; }
enters=$(awk '$NF == "io_uring_enter" { print $4 }' trace.txt)
[ -n "$enters" ] && [ "$enters" -gt 0 ] || { echo "FAIL: no io_uring_enter calls"; exit 1; }
if grep -Eq ' (epoll_[a-z0-9]+|poll|ppoll|select|pselect6)$' trace.txt; then
  echo "FAIL: the pull used epoll/poll/select"
  exit 1
fi
echo "1 passed, 0 failed: $enters io_uring_enter calls, no epoll/poll/select"
