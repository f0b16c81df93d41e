#!/usr/bin/env bash
# digestd demo. Today it shows what is built so far: the crash-safe content-addressed store.
#   1. installs what is missing and builds
#   2. runs a writer that ingests blobs into a fresh store and kills it with SIGKILL mid-stream
#   3. `digestctl fsck` reopens the store (recovery) and re-hashes every blob
#   4. a short store benchmark against plain write+fsync and hashing
# It grows into the full pull -> verify -> mount -> run demo with the service issue.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh
cmake --preset default >/dev/null
cmake --build --preset default -j2

BUILD=build/default
WORK=$(mktemp -d /var/tmp/digestd-demo.XXXXXX)
trap 'rm -rf "$WORK"' EXIT

echo
echo "== 2. ingest blobs, then SIGKILL the writer mid-stream"
"$BUILD/tests/integration/store_crash_child" "$WORK/store" 42 > "$WORK/committed" 2>/dev/null &
CHILD=$!
sleep 1.5
kill -KILL "$CHILD"
wait "$CHILD" 2>/dev/null || true
echo "writer killed after $(grep -c '^C ' "$WORK/committed") commits"

echo
echo "== 3. digestctl fsck (recovery at open, then every blob re-hashed)"
"$BUILD/tools/digestctl" fsck --root "$WORK/store" 2>/dev/null

echo
echo "== 4. store_bench (256 MiB, 3 runs; docs/PERFORMANCE.md has the full-size figures)"
"$BUILD/bench/store_bench" --size 256MiB --runs 3 --dir "$WORK" 2>/dev/null
