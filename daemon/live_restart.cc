#include "daemon/live_restart.h"
#include "daemon/errors.h"

#include "daemon/revalidate.h"

#include "common/fd_budget.h"

#include <poll.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/steady_timer.hpp>
#include <cerrno>
#include <cstring>

#include "common/log.h"
#include "common/service_manager.h"

namespace digestd::daemon {
namespace {

constexpr std::string_view kFuseName = "fuse";
constexpr std::string_view kStateName = "fuse-state";
constexpr std::string_view kHandoverName = "handover";
// The messages of the hand-over socket (SOCK_SEQPACKET: one message per write), in order.
constexpr std::string_view kStandby = "standby";  // successor -> predecessor: ready to take over
constexpr std::string_view kGo = "go";            // predecessor -> successor: you are the main process
constexpr std::string_view kReleased = "released";  // predecessor -> successor: the store is yours
                                                    // (I still serve the mount, read-only)
constexpr std::string_view kRetire = "retire";      // successor -> predecessor: I serve the mount too
constexpr std::string_view kDetached = "detached";  // predecessor -> successor: I answered all I read
// The longest message ("released" with the digests of the views the predecessor served).
constexpr std::size_t kMaxMessage = 64 * 1024;
constexpr std::string_view kExited{"\0exited", 7};  // not a message: Predecessor::Next saw its exit

std::string DescribeStatus(int status) {
  if (WIFEXITED(status)) return "exit status " + std::to_string(WEXITSTATUS(status));
  if (WIFSIGNALED(status)) return "killed by signal " + std::to_string(WTERMSIG(status));
  return "status " + std::to_string(status);
}

void StoreSession(fusefs::FuseMount& mount) {
  if (!ServiceManagerPresent()) return;
  auto log = Logger(Module::kDaemon);
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
    } else if (l.name == kHandoverName) {
      in.handover = std::move(l.fd);
    } else {
      Logger(Module::kDaemon)->warn("service manager passed an fd named {}: not ours, closed", l.name);
    }
  }
  return in;
}

