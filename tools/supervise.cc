// digestd-supervise: the service manager's part of digestd's live restart, for hosts and tests
// without systemd. It runs COMMAND the way systemd runs digestd.service (Type=notify,
// Restart=always, FileDescriptorStoreMax=, socket units): it keeps the fds the service stores
// (FDSTORE=1, e.g. the FUSE session), restarts the service when it exits, and hands the stored
// fds and its listening sockets to the next one (LISTEN_FDS, LISTEN_FDNAMES). The service speaks
// the same protocol to it as to systemd (common/service_manager.h).
//
//   digestd-supervise [--restart-sec S] [--socket NAME=PATH] [--unmount PATH] -- COMMAND [ARGS...]
//
//   SIGHUP           graceful restart: SIGTERM to the service, wait for it, start COMMAND again
//                    (exec'd afresh: replace the binary, then SIGHUP, to upgrade)
//   SIGTERM, SIGINT  stop: SIGTERM to the service, wait, drop the fd store, and detach the mount
//                    at --unmount PATH (without its session it could only answer ENOTCONN)
//   SIGUSR1          stop as above but keep the mount and print the fd store's names (tests)
//   SIGUSR2          passed on to the service: digestd starts its successor itself and hands over
//                    to it once it stands by (the successor becomes the main process: MAINPID=)
//
// Only the service's main process may store fds (its credentials are checked, as systemd's
// NotifyAccess=main does); the notify socket lives in a private 0700 directory.
// The service may name another process as the main one (MAINPID=, as systemd allows the main
// process to): it must be a child of the current main process; this supervisor is a child
// subreaper, so that process becomes its child when the old main process exits.
// Logs one line per event on stderr: "supervise: started pid N fds=a,b", "supervise: ready pid
// N", "supervise: main pid N (was M)", "supervise: pid N exited status S", "supervise: stored
// NAME", "supervise: stopped".

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "common/service_manager.h"
#include "common/unix_socket.h"
#include "common/unique_fd.h"

namespace {

using digestd::UniqueFd;
using Clock = std::chrono::steady_clock;

void Log(const std::string& line) {
  std::fprintf(stderr, "supervise: %s\n", line.c_str());
  std::fflush(stderr);
}

[[noreturn]] void Die(const std::string& why) {
  Log("fatal: " + why);
  std::exit(1);
}

struct Options {
  double restart_sec = 0.1;
  std::vector<std::pair<std::string, std::string>> sockets;  // name, path
  std::string unmount;
  std::vector<std::string> command;
};

Options Parse(int argc, char** argv) {
  Options o;
  int i = 1;
  auto usage = [] {
    std::fprintf(stderr,
                 "usage: digestd-supervise [--restart-sec S] [--socket NAME=PATH]... "
                 "[--unmount PATH] -- COMMAND [ARGS...]\n");
    std::exit(2);
  };
  for (; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--") {
      ++i;
      break;
    }
    if (i + 1 >= argc) usage();
    if (a == "--restart-sec") {
      char* end = nullptr;
      o.restart_sec = std::strtod(argv[++i], &end);
      if (*end != '\0' || o.restart_sec < 0 || o.restart_sec > 3600) usage();
    } else if (a == "--socket") {
      const std::string spec = argv[++i];
      const auto eq = spec.find('=');
      if (eq == std::string::npos || eq == 0 || spec.size() < eq + 2 || spec[eq + 1] != '/') usage();
      o.sockets.emplace_back(spec.substr(0, eq), spec.substr(eq + 1));
    } else if (a == "--unmount") {
      o.unmount = argv[++i];
    } else {
      usage();
    }
  }
  for (; i < argc; ++i) o.command.emplace_back(argv[i]);
  if (o.command.empty()) usage();
  return o;
}

class Supervisor {
 public:
  explicit Supervisor(Options o) : opts_(std::move(o)) {}

