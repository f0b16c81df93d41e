#include "common/service_manager.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>

namespace digestd {
namespace {

Error SmError(Errc code, std::string context) {
  return MakeError(Module::kDaemon, code, "service manager: " + std::move(context));
}

bool ValidName(std::string_view name) {
  // systemd's rule for FDNAME: printable ASCII, no colons, at most 255 characters.
  if (name.empty() || name.size() > 255) return false;
  for (char c : name) {
    if (c < 0x21 || c > 0x7e || c == ':') return false;
  }
  return true;
}

}  // namespace

bool ServiceManagerPresent() {
  const char* path = std::getenv("NOTIFY_SOCKET");
  return path != nullptr && path[0] != '\0';
}

Result<void> NotifyServiceManager(std::string_view state, std::span<const int> fds) {
  const char* path = std::getenv("NOTIFY_SOCKET");
  if (path == nullptr || path[0] == '\0') return {};
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  const std::size_t len = std::strlen(path);
  if (len >= sizeof(addr.sun_path) || (path[0] != '/' && path[0] != '@')) {
    return SmError(Errc::kInvalidArgument, "NOTIFY_SOCKET " + Quote(path) + " is not usable");
  }
  std::memcpy(addr.sun_path, path, len);
  if (addr.sun_path[0] == '@') addr.sun_path[0] = '\0';
  UniqueFd sock(::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  if (!sock) return SysError(Module::kDaemon, "notify socket");
  iovec iov{.iov_base = const_cast<char*>(state.data()), .iov_len = state.size()};
  msghdr msg{};
  msg.msg_name = &addr;
  msg.msg_namelen = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + len);
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  std::vector<char> control;
  if (!fds.empty()) {
    if (fds.size() > 253) return SmError(Errc::kTooLarge, "too many fds in one message");
    control.resize(CMSG_SPACE(sizeof(int) * fds.size()));
    msg.msg_control = control.data();
    msg.msg_controllen = control.size();
    cmsghdr* c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int) * fds.size());
    std::memcpy(CMSG_DATA(c), fds.data(), sizeof(int) * fds.size());
  }
  if (::sendmsg(sock.Get(), &msg, MSG_NOSIGNAL) < 0) {
    return SysError(Module::kDaemon, "notify the service manager");
  }
  return {};
}

Result<void> StoreFd(std::string_view name, int fd) {
  if (!ValidName(name)) return SmError(Errc::kInvalidArgument, "bad fd name " + Quote(name));
  const int fds[] = {fd};
  // FDPOLL=0: systemd would otherwise drop a stored fd on POLLERR/POLLHUP (from 246 on).
  return NotifyServiceManager("FDSTORE=1\nFDPOLL=0\nFDNAME=" + std::string(name), fds);
}

Result<void> RemoveStoredFds(std::string_view name) {
  if (!ValidName(name)) return SmError(Errc::kInvalidArgument, "bad fd name " + Quote(name));
  return NotifyServiceManager("FDSTOREREMOVE=1\nFDNAME=" + std::string(name));
}

namespace {

// argv[0] as execve() takes it: a path as given, a bare name looked up in $PATH.
std::string ResolveProgram(const std::string& name) {
  if (name.find('/') != std::string::npos) return name;
  const char* path = std::getenv("PATH");
  const std::string dirs = path ? path : "/usr/local/bin:/usr/bin:/bin";
  std::size_t start = 0;
  for (;;) {
    const auto colon = dirs.find(':', start);
    std::string dir = dirs.substr(start, colon == std::string::npos ? std::string::npos : colon - start);
    if (dir.empty()) dir = ".";
    std::string candidate = dir + "/" + name;
    if (::access(candidate.c_str(), X_OK) == 0) return candidate;
    if (colon == std::string::npos) return name;
    start = colon + 1;
  }
}

}  // namespace

