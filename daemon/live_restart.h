#pragma once

// digestd's side of live restart (docs/architecture.md, "Live restart"; docs/operations.md,
// "Restarts and upgrades"): what the service manager (systemd, or digestd-supervise) hands a
// starting process, and what a stopping one leaves it. One path for both managers.
//
//   start: fds named "fuse" + "fuse-state" -> adopt the live mount (else mount afresh);
//          "control" / "snapshotter" -> listening sockets from socket units;
//          the session is put (back) into the manager's fd store.
//   stop:  under a manager, hand the session over (detach; the mount stays); without one, or
//          with [daemon] handover = false, unmount and drop the stored session.

#include "common/error.h"
#include "common/unique_fd.h"
#include "fusefs/fuse_mount.h"
#include "store/store.h"

namespace digestd::daemon {

struct Inherited {
  fusefs::SessionFds session;
  UniqueFd control;      // digestd.socket
  UniqueFd snapshotter;  // digestd-snapshotter.socket
};

// The fds this process was started with ($LISTEN_FDS), by name; unknown names are closed (logged).
Inherited TakeInherited();

// Adopts the handed-over session when there is one and it is still mounted, else mounts. A
// session that cannot be adopted (another build's state, another mount point) is detached from
// its mount point and dropped from the fd store, and the mount is made afresh: readers of the
// old one get errors, which is logged. Under a manager the session is stored for the next process.
Result<fusefs::FuseMountPtr> MountOrAdopt(store::Store& store, const fusefs::MountOptions& options,
                                          fusefs::SessionFds handed);

// At shutdown: hands the session over when `handover` and a manager keeps it, else unmounts.
void ReleaseMount(fusefs::FuseMount& mount, bool handover);

}  // namespace digestd::daemon