  int Run() {
    sigset_t set;
    sigemptyset(&set);
    for (int s : {SIGCHLD, SIGHUP, SIGTERM, SIGINT, SIGUSR1, SIGUSR2}) sigaddset(&set, s);
    if (sigprocmask(SIG_BLOCK, &set, nullptr) != 0) Die("sigprocmask");
    sigfd_ = UniqueFd(::signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK));
    if (!sigfd_) Die("signalfd");
    // A successor the service starts itself is reparented to us when its parent exits.
    if (::prctl(PR_SET_CHILD_SUBREAPER, 1) != 0) Die("PR_SET_CHILD_SUBREAPER");
    OpenNotifySocket();
    for (const auto& [name, path] : opts_.sockets) {
      auto fd = digestd::ListenUnixSocket(path, 0660, ::getegid(), digestd::Module::kTools);
      if (!fd) Die(fd.error().ToString());
      listen_.emplace_back(name, std::move(*fd));
    }
    Start();
    while (true) {
      int timeout = -1;
      if (restart_at_) {
        const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(*restart_at_ - Clock::now());
        timeout = static_cast<int>(std::max<long long>(0, left.count()));
      }
      pollfd p[2] = {{.fd = sigfd_.Get(), .events = POLLIN, .revents = 0},
                     {.fd = notify_.Get(), .events = POLLIN, .revents = 0}};
      if (::poll(p, 2, timeout) < 0 && errno != EINTR) Die("poll");
      if (p[1].revents & POLLIN) ReceiveNotify();
      if (p[0].revents & POLLIN) {
        signalfd_siginfo si{};
        while (::read(sigfd_.Get(), &si, sizeof(si)) == sizeof(si)) {
          if (int rc = OnSignal(static_cast<int>(si.ssi_signo)); rc >= 0) return rc;
        }
      }
      if (restart_at_ && Clock::now() >= *restart_at_ && child_ <= 0) {
        restart_at_.reset();
        Start();
      }
    }
  }

 private:
  void OpenNotifySocket() {
    const char* base = std::getenv("RUNTIME_DIRECTORY");
    std::string tmpl = std::string(base && base[0] == '/' ? base : "/tmp") + "/digestd-supervise.XXXXXX";
    if (::mkdtemp(tmpl.data()) == nullptr) Die("mkdtemp " + tmpl);  // 0700
    dir_ = tmpl;
    notify_path_ = dir_ + "/notify";
    notify_ = UniqueFd(::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
    if (!notify_) Die("socket");
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    if (notify_path_.size() >= sizeof(addr.sun_path)) Die("notify path too long");
    std::memcpy(addr.sun_path, notify_path_.c_str(), notify_path_.size());
    if (::bind(notify_.Get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) Die("bind");
    const int one = 1;
    if (::setsockopt(notify_.Get(), SOL_SOCKET, SO_PASSCRED, &one, sizeof(one)) != 0) Die("SO_PASSCRED");
  }

  void Start() {
    std::vector<std::pair<std::string, int>> fds;
    for (const auto& [name, fd] : listen_) fds.emplace_back(name, fd.Get());
    for (const auto& [name, list] : store_) {
      for (const auto& fd : list) fds.emplace_back(name, fd.Get());
    }
    std::string names;
    for (const auto& [name, fd] : fds) names += (names.empty() ? "" : ":") + name;
    auto pid = digestd::SpawnService(opts_.command, fds, {"NOTIFY_SOCKET=" + notify_path_});
    if (!pid) Die(pid.error().ToString());
    child_ = *pid;
    Log("started pid " + std::to_string(*pid) + " fds=" + (names.empty() ? "-" : names));
  }

  void ReceiveNotify() {
    for (;;) {
      char buf[4096];
      alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * 253) + CMSG_SPACE(sizeof(ucred))];
      iovec iov{.iov_base = buf, .iov_len = sizeof(buf) - 1};
      msghdr msg{};
      msg.msg_iov = &iov;
      msg.msg_iovlen = 1;
      msg.msg_control = control;
      msg.msg_controllen = sizeof(control);
      const ssize_t n = ::recvmsg(notify_.Get(), &msg, MSG_CMSG_CLOEXEC | MSG_DONTWAIT);
      if (n < 0) return;
      std::vector<UniqueFd> fds;
      pid_t sender = 0;
      for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c)) {
        if (c->cmsg_level != SOL_SOCKET) continue;
        if (c->cmsg_type == SCM_RIGHTS) {
          const std::size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
          for (std::size_t i = 0; i < count; ++i) {
            int fd;
            std::memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
            fds.emplace_back(fd);
          }
        } else if (c->cmsg_type == SCM_CREDENTIALS) {
          ucred cred{};
          std::memcpy(&cred, CMSG_DATA(c), sizeof(cred));
          sender = cred.pid;
        }
      }
      if ((msg.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) != 0) {
        Log("dropped a truncated notification");
        continue;
      }
      if (sender <= 0 || sender != child_) {
        Log("ignored a notification from pid " + std::to_string(sender) + " (not the service)");
        continue;  // its fds close here
      }
      buf[n] = '\0';
      std::map<std::string, std::string> kv;
      for (char* line = std::strtok(buf, "\n"); line != nullptr; line = std::strtok(nullptr, "\n")) {
        const char* eq = std::strchr(line, '=');
        if (eq != nullptr) kv[std::string(line, static_cast<std::size_t>(eq - line))] = eq + 1;
      }
      const std::string name = kv.count("FDNAME") ? kv["FDNAME"] : "stored";
      if (kv["FDSTORE"] == "1" && !fds.empty()) {
        auto& slot = store_[name];
        slot.clear();  // replaces what was stored under the name
        for (auto& fd : fds) slot.push_back(std::move(fd));
        Log("stored " + name);
      }
      if (kv["FDSTOREREMOVE"] == "1") {
        store_.erase(name);
        Log("removed " + name);
      }
      if (kv.count("MAINPID")) SetMainPid(kv["MAINPID"]);
      if (kv["READY"] == "1") Log("ready pid " + std::to_string(child_));
      if (kv["STOPPING"] == "1") Log("stopping pid " + std::to_string(child_));
    }
  }

  // MAINPID=N from the main process: N must be its child (systemd requires it in the unit's cgroup).
  void SetMainPid(const std::string& value) {
    char* end = nullptr;
    const long pid = std::strtol(value.c_str(), &end, 10);
    if (value.empty() || *end != '\0' || pid <= 1 || pid == child_) {
      Log("ignored MAINPID=" + value);
      return;
    }
    if (ParentOf(static_cast<pid_t>(pid)) != child_) {
      Log("ignored MAINPID=" + value + " (not a child of pid " + std::to_string(child_) + ")");
      return;
    }
    Log("main pid " + value + " (was " + std::to_string(child_) + ")");
    child_ = static_cast<pid_t>(pid);
  }

  static pid_t ParentOf(pid_t pid) {
    std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
    std::string stat((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    const auto close = stat.rfind(')');  // the command name may hold anything
    if (close == std::string::npos) return -1;
    char state = 0;
    int ppid = -1;
    if (std::sscanf(stat.c_str() + close + 1, " %c %d", &state, &ppid) != 2) return -1;
    return ppid;
  }

  // Returns an exit code to leave with, or -1 to go on.
  int OnSignal(int sig) {
    if (sig == SIGCHLD) {
      int status = 0;
      pid_t pid;
      while ((pid = ::waitpid(-1, &status, WNOHANG)) > 0) {
        if (pid != child_) {
          Log("pid " + std::to_string(pid) + " exited (not the main process)");
          continue;
        }
        ReceiveNotify();  // what it sent before it went
        Log("pid " + std::to_string(pid) + " exited status " +
            (WIFSIGNALED(status) ? "signal " + std::to_string(WTERMSIG(status))
                                 : std::to_string(WEXITSTATUS(status))));
        child_ = 0;
        if (stopping_) return Finish();
        if (restart_now_) {
          restart_now_ = false;
          Start();
        } else {
          restart_at_ = Clock::now() + std::chrono::microseconds(static_cast<long long>(opts_.restart_sec * 1e6));
        }
      }
      return -1;
    }
    if (sig == SIGUSR2) {
      if (child_ > 0) {
        Log("hand-over requested from pid " + std::to_string(child_));
        ::kill(child_, SIGUSR2);
      }
      return -1;
    }
    if (sig == SIGHUP) {
      if (child_ > 0) {
        restart_now_ = true;
        ::kill(child_, SIGTERM);
      } else {
        restart_at_ = Clock::now();
      }
      return -1;
    }
    // SIGTERM, SIGINT, SIGUSR1: stop.
    stopping_ = true;
    keep_mount_ = sig == SIGUSR1;
    if (child_ > 0) {
      ::kill(child_, SIGTERM);
      return -1;
    }
    return Finish();
  }

  int Finish() {
    std::string names;
    for (const auto& [name, list] : store_) names += (names.empty() ? "" : ",") + name;
    store_.clear();
    if (!opts_.unmount.empty() && !keep_mount_) {
      if (::umount2(opts_.unmount.c_str(), MNT_DETACH) == 0) Log("detached " + opts_.unmount);
    }
    for (const auto& [name, path] : opts_.sockets) ::unlink(path.c_str());
    ::unlink(notify_path_.c_str());
    ::rmdir(dir_.c_str());
    Log("stopped (fd store had: " + (names.empty() ? std::string("-") : names) + ")");
    return 0;
  }

  Options opts_;
  UniqueFd sigfd_;
  UniqueFd notify_;
  std::string dir_;
  std::string notify_path_;
  std::vector<std::pair<std::string, UniqueFd>> listen_;
  std::map<std::string, std::vector<UniqueFd>> store_;
  pid_t child_ = 0;
  bool stopping_ = false;
  bool keep_mount_ = false;
  bool restart_now_ = false;
  std::optional<Clock::time_point> restart_at_;
};

}  // namespace

int main(int argc, char** argv) { return Supervisor(Parse(argc, argv)).Run(); }
