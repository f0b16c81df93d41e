#!/usr/bin/env bash
# A benchmark's smoke run for ctest: passes only if the command exits 0 AND prints every
# expected line (extended regular expressions). ctest's PASS_REGULAR_EXPRESSION alone would
# ignore the exit code.
#
# Usage: bench/smoke.sh 'REGEX' ['REGEX'...] -- COMMAND [ARGS...]
set -uo pipefail
patterns=()
while [ $# -gt 0 ] && [ "$1" != "--" ]; do patterns+=("$1"); shift; done
[ "${1:-}" = "--" ] || { echo "usage: $0 REGEX... -- COMMAND..." >&2; exit 2; }
shift
out=$(mktemp)
trap 'rm -f "$out"' EXIT
"$@" 2>&1 | tee "$out"
rc=${PIPESTATUS[0]}
if [ "$rc" -ne 0 ]; then echo "smoke: exit code $rc" >&2; exit 1; fi
for p in "${patterns[@]}"; do
  grep -Eq "$p" "$out" || { echo "smoke: no line matches: $p" >&2; exit 1; }
done
echo "smoke: ok"
