#pragma once

// Serves Snapshots as containerd's `containerd.services.snapshots.v1.Snapshots` gRPC service on a
// Unix socket, for a `[proxy_plugins]` entry of type "snapshot". Connections are accepted here,
// the peer's credentials checked with SO_PEERCRED (`authorize`, the same rules as the control
// socket), and only then handed to gRPC; a refused peer is closed at once.

#include <sys/types.h>
#include <unistd.h>

#include <filesystem>

#include "common/unique_fd.h"
#include <functional>
#include <memory>
#include <string>

#include "common/error.h"
#include "snapshotter/snapshots.h"

namespace digestd::metrics {
class Registry;
}

namespace digestd::snapshotter {

struct GrpcServerOptions {
  std::filesystem::path socket;
  // A listening socket handed over by the service manager (digestd-snapshotter.socket): used
  // instead of creating `socket`, and left in place at Stop() (the manager owns it; connections
  // queue there while digestd restarts).
  UniqueFd listener;
  mode_t mode = 0660;
  gid_t group = ::getegid();  // owner group of the socket
  // Whether a peer (uid, gid) may use the service.
  std::function<bool(uid_t, gid_t)> authorize;
  // Told about every refused connection and every failed call (for the log and audit).
  std::function<void(const std::string&)> on_refusal;
};

class GrpcServer {
 public:
  static Result<std::unique_ptr<GrpcServer>> Start(Snapshots& snapshots, GrpcServerOptions options);
  ~GrpcServer();  // stops
  void Stop();
  // accept() failures from fd or memory shortage (each backed off, never fatal).
  std::uint64_t accept_failures() const;
  // digestd_accept_backoffs_total{socket="snapshotter"}.
  void RegisterMetrics(metrics::Registry& registry) const;

 private:
  struct Impl;
  explicit GrpcServer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// The snapshotter as digestd runs it: the snapshots over the store and the mount, served to
// containerd over gRPC.
struct SnapshotterService {
  std::unique_ptr<Snapshots> snapshots;
  std::unique_ptr<GrpcServer> server;  // after snapshots: destroyed (stopped) before them
};
Result<SnapshotterService> StartService(store::Store& store, SnapshotsOptions snapshots,
                             GrpcServerOptions server);

}  // namespace digestd::snapshotter
