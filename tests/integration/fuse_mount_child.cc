// Helper for fuse_mount_test: opens a store, mounts it, says "ready" on stdout and waits to be
// killed (SIGKILL leaves a stale mount behind, as a crashed daemon would).

#include <unistd.h>

#include <cstdio>

#include "fusefs/fuse_mount.h"
#include "store/store.h"

int main(int argc, char** argv) {
  if (argc != 3) {
    std::fprintf(stderr, "usage: %s STORE MOUNTPOINT\n", argv[0]);
    return 2;
  }
  auto store = digestd::store::Store::Open({.root = argv[1]});
  if (!store) {
    std::fprintf(stderr, "%s\n", store.error().ToString().c_str());
    return 1;
  }
  auto mount = digestd::fusefs::FuseMount::Mount(**store, {.mountpoint = argv[2]});
  if (!mount) {
    std::fprintf(stderr, "%s\n", mount.error().ToString().c_str());
    return 1;
  }
  std::printf("ready\n");
  std::fflush(stdout);
  for (;;) ::pause();
}
