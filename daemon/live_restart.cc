#include "daemon/live_restart.h"

#include <sys/mount.h>

#include <cerrno>
#include <cstring>

#include "common/log.h"
#include "common/service_manager.h"

namespace digestd::daemon {
namespace {

constexpr std::string_view kFuseName = "fuse";
constexpr std::string_view kStateName = "fuse-state";

void StoreSession(fusefs::FuseMount& mount) {
  if (!ServiceManagerPresent()) return;
  auto log = Logger("digestd");
  auto fds = mount.Export();
  if (!fds) {
    log->warn("live restart: session not stored ({}): a restart will remount", fds.error().ToString());
    return;
  }
  for (auto [name, fd] : {std::pair{kFuseName, fds->fuse.Get()}, std::pair{kStateName, fds->state.Get()}}) {
    if (auto r = StoreFd(name, fd); !r) {
      log->warn("live restart: {} not stored ({}): a restart will remount", name, r.error().ToString());
    }
  }
}

}  // namespace

Inherited TakeInherited() {
  Inherited in;
  for (auto& l : TakeListenFds()) {
    if (l.name == kFuseName) {
      in.session.fuse = std::move(l.fd);
    } else if (l.name == kStateName) {
      in.session.state = std::move(l.fd);
    } else if (l.name == "control") {
      in.control = std::move(l.fd);
    } else if (l.name == "snapshotter") {
      in.snapshotter = std::move(l.fd);
    } else {
      Logger("digestd")->warn("service manager passed an fd named {}: not ours, closed", l.name);
    }
  }
  return in;
}

Result<fusefs::FuseMountPtr> MountOrAdopt(store::Store& store, const fusefs::MountOptions& options,
                                          fusefs::SessionFds handed) {
  auto log = Logger("digestd");
  if (handed.fuse || handed.state) {
    auto adopted = fusefs::FuseMount::Adopt(store, options, std::move(handed));
    if (adopted) {
      StoreSession(**adopted);
      return adopted;
    }
    if (adopted.error().code() == Errc::kNotFound) {
      log->info("live restart: the handed-over session is no longer mounted; mounting afresh");
    } else {
      // Nobody can serve that mount any more: take it off the mount point (it would only hang or
      // fail its readers) and start over.
      log->error("live restart: cannot adopt the handed-over session ({}); detaching it from {} "
                 "and mounting afresh: readers of the old mount get errors",
                 adopted.error().ToString(), options.mountpoint);
      if (::umount2(options.mountpoint.c_str(), MNT_DETACH) != 0 && errno != EINVAL) {
        log->warn("detach {}: {}", options.mountpoint, std::strerror(errno));
      }
    }
    (void)RemoveStoredFds(kFuseName);
    (void)RemoveStoredFds(kStateName);
  }
  auto mount = fusefs::FuseMount::Mount(store, options);
  if (mount) StoreSession(**mount);
  return mount;
}

void ReleaseMount(fusefs::FuseMount& mount, bool handover) {
  auto log = Logger("digestd");
  if (handover && ServiceManagerPresent()) {
    if (auto r = mount.Detach(); !r) log->error("hand-over: {}", r.error().ToString());
    return;
  }
  if (auto r = mount.Unmount(); !r) log->error("unmount: {}", r.error().ToString());
  (void)RemoveStoredFds(kFuseName);
  (void)RemoveStoredFds(kStateName);
}

}  // namespace digestd::daemon
