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
//   hand-over to a waiting successor (SIGUSR2; docs/architecture.md, "Hand-over to a waiting
//          successor"): the running process starts the next one itself with the session, the
//          listeners and a "handover" socket; the successor loads everything that does not need
//          the store, says "standby", and waits for its predecessor to be gone; the predecessor
//          makes it the manager's main process (MAINPID=), detaches at a request boundary and
//          exits; the successor opens the store and adopts. Its start-up (exec, loading, config,
//          policy) overlaps the old process serving: readers wait only for the store's open and
//          the adoption. A successor that fails before "standby" changes nothing.

#include <sys/types.h>

#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <boost/asio/io_context.hpp>

#include "common/error.h"
#include "common/unique_fd.h"
#include "fusefs/fuse_mount.h"
#include "store/store.h"

namespace digestd::daemon {

struct Inherited {
  fusefs::SessionFds session;
  UniqueFd control;      // digestd.socket
  UniqueFd snapshotter;  // digestd-snapshotter.socket
  UniqueFd handover;     // set when a predecessor started us and waits for our "standby"
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

// Successor side: tells the predecessor this process is ready to take over, then waits until it
// has exited (its fds, the store's lock among them, are closed then; pidfd). kTimeout when it is
// still there after `timeout`; at once when it is already gone.
Result<void> AwaitPredecessor(UniqueFd handover, std::chrono::milliseconds timeout);

// Predecessor side: one successor, started by Spawn() and watched on `io`.
class Successor {
 public:
  // Starts `argv` (argv[0] a path, or a name looked up in $PATH) with `fds` passed as the
  // service manager passes them ($LISTEN_FDS, $LISTEN_FDNAMES, $LISTEN_PID) plus a "handover"
  // socket, and this process's environment. Nothing else is inherited.
  static Result<std::unique_ptr<Successor>> Spawn(boost::asio::io_context& io,
                                                  const std::vector<std::string>& argv,
                                                  const std::vector<std::pair<std::string, int>>& fds);
  ~Successor();
  Successor(const Successor&) = delete;
  Successor& operator=(const Successor&) = delete;

  // Calls `standby` on `io` once the successor said it is ready to take over, or `failed` (with
  // the reason) when it exits or stays silent for `timeout` first; a failed successor is killed
  // and reaped. Exactly one of them is called.
  void Await(std::chrono::milliseconds timeout, std::function<void()> standby,
             std::function<void(const std::string&)> failed);

  // After standby, once the manager was told the successor is its main process (MAINPID=):
  // lets the successor take over as soon as this process has exited.
  Result<void> Go();
  // After Go(), once this process has detached from the mount and released the store
  // (Store::ReleaseForSuccessor): the successor need not wait for the rest of the exit.
  void Released();

  pid_t pid() const;
  bool went() const;  // Go() was sent

  struct Impl;

 private:
  explicit Successor(std::shared_ptr<Impl> impl);
  std::shared_ptr<Impl> impl_;
};

}  // namespace digestd::daemon
