#!/usr/bin/env bash
# Builds the libFuzzer targets with clang (preset `fuzz`) and runs each for a short smoke period
# on a scratch copy of its seed corpus. Usage: scripts/fuzz-smoke.sh [SECONDS per target, default 15]
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-15}
if ! command -v clang++ >/dev/null; then
  echo "fuzz-smoke: clang++ not found; skipping the libFuzzer smoke run"
  exit 0
fi
cmake --preset fuzz >/dev/null
cmake --build --preset fuzz -j2
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
for t in reference manifest payload policy layer bundle; do
  mkdir -p "$WORK/$t"
  cp -r tests/fuzz/corpus/$t/. "$WORK/$t/"
  echo "fuzz-smoke: $t for ${SECS}s"
  # A crash leaves its input in $WORK and fails the run.
  ASAN_OPTIONS=detect_leaks=1 build/fuzz/tests/fuzz/${t}_fuzz -max_total_time="$SECS" \
    -max_len=65536 -artifact_prefix="$WORK/$t-" "$WORK/$t" 2>&1 | tail -n 2
done
echo "fuzz-smoke: passed"
