// Helper for fuse_mount_test: opens a store, mounts it, says "ready" on stdout and waits for a
// signal. SIGTERM unmounts cleanly (as the daemon does on SIGTERM); SIGKILL leaves a stale mount
// behind, as a crashed daemon would.

#include <signal.h>
#include <unistd.h>

#include <cstdio>

#include "fusefs/fuse_mount.h"
#include "store/store.h"

int main(int argc, char** argv) {
  if (argc != 3) {
    std::fprintf(stderr, "usage: %s STORE MOUNTPOINT\n", argv[0]);
    return 2;
  }
  // Block the signals before any thread exists, so that only sigwait below sees them.
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
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
  int sig = 0;
  sigwait(&set, &sig);
  if (auto r = (*mount)->Unmount(); !r) {
    std::fprintf(stderr, "%s\n", r.error().ToString().c_str());
    return 1;
  }
  std::printf("unmounted\n");
  return 0;
}
