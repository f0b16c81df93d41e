#!/usr/bin/env bash
# Durability order of store commits, from the syscalls themselves: strace of an image commit and
# of a single-blob commit, checked by durability_check.py (every file synced before the record
# that names it; the WAL synced), and the checker itself run against six traces with a sync
# removed or moved after the index write, each of which it must refuse.
# Usage: durability_test.sh DURABILITY_CHILD
set -euo pipefail
child=$1
here=$(cd "$(dirname "$0")" && pwd)
dir=$(mktemp -d /tmp/digestd-durability-XXXXXX)
trap 'rm -rf "$dir"' EXIT
timeout -s KILL 120 strace -f -y -qq -s 64 \
  -e trace=linkat,renameat,renameat2,fsync,fdatasync,syncfs,write,writev,pwrite64 \
  -o "$dir/trace.txt" "$child" "$dir/store" 2>"$dir/child.err" || {
  echo "durability child failed:"; cat "$dir/child.err"; exit 1; }
python3 "$here/durability_check.py" "$dir/trace.txt"
python3 "$here/durability_check.py" --mutants "$dir/trace.txt"
