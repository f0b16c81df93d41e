#include "common/unix_socket.h"

#include <grp.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstring>

namespace digestd {

Result<gid_t> GroupId(const std::string& name, Module module) {
  const struct group* g = ::getgrnam(name.c_str());
  if (g == nullptr) {
    return MakeError(module, Errc::kInvalidArgument, "group " + Quote(name) + " does not exist");
  }
  return g->gr_gid;
}

Result<UniqueFd> ListenUnixSocket(const std::filesystem::path& path, mode_t mode, gid_t group,
                                  Module module) {
  const std::string p = path.string();
  sockaddr_un addr{};
  if (p.empty() || p.size() >= sizeof addr.sun_path) {
    return MakeError(module, Errc::kInvalidArgument, "bad socket path " + Quote(p));
  }
  std::error_code fs_ec;
  std::filesystem::create_directories(path.parent_path(), fs_ec);
  // A socket left by a previous run (the store lock already proved no daemon is running).
  struct stat st {};
  if (::lstat(p.c_str(), &st) == 0) {
    if (!S_ISSOCK(st.st_mode)) {
      return MakeError(module, Errc::kBusy,
                       Quote(p) + " exists and is not a socket; refusing to replace it");
    }
    ::unlink(p.c_str());
  }
  UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!fd) return SysError(module, "socket");
  addr.sun_family = AF_UNIX;
  std::memcpy(addr.sun_path, p.c_str(), p.size());
  // Bind under a restrictive umask, then open up to `mode` for the group.
  const mode_t old = ::umask(0177);
  const int bound = ::bind(fd.Get(), reinterpret_cast<const sockaddr*>(&addr), sizeof addr);
  const int bind_errno = errno;
  ::umask(old);
  if (bound != 0) return SysError(module, "bind " + Quote(p), bind_errno);
  if (::chown(p.c_str(), ::geteuid(), group) != 0 || ::chmod(p.c_str(), mode) != 0) {
    return SysError(module, "set owner and mode of " + Quote(p));
  }
  if (::listen(fd.Get(), 64) != 0) return SysError(module, "listen on " + Quote(p));
  return fd;
}

}  // namespace digestd