Result<fusefs::FuseMountPtr> MountOrAdopt(store::Store& store, const fusefs::MountOptions& options,
                                          fusefs::SessionFds handed, bool predecessor_serving) {
  auto log = Logger(Module::kDaemon);
  if (handed.fuse || handed.state) {
    auto adopted = fusefs::FuseMount::Adopt(store, options, std::move(handed),
                                            /*resend=*/!predecessor_serving);
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

Result<Predecessor> Predecessor::Await(UniqueFd handover, std::chrono::milliseconds timeout) {
  auto log = Logger(Module::kDaemon);
  Predecessor p;
  p.pid_ = ::getppid();
  p.pidfd_ = UniqueFd(static_cast<int>(::syscall(SYS_pidfd_open, p.pid_, 0)));
  if (!p.pidfd_ || ::getppid() != p.pid_) {
    return DaemonError(Errc::kAborted, "hand-over: the process that started us (pid " +
                                             std::to_string(p.pid_) + ") is gone");
  }
  p.handover_ = std::move(handover);
  if (::send(p.handover_.Get(), kStandby.data(), kStandby.size(), MSG_NOSIGNAL) < 0) {
    return DaemonError(Errc::kAborted, "hand-over: predecessor pid " + std::to_string(p.pid_) +
                                             " went away before we stood by");
  }
  log->info("hand-over: standing by for pid {}", p.pid_);
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  // "go": the predecessor made us the service's main process; without it (it stopped or died
  // first) the manager still counts on the predecessor, and we must not take over.
  DIGESTD_ASSIGN_OR_RETURN(auto msg, p.Next(deadline, /*exit_too=*/false));
  if (msg != kGo) {
    return DaemonError(Errc::kAborted, "hand-over: predecessor pid " + std::to_string(p.pid_) +
                                             " exited without handing over");
  }
  // Then "released" (it gave up the store and serves the mount on until we retire it), or its
  // exit: every fd it held is closed once the pidfd is readable (the whole process has exited).
  DIGESTD_ASSIGN_OR_RETURN(msg, p.Next(deadline, /*exit_too=*/true));
  if (msg.starts_with(kReleased) && (msg.size() == kReleased.size() || msg[kReleased.size()] == '\n')) {
    // What it served: hints only (a digest that is no view here is skipped when warming).
    std::string_view rest = std::string_view(msg).substr(kReleased.size());
    while (!rest.empty()) {
      rest.remove_prefix(1);
      const std::string_view line = rest.substr(0, rest.find('\n'));
      rest.remove_prefix(line.size());
      if (auto d = verify::Digest::Parse(line)) p.served_.push_back(std::move(*d));
    }
    log->info("hand-over: pid {} released the store and serves until we do ({} views served); "
              "taking over", p.pid_, p.served_.size());
    p.serving_ = true;
    return p;
  }
  // Anything else before its exit is not the protocol: the exit is what we wait for then.
  while (msg != kExited) {
    DIGESTD_ASSIGN_OR_RETURN(msg, p.Next(deadline, /*exit_too=*/true));
  }
  log->info("hand-over: pid {} has exited; taking over", p.pid_);
  return p;
}

Result<std::string> Predecessor::Next(std::chrono::steady_clock::time_point deadline, bool exit_too) {
  for (;;) {
    // Messages first: one it sent just before it exited is still news.
    std::vector<pollfd> fds;
    if (handover_) fds.push_back({.fd = handover_.Get(), .events = POLLIN, .revents = 0});
    if (exit_too || !handover_) fds.push_back({.fd = pidfd_.Get(), .events = POLLIN, .revents = 0});
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) {
      return DaemonError(Errc::kBusy, "hand-over: predecessor pid " + std::to_string(pid_) +
                                            " did not answer in time");
    }
    const int n = ::poll(fds.data(), fds.size(), static_cast<int>(left.count()));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return SysError(Module::kDaemon, "hand-over: poll");
    if (n == 0) continue;
    if (handover_ && fds.front().revents != 0) {
      std::string buf(kMaxMessage, '\0');
      const ssize_t got = ::recv(handover_.Get(), buf.data(), buf.size(), MSG_DONTWAIT);
      if (got > 0) {
        buf.resize(static_cast<std::size_t>(got));
        return buf;
      }
      if (got < 0 && (errno == EAGAIN || errno == EINTR)) continue;
      handover_.Reset();  // it closed its end (it is exiting): from now on only its exit is news
      continue;
    }
    if (fds.back().fd == pidfd_.Get() && fds.back().revents != 0) return std::string(kExited);
  }
}

bool Predecessor::Retire(std::chrono::milliseconds timeout) {
  auto log = Logger(Module::kDaemon);
  if (!serving_) return false;
  serving_ = false;
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  if (handover_ && ::send(handover_.Get(), kRetire.data(), kRetire.size(), MSG_NOSIGNAL) < 0) {
    handover_.Reset();
  }
  for (;;) {
    auto msg = Next(deadline, /*exit_too=*/true);
    if (!msg) {
      log->error("hand-over: pid {} still serves after {} ms ({}); requests it read and never "
                 "answers are sent again",
                 pid_, timeout.count(), msg.error().ToString());
      return true;
    }
    if (*msg == kDetached) {
      log->info("hand-over: pid {} detached; serving alone", pid_);
      return false;
    }
    if (*msg == kExited) {
      log->warn("hand-over: pid {} exited without detaching; requests it read and never "
                "answered are sent again", pid_);
      return true;
    }
    // Anything else is not the protocol: its exit, or the deadline, comes next.
  }
}

struct Successor::Impl {
  explicit Impl(boost::asio::io_context& io) : sock(io), timer(io) {}
  boost::asio::posix::stream_descriptor sock;
  boost::asio::steady_timer timer;
  pid_t pid = -1;
  bool done = false;  // standby or failure seen
  bool went = false;  // Go() sent: it is the service now, never killed by us
  std::array<char, 16> buf{};

  // Kills and reaps the successor (it never became the main process).
  std::string Reap(bool kill) {
    if (pid <= 0) return "gone";
    if (kill) ::kill(pid, SIGKILL);
    int status = 0;
    pid_t r;
    do {
      r = ::waitpid(pid, &status, 0);
    } while (r < 0 && errno == EINTR);
    pid = -1;
    return r > 0 ? DescribeStatus(status) : std::string("not reaped");
  }
};

Successor::Successor(std::shared_ptr<Impl> impl) : impl_(std::move(impl)) {}

Successor::~Successor() {
  // Not handed over (still waiting, or abandoned after standby): it must not outlive this.
  if (impl_ && !impl_->went && impl_->pid > 0) impl_->Reap(true);
}

pid_t Successor::pid() const { return impl_->pid; }
bool Successor::went() const { return impl_->went; }

Result<std::unique_ptr<Successor>> Successor::Spawn(
    boost::asio::io_context& io, const std::vector<std::string>& args,
    const std::vector<std::pair<std::string, int>>& fds) {
  int pair[2];
  if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, pair) != 0) {
    return SysError(Module::kDaemon, "hand-over: socketpair");
  }
  UniqueFd ours(pair[0]), theirs(pair[1]);
  std::vector<std::pair<std::string, int>> passed = fds;
  passed.emplace_back(kHandoverName, theirs.Get());
  DIGESTD_ASSIGN_OR_RETURN(const pid_t pid, SpawnService(args, passed));
  theirs.Reset();
  auto impl = std::make_shared<Impl>(io);
  impl->pid = pid;
  boost::system::error_code ec;
  impl->sock.assign(ours.Release(), ec);
  if (ec) {
    impl->Reap(true);
    return DaemonError(Errc::kIo, "hand-over: watch the successor: " + ec.message());
  }
  return std::unique_ptr<Successor>(new Successor(std::move(impl)));
}

