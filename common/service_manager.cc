#include "common/service_manager.h"

#include <fcntl.h>
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
