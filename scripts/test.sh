#!/usr/bin/env bash
# Installs dependencies, configures, builds with -j2 and ccache, and runs every test.
# Non-zero exit on any failure. Usage: scripts/test.sh [ctest args...]
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh

PRESET=${DIGESTD_PRESET:-default}
export CCACHE_DIR=${CCACHE_DIR:-$HOME/.cache/ccache}
cmake --preset "$PRESET" -DDIGESTD_WERROR=ON
cmake --build --preset "$PRESET" -j2

# Every test, including the crash test and the benchmark smoke runs (label "smoke").
ctest --test-dir "build/$PRESET" --output-on-failure --timeout 900 "$@"

# libFuzzer smoke run of each parser (clang build); set DIGESTD_FUZZ_SECONDS=0 to skip.
if [ "${DIGESTD_FUZZ_SECONDS:-15}" != "0" ]; then
  scripts/fuzz-smoke.sh "${DIGESTD_FUZZ_SECONDS:-15}"
fi
