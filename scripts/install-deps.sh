#!/usr/bin/env bash
# Installs every Debian package that digestd's build, tests, demo and benchmarks need, on Debian 12
# (bookworm), from a minimal system up (scripts/check-fresh.sh proves it on a new debootstrap root).
# Idempotent: packages already installed are skipped; apt is only touched when something is missing.
set -euo pipefail

PACKAGES=(
  # toolchain and build; dpkg-dev (dpkg-source) with the decompressors of Debian source
  # packages unpacks trixie's fuse3 source (scripts/fetch-libfuse.sh)
  g++ cmake make pkg-config ccache dpkg-dev xz-utils bzip2 gzip
  # libraries (Boost >= 1.78 for Asio's io_uring backend; 1.81 conflicts with libboost1.74-dev)
  libboost1.81-dev liburing-dev librocksdb-dev libssl-dev libspdlog-dev libfmt-dev
  nlohmann-json3-dev libtomlplusplus-dev libexpected-dev libarchive-dev libzstd-dev libcli11-dev
  libfuse3-dev fuse3 meson ninja-build
  # the containerd snapshotter (gRPC; containerd's API protos; containerd itself for the e2e test)
  libgrpc++-dev libprotobuf-dev protobuf-compiler protobuf-compiler-grpc
  golang-github-containerd-containerd-dev containerd
  # tests: the registry and image tools, the runtimes, and every command the tests and benchmarks
  # run (systemd: systemd-analyze; procps: pkill; util-linux: unshare, setpriv, losetup,
  # mountpoint, prlimit; e2fsprogs: mkfs.ext4; coreutils: timeout, sha256sum, stat, truncate;
  # mount: mount -o loop, umount; diffutils: cmp; fiu-utils: fiu-run, fiu-ctrl for I/O faults;
  # systemd-container: systemd-nspawn boots this machine's root under systemd for the live
  # restart test)
  libgtest-dev libgmock-dev docker-registry skopeo umoci busybox-static runc curl jq strace openssl
  apache2-utils bc python3 systemd procps util-linux e2fsprogs coreutils findutils grep sed
  tar ca-certificates git mount diffutils fiu-utils systemd-container
  # fuzzing (clang + libFuzzer runtime)
  clang libclang-rt-14-dev
)

missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all ${#PACKAGES[@]} packages present"
else
  echo "install-deps: installing ${missing[*]}"
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# cosign 2.x from Debian trixie into .tools/ (bookworm has none); the system apt set-up is untouched.
"$(dirname "$0")/fetch-cosign.sh" >/dev/null
"$(dirname "$0")/fetch-libfuse.sh" >/dev/null
