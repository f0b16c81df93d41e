#include "daemon/live_restart.h"

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
// The two messages of the hand-over socket (SOCK_SEQPACKET: one message per write).
constexpr std::string_view kStandby = "standby";  // successor -> predecessor
constexpr std::string_view kGo = "go";            // predecessor -> successor: you are the main process
constexpr std::string_view kReleased = "released";  // predecessor -> successor: mount and store are free

Error HandoverError(Errc code, std::string what) {
  return MakeError(Module::kDaemon, code, "hand-over: " + std::move(what));
}

std::string DescribeStatus(int status) {
  if (WIFEXITED(status)) return "exit status " + std::to_string(WEXITSTATUS(status));
  if (WIFSIGNALED(status)) return "killed by signal " + std::to_string(WTERMSIG(status));
  return "status " + std::to_string(status);
}

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
    } else if (l.name == kHandoverName) {
      in.handover = std::move(l.fd);
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

Result<void> AwaitPredecessor(UniqueFd handover, std::chrono::milliseconds timeout) {
  auto log = Logger("digestd");
  const pid_t predecessor = ::getppid();
  UniqueFd pidfd(static_cast<int>(::syscall(SYS_pidfd_open, predecessor, 0)));
  if (!pidfd || ::getppid() != predecessor) {
    return HandoverError(Errc::kAborted, "the process that started us (pid " +
                                             std::to_string(predecessor) + ") is gone");
  }
  if (::send(handover.Get(), kStandby.data(), kStandby.size(), MSG_NOSIGNAL) < 0) {
    return HandoverError(Errc::kAborted, "predecessor pid " + std::to_string(predecessor) +
                                             " went away before we stood by");
  }
  log->info("hand-over: standing by for pid {}", predecessor);
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  // Waits until one of `fds` is readable or hung up, and says which.
  auto wait = [&](std::vector<int> fds) -> Result<std::size_t> {
    std::vector<pollfd> p;
    for (int fd : fds) p.push_back({.fd = fd, .events = POLLIN, .revents = 0});
    for (;;) {
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
          deadline - std::chrono::steady_clock::now());
      if (left.count() <= 0) {
        return HandoverError(Errc::kBusy, "predecessor pid " + std::to_string(predecessor) +
                                              " did not hand over within " +
                                              std::to_string(timeout.count()) + " ms");
      }
      const int n = ::poll(p.data(), p.size(), static_cast<int>(left.count()));
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) return SysError(Module::kDaemon, "hand-over: poll");
      for (std::size_t i = 0; i < p.size(); ++i) {
        if (p[i].revents != 0) return i;
      }
    }
  };
  // "go": the predecessor made us the service's main process; without it (it stopped or died
  // first) the manager still counts on the predecessor, and we must not take over.
  DIGESTD_RETURN_IF_ERROR(wait({handover.Get()}));
  char buf[16];
  const ssize_t n = ::recv(handover.Get(), buf, sizeof(buf), 0);
  if (n != static_cast<ssize_t>(kGo.size()) || std::string_view(buf, kGo.size()) != kGo) {
    return HandoverError(Errc::kAborted, "predecessor pid " + std::to_string(predecessor) +
                                             " exited without handing over");
  }
  // Then "released" (it detached from the mount and closed the store), or its exit: every fd it
  // held is closed once the pidfd is readable (the whole process has exited).
  bool listening = true;
  for (;;) {
    DIGESTD_ASSIGN_OR_RETURN(const std::size_t which,
                             listening ? wait({pidfd.Get(), handover.Get()}) : wait({pidfd.Get()}));
    if (which == 0) {
      log->info("hand-over: pid {} has exited; taking over", predecessor);
      return {};
    }
    const ssize_t got = ::recv(handover.Get(), buf, sizeof(buf), MSG_DONTWAIT);
    if (got == static_cast<ssize_t>(kReleased.size()) &&
        std::string_view(buf, kReleased.size()) == kReleased) {
      log->info("hand-over: pid {} released the mount and the store; taking over", predecessor);
      return {};
    }
    listening = false;  // its end closed (it is exiting): the pidfd says when it is done
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
    return HandoverError(Errc::kIo, "watch the successor: " + ec.message());
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

void Successor::Released() {
  // Best effort: without it the successor waits for this process's exit instead.
  (void)::send(impl_->sock.native_handle(), kReleased.data(), kReleased.size(), MSG_NOSIGNAL);
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
