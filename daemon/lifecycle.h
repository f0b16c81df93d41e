#pragma once

// The running daemon's lifecycle, after main has built its parts: the signals (SIGHUP reloads
// policy and trust, SIGTERM/SIGINT stop, SIGUSR2 hands over to a successor process), and the stop
// sequence once the event loop has returned (flush the index while the mount still serves,
// record a clean stop, give the store to a successor that took over, release the mount).
// docs/architecture.md "Hand-over to a waiting successor" draws the protocol.
//
// Thread safety: Start and the signal handlers run on the io thread; Finish on main's thread
// after io.run() returned.

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <boost/asio/io_context.hpp>
#include <boost/asio/signal_set.hpp>

#include "common/unique_fd.h"
#include "daemon/auditor.h"
#include "daemon/config.h"
#include "daemon/live_restart.h"
#include "daemon/revalidate.h"
#include "fusefs/fuse_mount.h"
#include "store/store.h"

namespace digestd::daemon {

class Lifecycle {
 public:
  struct Parts {
    boost::asio::io_context& io;
    store::Store& store;
    fusefs::FuseMount& mount;
    Auditor& auditor;
    Visibility& visibility;
    const Config& config;
    std::vector<std::string> self_args;  // what a successor runs (argv)
    // Stops accepting on the control servers (the control API, the snapshotter).
    std::function<void()> stop_servers;
  };

  // `control` and `snapshotter`: the listening sockets the service manager handed over (socket
  // units), passed on to a successor; this keeps its own duplicates of them.
  Lifecycle(Parts parts, int control_listener, int snapshotter_listener);

  // Installs the signal handlers.
  void Start();
  // The stop sequence, after io.run() returned; true if a clean stop was recorded.
  bool Finish();

 private:
  void OnSignal(const boost::system::error_code& ec, int sig);
  void HandOver();
  void StopServing();

  Parts p_;
  UniqueFd control_listener_;
  UniqueFd snapshotter_listener_;
  boost::asio::signal_set signals_;
  std::unique_ptr<Successor> successor_;
};

}  // namespace digestd::daemon
