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
//          the store, says "standby", and waits; the predecessor makes it the manager's main
//          process (MAINPID=, "go"), stops its control servers, records a clean stop, gives up
//          the store while still serving the mount from a read-only view of it ("released");
//          the successor opens the store, adopts the session and serves it alongside, then
//          "retire"s the predecessor, which detaches at a request boundary ("detached") and
//          exits. Readers never wait on a process starting: one of the two always reads the
//          connection. A successor that fails before "standby" changes nothing.

#include <sys/types.h>

#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <boost/asio/io_context.hpp>

#include "common/error.h"
#include "common/unique_fd.h"
#include "daemon/config.h"
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
// `predecessor_serving`: a hand-over's predecessor still reads the connection, so nothing is
// unanswered yet (no resend; Predecessor::Retire says when one is needed).
Result<fusefs::FuseMountPtr> MountOrAdopt(store::Store& store, const fusefs::MountOptions& options,
                                          fusefs::SessionFds handed, bool predecessor_serving = false);

// At shutdown: hands the session over when `handover` and a manager keeps it, else unmounts.
void ReleaseMount(fusefs::FuseMount& mount, bool handover);

// Successor side: the running digestd that started this process (SIGUSR2).
class Predecessor {
 public:
  // Tells it this process stands by, waits for "go" (we are the manager's main process now),
  // then until the store is ours: it "released" it and still serves the mount (serving()), or it
  // has exited (its fds, the store's lock among them, are closed then; pidfd). kAborted when it
  // exits without "go"; kBusy when `timeout` passes first.
  static Result<Predecessor> Await(UniqueFd handover, std::chrono::milliseconds timeout);

  // Whether it still serves the mount (until Retire()).
  bool serving() const { return serving_; }
  // The digests whose views it built (what its readers use): to build before serving
  // (MountOptions::warm). Well-formed digests, nothing more: they may name anything.
  const std::vector<verify::Digest>& served() const { return served_; }
  pid_t pid() const { return pid_; }

  // Once this process serves the adopted mount too: asks the predecessor to stop, and waits
  // until it has detached (answered every request it read) or exited. True when requests it read
  // may be unanswered (it exited, or is still there after `timeout`): the caller then has the
  // kernel send them again (FuseMount::Resend). False when it was not serving.
  bool Retire(std::chrono::milliseconds timeout);

 private:
  Predecessor() = default;
  // The next message, or kExited when the process has exited (with `exit_too`, or once the
  // socket is closed), or kBusy at `deadline`.
  Result<std::string> Next(std::chrono::steady_clock::time_point deadline, bool exit_too);
  UniqueFd handover_;
  UniqueFd pidfd_;
  pid_t pid_ = -1;
  bool serving_ = false;
  std::vector<verify::Digest> served_;
};

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
  // After Go(), once this process has recorded a clean stop and released the store
  // (Store::ReleaseForSuccessor) while it still serves the mount: the successor opens the store
  // now instead of after this process's exit.
  // `served`: the digests of the views this process built, for the successor to build first.
  void Released(const std::vector<verify::Digest>& served);
  // After Released(): blocks until the successor serves the mount too and asks this process to
  // stop serving, or went away, or `timeout` passed. Then detach, and say so with Detached().
  void AwaitRetire(std::chrono::milliseconds timeout);
  void Detached();

  pid_t pid() const;
  bool went() const;  // Go() was sent

  struct Impl;

 private:
  explicit Successor(std::shared_ptr<Impl> impl);
  std::shared_ptr<Impl> impl_;
};

class Visibility;

// The mount's options from the config: the fd cache sized from `fd_limit`, blobs/ for root and
// the first admin group ([daemon] admin_gids: raw layer tars and configs would bypass the modes
// of the files in the layers), what `visibility` hides, and the views a predecessor served
// (built before the connection is read).
fusefs::MountOptions MountOptionsFor(const Config& config, std::uint64_t fd_limit,
                                     const Visibility& visibility,
                                     const std::optional<Predecessor>& predecessor);

// Started by a running digestd (`handover` set: SIGUSR2): warms the store's code paths, then
// waits (60 s at most) for the predecessor to release the store. Without `handover`: nullopt.
Result<std::optional<Predecessor>> AwaitPredecessor(UniqueFd handover);

}  // namespace digestd::daemon
