// Helper for fuse_mount_test: opens a store, mounts it (or adopts the session its service manager
// handed over: digestd-supervise or systemd, fds named "fuse" and "fuse-state"), stores the
// session in the manager's fd store, says "ready" on stdout (and READY=1) and waits for a
// signal. SIGTERM: under a service manager it hands over (detaches, the mount stays), else it
// unmounts, as the daemon does; SIGKILL leaves the session to the manager (or, without one, a
// stale mount behind, as a crashed daemon would).
//
// With a third argument DIGEST: a lookup of the name "held-lookup" says "lookup held" and is
// answered only after 60 s; SIGUSR1 invalidates DIGEST (FuseMount::Invalidate, on the main
// thread, as the daemon's io thread does) and says "invalidated".

#include <signal.h>
#include <unistd.h>

#include <cstdio>
#include <optional>

#include "common/service_manager.h"
#include "fusefs/fuse_mount.h"
#include "store/store.h"

using namespace digestd;

int main(int argc, char** argv) {
  if (argc != 3 && argc != 4) {
    std::fprintf(stderr, "usage: %s STORE MOUNTPOINT [DIGEST]\n", argv[0]);
    return 2;
  }
  // Block the signals before any thread exists, so that only sigwait below sees them.
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGUSR1);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  fusefs::SessionFds handed;
  for (auto& l : TakeListenFds()) {
    if (l.name == "fuse") handed.fuse = std::move(l.fd);
    if (l.name == "fuse-state") handed.state = std::move(l.fd);
  }
  // The store is locked by one process at a time: a predecessor that is still exiting holds it.
  Result<store::StorePtr> store = store::Store::Open({.root = argv[1]});
  for (int i = 0; i < 500 && !store && store.error().code() == Errc::kBusy; ++i) {
    usleep(10000);
    store = store::Store::Open({.root = argv[1]});
  }
  if (!store) {
    std::fprintf(stderr, "%s\n", store.error().ToString().c_str());
    return 1;
  }
  fusefs::MountOptions options{.mountpoint = argv[2], .dynamic_timeout_s = 0};
  std::optional<verify::Digest> to_invalidate;
  if (argc == 4) {
    auto d = verify::Digest::Parse(argv[3]);
    if (!d) {
      std::fprintf(stderr, "%s\n", d.error().ToString().c_str());
      return 2;
    }
    to_invalidate = *d;
    options.before_lookup = [](std::string_view name) {
      if (name != "held-lookup") return;
      std::printf("lookup held\n");
      std::fflush(stdout);
      ::sleep(60);
    };
  }
  Result<fusefs::FuseMountPtr> mount = MakeError(Module::kFuse, Errc::kNotFound, "not yet");
  if (handed.fuse) {
    mount = fusefs::FuseMount::Adopt(**store, options, std::move(handed));
    if (!mount && mount.error().code() == Errc::kNotFound) {
      mount = fusefs::FuseMount::Mount(**store, options);
    }
  } else {
    mount = fusefs::FuseMount::Mount(**store, options);
  }
  if (!mount) {
    std::fprintf(stderr, "%s\n", mount.error().ToString().c_str());
    return 1;
  }
  const bool managed = ServiceManagerPresent();
  if (managed) {
    auto fds = (*mount)->Export();
    if (!fds || !StoreFd("fuse", fds->fuse.Get()) || !StoreFd("fuse-state", fds->state.Get())) {
      std::fprintf(stderr, "could not store the session\n");
      return 1;
    }
    (void)NotifyServiceManager("READY=1");
  }
  std::printf("ready %s\n", (*mount)->adopted() ? "adopted" : "mounted");
  std::fflush(stdout);
  int sig = 0;
  while (sigwait(&set, &sig) == 0 && sig == SIGUSR1) {
    if (to_invalidate) (*mount)->Invalidate(*to_invalidate);
    std::printf("invalidated\n");
    std::fflush(stdout);
  }
  if (managed) {
    if (auto r = (*mount)->Detach(); !r) return 1;
    std::printf("detached\n");
    std::fflush(stdout);
    std::_Exit(0);  // no unmount on the way out
  }
  if (auto r = (*mount)->Unmount(); !r) {
    std::fprintf(stderr, "%s\n", r.error().ToString().c_str());
    return 1;
  }
  std::printf("unmounted\n");
  return 0;
}
