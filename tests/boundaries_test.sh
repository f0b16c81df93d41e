#!/usr/bin/env bash
# The module boundaries of issue #19 (docs/development.md, "Where does my change go"), checked on
# the sources and on the built daemon:
#   - Asio lives in daemon/ (and signing/signer.cc, which drives the registry client): tools/,
#     bench/ and every header another module includes from daemon/ or signing/ are free of it;
#   - bench/ includes nothing from tests/, and no product module includes test code (tests/,
#     testkit/);
#   - signing is not in the daemon: digestd has no SigningKey symbol, digestctl has.
# Usage: tests/boundaries_test.sh SOURCE_DIR BUILD_DIR
set -euo pipefail
SRC=$1
BUILD=$2
cd "$SRC"
fail=0
bad() { echo "boundaries: $*" >&2; fail=1; }

asio='#include *<boost/(asio|beast)'
if hits=$(grep -rEn "$asio" tools bench signing/*.h \
    daemon/config.h daemon/pull_types.h daemon/offline_pull.h daemon/io_uring_check.h); then
  bad "Asio outside daemon/ (use the blocking APIs: daemon/offline_pull.h, signing/signer.h):"$'\n'"$hits"
fi
if hits=$(grep -rEn '#include *"(testing|tests)/' bench); then
  bad "bench/ includes test code (shared builders go to testkit/):"$'\n'"$hits"
fi
if grep -q 'PROJECT_SOURCE_DIR}/tests' bench/CMakeLists.txt; then
  bad "bench/CMakeLists.txt puts tests/ on an include path"
fi
if hits=$(grep -rEn '#include *"(testing|testkit)/' common verify store fusefs snapshotter daemon signing tools); then
  bad "product code includes test code:"$'\n'"$hits"
fi
# The daemon must not carry signing; digestctl must (else the check above proves nothing).
daemon_bin=$BUILD/daemon/digestd
ctl_bin=$BUILD/tools/digestctl
if [ ! -x "$daemon_bin" ] || [ ! -x "$ctl_bin" ]; then
  # A partial build (the sanitizer run builds only the unit tests): the source checks above ran.
  echo "boundaries: SKIP the binary checks: build $daemon_bin and $ctl_bin first" >&2
  [ $fail -eq 0 ] && exit 77
  exit 1
fi
# (grep -c reads all of nm's output: grep -q would end it early, a SIGPIPE pipefail reports.)
if [ "$(nm -C "$daemon_bin" | grep -c 'signing::SigningKey' || true)" != 0 ]; then
  bad "digestd contains the signing module (only digestctl signs)"
fi
if [ "$(nm -C "$ctl_bin" | grep -c 'signing::SigningKey' || true)" = 0 ]; then
  bad "digestctl has no signing::SigningKey: the symbol check above is stale"
fi
[ $fail -eq 0 ] && echo "boundaries: ok"
exit $fail
