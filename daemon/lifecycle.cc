#include "daemon/lifecycle.h"

#include <fcntl.h>
#include <signal.h>

#include "common/log.h"
#include "common/service_manager.h"

namespace digestd::daemon {
namespace {

UniqueFd Dup(int fd) { return fd < 0 ? UniqueFd() : UniqueFd(::fcntl(fd, F_DUPFD_CLOEXEC, 3)); }

}  // namespace

Lifecycle::Lifecycle(Parts parts, int control_listener, int snapshotter_listener)
    : p_(std::move(parts)),
      control_listener_(Dup(control_listener)),
      snapshotter_listener_(Dup(snapshotter_listener)),
      signals_(p_.io, SIGTERM, SIGINT, SIGHUP) {
  signals_.add(SIGUSR2);
}

void Lifecycle::Start() {
  signals_.async_wait([this](const boost::system::error_code& ec, int sig) { OnSignal(ec, sig); });
}

void Lifecycle::OnSignal(const boost::system::error_code& ec, int sig) {
  if (ec) return;
  auto log = Logger(Module::kDaemon);
  if (sig == SIGHUP) {
    log->info("SIGHUP: reloading policy and trust");
    auto r = p_.visibility.ReloadPolicy();
    p_.auditor.Record({.type = "policy.reload",
                       .reason = r ? "" : r.error().ToString(),
                       .details = {{"ok", r.has_value()}, {"signal", "SIGHUP"}}});
    Start();
    return;
  }
  if (sig == SIGUSR2) {
    HandOver();
    Start();
    return;
  }
  log->info("signal {}: shutting down", sig);
  (void)NotifyServiceManager("STOPPING=1");
  StopServing();
}

void Lifecycle::StopServing() {
  if (p_.stop_servers) p_.stop_servers();
  p_.io.stop();
}

// Starts the next process (the binary on disk now: an upgrade) and hands over to it once it
// stands by; until then, and if it fails, this one serves on.
void Lifecycle::HandOver() {
  auto log = Logger(Module::kDaemon);
  if (successor_) {
    log->warn("SIGUSR2: a hand-over to pid {} is already under way", successor_->pid());
    return;
  }
  if (!p_.config.daemon.handover || !ServiceManagerPresent()) {
    log->warn("SIGUSR2: a hand-over needs a service manager to keep the session and "
              "[daemon] handover = true; ignored");
    return;
  }
  auto session = p_.mount.Export();
  if (!session) {
    log->error("SIGUSR2: cannot hand over: {}", session.error().ToString());
    return;
  }
  std::vector<std::pair<std::string, int>> fds = {{"fuse", session->fuse.Get()},
                                                  {"fuse-state", session->state.Get()}};
  if (control_listener_) fds.emplace_back("control", control_listener_.Get());
  if (snapshotter_listener_) fds.emplace_back("snapshotter", snapshotter_listener_.Get());
  auto spawned = Successor::Spawn(p_.io, p_.self_args, fds);
  if (!spawned) {
    log->error("SIGUSR2: cannot start a successor: {}", spawned.error().ToString());
    return;
  }
  successor_ = std::move(*spawned);
  const pid_t next = successor_->pid();
  log->info("SIGUSR2: started successor pid {}; serving until it stands by", next);
  successor_->Await(
      std::chrono::seconds(60),
      [this, next, log] {
        // The manager first: from here the successor is the service, this process is not.
        if (auto r = NotifyServiceManager("MAINPID=" + std::to_string(next)); !r) {
          log->error("hand-over to pid {} abandoned, still serving: {}", next, r.error().ToString());
          successor_.reset();
          return;
        }
        if (auto r = successor_->Go(); !r) log->error("hand-over: {}", r.error().ToString());
        log->info("hand-over: pid {} is the service now; stopping the control servers", next);
        StopServing();
      },
      [this, next, log](const std::string& why) {
        log->error("hand-over to pid {} failed, still serving: {}", next, why);
        p_.auditor.Record({.type = "daemon.handover_failed",
                           .reason = why,
                           .details = {{"successor_pid", next}}});
        successor_.reset();
      });
}

bool Lifecycle::Finish() {
  auto log = Logger(Module::kDaemon);
  if (successor_ && !successor_->went()) successor_.reset();  // it never took over: it goes with us
  // While the mount still serves: the successor's store open then has little log to replay.
  if (auto r = p_.store.FlushIndex(); !r) log->warn("index not flushed: {}", r.error().ToString());
  // The next start skips recovery's walks when nothing was in progress (a restart's stall).
  bool clean = false;
  if (successor_ && successor_->went()) {
    // A hand-over: the store goes to the successor while this process still serves the mount
    // (read-only), and the successor serves it too before this one stops reading.
    clean = p_.store.MarkCleanShutdown();
    if (clean && p_.store.ReleaseForSuccessor()) {
      successor_->Released(p_.mount.ns().Built());
      log->info("hand-over: store released to pid {}; serving until it takes the mount",
                successor_->pid());
      successor_->AwaitRetire(std::chrono::seconds(30));
    }
    ReleaseMount(p_.mount, p_.config.daemon.handover);
    successor_->Detached();
  } else {
    ReleaseMount(p_.mount, p_.config.daemon.handover);
    clean = p_.store.MarkCleanShutdown();
  }
  log->info("stopped{}", clean ? " (clean stop recorded)" : "");
  return clean;
}

}  // namespace digestd::daemon