Result<pid_t> SpawnService(const std::vector<std::string>& args,
                           const std::vector<std::pair<std::string, int>>& fds,
                           const std::vector<std::string>& extra_env) {
  if (args.empty()) return SmError(Errc::kInvalidArgument, "no program to start");
  const std::string program = ResolveProgram(args[0]);
  const std::string exec_failed = "exec " + program + " failed\n";
  std::vector<std::string> arg_copy = args;
  std::vector<char*> argv;
  for (auto& a : arg_copy) argv.push_back(a.data());
  argv.push_back(nullptr);
  std::vector<std::string> env;
  auto replaced = [&](const char* var) {
    const char* eq = std::strchr(var, '=');
    const std::size_t len = eq ? static_cast<std::size_t>(eq - var) + 1 : std::strlen(var);
    for (const auto& e : extra_env) {
      if (e.compare(0, len, var, len) == 0) return true;
    }
    return false;
  };
  for (char** e = environ; *e != nullptr; ++e) {
    if (std::strncmp(*e, "LISTEN_", 7) == 0 || replaced(*e)) continue;
    env.emplace_back(*e);
  }
  env.insert(env.end(), extra_env.begin(), extra_env.end());
  std::vector<int> src;
  char* pid_slot = nullptr;  // the child writes its pid here
  if (!fds.empty()) {
    std::string names;
    for (const auto& [name, fd] : fds) {
      src.push_back(fd);
      names += (names.empty() ? "" : ":") + name;
    }
    env.push_back("LISTEN_FDS=" + std::to_string(src.size()));
    env.push_back("LISTEN_FDNAMES=" + names);
    env.push_back("LISTEN_PID=" + std::string(24, '\0'));
    pid_slot = env.back().data() + std::strlen("LISTEN_PID=");
  }
  std::vector<char*> envp;
  for (auto& e : env) envp.push_back(e.data());
  envp.push_back(nullptr);
  const int count = static_cast<int>(src.size());
  std::vector<int> high(src.size(), -1);

  const pid_t pid = ::fork();
  if (pid < 0) return SysError(Module::kDaemon, "fork");
  if (pid > 0) return pid;
  // The child: async-signal-safe calls only.
  sigset_t none;
  sigemptyset(&none);
  ::sigprocmask(SIG_SETMASK, &none, nullptr);
  // To 3.., through numbers above that range, so that no source is overwritten early.
  for (std::size_t i = 0; i < high.size(); ++i) {
    high[i] = ::fcntl(src[i], F_DUPFD_CLOEXEC, 3 + count);
    if (high[i] < 0) ::_exit(126);
  }
  for (int i = 0; i < count; ++i) {
    if (::dup2(high[static_cast<std::size_t>(i)], 3 + i) < 0) ::_exit(126);
  }
  if (pid_slot != nullptr) {
    char digits[24];
    int n = 0;
    for (pid_t me = ::getpid(); me > 0 && n < 23; me /= 10) digits[n++] = static_cast<char>('0' + me % 10);
    for (int i = 0; i < n; ++i) pid_slot[i] = digits[n - 1 - i];
    pid_slot[n] = '\0';
  }
  ::execve(program.c_str(), argv.data(), envp.data());
  (void)!::write(STDERR_FILENO, exec_failed.data(), exec_failed.size());
  ::_exit(127);
}

std::vector<ListenFd> TakeListenFds() {
  std::vector<ListenFd> out;
  const char* pid = std::getenv("LISTEN_PID");
  const char* count = std::getenv("LISTEN_FDS");
  const char* names = std::getenv("LISTEN_FDNAMES");
  const std::string names_copy = names ? names : "";
  const bool ours = pid && count && std::strtoll(pid, nullptr, 10) == ::getpid();
  const long n = ours ? std::strtol(count, nullptr, 10) : 0;
  ::unsetenv("LISTEN_PID");
  ::unsetenv("LISTEN_FDS");
  ::unsetenv("LISTEN_FDNAMES");
  if (n <= 0 || n > 1024) return out;
  std::vector<std::string> split;
  std::size_t start = 0;
  while (start <= names_copy.size() && !names_copy.empty()) {
    const auto colon = names_copy.find(':', start);
    split.push_back(names_copy.substr(start, colon == std::string::npos ? std::string::npos
                                                                         : colon - start));
    if (colon == std::string::npos) break;
    start = colon + 1;
  }
  for (long i = 0; i < n; ++i) {
    const int fd = 3 + static_cast<int>(i);
    if (::fcntl(fd, F_SETFD, FD_CLOEXEC) != 0) continue;  // not open after all
    out.push_back({UniqueFd(fd), static_cast<std::size_t>(i) < split.size() && !split[i].empty()
                                     ? split[i]
                                     : std::string("unknown")});
  }
  return out;
}

}  // namespace digestd