void Successor::Await(std::chrono::milliseconds timeout, std::function<void()> standby,
                      std::function<void(const std::string&)> failed) {
  auto s = impl_;
  auto fail = [s, failed](const std::string& why, bool kill) {
    if (s->done) return;
    s->done = true;
    s->timer.cancel();
    boost::system::error_code ignored;
    s->sock.close(ignored);
    const std::string status = s->Reap(kill);
    failed(why + " (" + status + ")");
  };
  s->timer.expires_after(timeout);
  s->timer.async_wait([fail, timeout](const boost::system::error_code& ec) {
    if (ec) return;
    fail("no standby within " + std::to_string(timeout.count()) + " ms", true);
  });
  s->sock.async_read_some(
      boost::asio::buffer(s->buf),
      [s, fail, standby](const boost::system::error_code& ec, std::size_t n) {
        if (s->done) return;
        if (ec || std::string_view(s->buf.data(), n) != kStandby) {
          // EOF: it exited (or exec failed) before standing by.
          fail(ec ? "it exited before standing by" : "it sent something other than standby", true);
          return;
        }
        s->done = true;
        s->timer.cancel();
        standby();
      });
}

Result<void> Successor::Go() {
  auto& s = *impl_;
  if (::send(s.sock.native_handle(), kGo.data(), kGo.size(), MSG_NOSIGNAL) < 0) {
    return SysError(Module::kDaemon, "hand-over: tell the successor to go");
  }
  s.went = true;
  return {};
}

void Successor::Released(const std::vector<verify::Digest>& served) {
  // "released", then the digests whose views this process built, one per line, as many as fit
  // in one message of kMaxMessage.
  std::string msg(kReleased);
  for (const auto& d : served) {
    const std::string line = "\n" + d.ToString();
    if (msg.size() + line.size() > kMaxMessage) break;
    msg += line;
  }
  // Best effort: without it the successor waits for this process's exit instead.
  (void)::send(impl_->sock.native_handle(), msg.data(), msg.size(), MSG_NOSIGNAL);
}

void Successor::AwaitRetire(std::chrono::milliseconds timeout) {
  const int fd = impl_->sock.native_handle();
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) {
      Logger(Module::kDaemon)->warn("hand-over: pid {} did not take the mount within {} ms; detaching",
                              impl_->pid, timeout.count());
      return;
    }
    pollfd p{.fd = fd, .events = POLLIN, .revents = 0};
    const int n = ::poll(&p, 1, static_cast<int>(left.count()));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) continue;
    char buf[16];
    const ssize_t got = ::recv(fd, buf, sizeof(buf), MSG_DONTWAIT);
    if (got == static_cast<ssize_t>(kRetire.size()) && std::string_view(buf, kRetire.size()) == kRetire) return;
    if (got < 0 && (errno == EAGAIN || errno == EINTR)) continue;
    // Its end closed (it died) or it said something else: nobody to wait for.
    Logger(Module::kDaemon)->warn("hand-over: pid {} went away before taking the mount; detaching",
                            impl_->pid);
    return;
  }
}

void Successor::Detached() {
  (void)::send(impl_->sock.native_handle(), kDetached.data(), kDetached.size(), MSG_NOSIGNAL);
}

void ReleaseMount(fusefs::FuseMount& mount, bool handover) {
  auto log = Logger(Module::kDaemon);
  if (handover && ServiceManagerPresent()) {
    if (auto r = mount.Detach(); !r) log->error("hand-over: {}", r.error().ToString());
    return;
  }
  if (auto r = mount.Unmount(); !r) log->error("unmount: {}", r.error().ToString());
  (void)RemoveStoredFds(kFuseName);
  (void)RemoveStoredFds(kStateName);
}

fusefs::MountOptions MountOptionsFor(const Config& config, std::uint64_t fd_limit,
                                     const Visibility& visibility,
                                     const std::optional<Predecessor>& predecessor) {
  const std::size_t budget = ContentCacheBudget(fd_limit);
  Logger(Module::kDaemon)->info("fd limit {}: the mount keeps at most {} backing fds open", fd_limit, budget);
  const Visibility* v = &visibility;
  return fusefs::MountOptions{
      .mountpoint = config.daemon.mountpoint.string(),
      .content_cache_entries = budget,
      .blobs_gid = config.daemon.admin_gids.empty() ? 0 : config.daemon.admin_gids.front(),
      .hidden = [v](const verify::Digest& d) { return v->Hidden(d); },
      .warm = predecessor ? predecessor->served() : std::vector<verify::Digest>{}};
}

Result<std::optional<Predecessor>> AwaitPredecessor(UniqueFd handover) {
  if (!handover) return std::optional<Predecessor>();
  store::Store::WarmUp();  // the open that follows runs warm
  DIGESTD_ASSIGN_OR_RETURN(auto p, Predecessor::Await(std::move(handover), std::chrono::seconds(60)));
  return std::optional<Predecessor>(std::move(p));
}

}  // namespace digestd::daemon
