#pragma once

// The control API: HTTP/1.1 + JSON over a Unix socket (Beast), versioned under /v1. Each peer is
// identified by SO_PEERCRED and gets a role from [daemon] in the config: admins may change
// things (pull, deny, gc, reload), readers may look (health, images, audit, deny list, metrics),
// anyone else gets 403 and an audit event. Requests are bounded (16 KiB of headers, 1 MiB of
// body, 30 s to send them); a malformed request gets a 4xx with a message and the connection is
// closed, other connections are unaffected. docs/api.md lists every endpoint.
//
// This class is the transport (Beast, limits, streaming: control_server.cc); the route table and
// one handler file per resource are in daemon/api/ (api.h says how they fit).
//
// Thread safety: runs on the io_context's thread; blocking store work goes to the blocking pool.

#include <sys/types.h>

#include <functional>
#include <memory>
#include <string>

#include <boost/asio/io_context.hpp>
#include <boost/asio/local/stream_protocol.hpp>

#include "common/error.h"
#include "common/metrics.h"
#include "common/unique_fd.h"
#include "daemon/auditor.h"
#include "daemon/config.h"
#include "daemon/pull.h"
#include "daemon/revalidate.h"
#include "store/store.h"
#include "verify/policy_set.h"

namespace digestd::fusefs {
class FuseMount;
}

namespace digestd::daemon {

struct Peer {
  pid_t pid = 0;
  uid_t uid = 0;
  gid_t gid = 0;
};

enum class Role { kNone, kReader, kAdmin };
Role RoleFor(const DaemonConfig& config, const Peer& peer);
// A check that admits admins only (the snapshotter's socket: containerd runs as root).
std::function<bool(uid_t, gid_t)> AdminsOnly(const DaemonConfig& config);
std::string_view RoleName(Role role);

struct ControlDeps {
  store::Store& store;
  verify::PolicySet& policies;
  const Config& config;
  Puller& puller;
  // The daemon's blocking executor (GC, wipes, audit pruning run there).
  asio::thread_pool& blocking;
  fusefs::FuseMount* mount = nullptr;  // for metrics and paths; may be null in tests
  // What the mount hides, re-evaluated after reloads, deny changes and pulls; may be null.
  Visibility* visibility = nullptr;
  // Every event the API records goes through it (clipped, refusals rate-limited per peer).
  Auditor* auditor = nullptr;
  // The process's metrics registry: the API registers its own metrics into it at Start and
  // renders it at /v1/metrics (null: the server keeps one of its own, with the API's only).
  metrics::Registry* metrics = nullptr;
};

class ControlServer {
 public:
  ControlServer(asio::io_context& io, ControlDeps deps);
  ~ControlServer();

  // Binds the socket (replacing a stale one), mode 0660, group per config; starts accepting.
  // With `listener` (a socket the service manager handed over: digestd.socket), accepts on it
  // instead, and leaves it in place at Stop() (connections queue there across a restart).
  Result<void> Start(UniqueFd listener = {});
  // Stops accepting; connections in progress finish their current request.
  void Stop();
  // Connections open now (each is a coroutine and an fd; bounded by kMaxConnections).
  std::size_t connections() const;

  struct Impl;

 private:
  std::shared_ptr<Impl> impl_;
};

}  // namespace digestd::daemon
