#pragma once

// The service manager's side channel, as systemd defines it (sd_notify(3), sd_listen_fds(3),
// "File Descriptor Store" in systemd.service(5)), without libsystemd: the same protocol is
// spoken by systemd and by tools/digestd-supervise, so the daemon has one code path for both.
//   Notify: one datagram to $NOTIFY_SOCKET ("KEY=VALUE\n..."), with fds as SCM_RIGHTS
//           ("FDSTORE=1" + "FDNAME=<name>" puts them in the manager's fd store).
//   Listen: at start, fds 3.. passed by the manager ($LISTEN_PID is us, $LISTEN_FDS many, named
//           by $LISTEN_FDNAMES, colon-separated): sockets, and whatever the fd store held.

#include <sys/types.h>

#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/error.h"
#include "common/unique_fd.h"

namespace digestd {

// Whether $NOTIFY_SOCKET is set (a manager listens).
bool ServiceManagerPresent();

// Sends `state` (with `fds`, if any) to the manager. A no-op success without a manager.
Result<void> NotifyServiceManager(std::string_view state, std::span<const int> fds = {});

// Puts `fd` into the manager's fd store under `name` (replacing what a previous call stored under
// that name where the manager supports it: digestd-supervise does; systemd keeps both copies).
Result<void> StoreFd(std::string_view name, int fd);
// Drops every fd stored under `name`.
Result<void> RemoveStoredFds(std::string_view name);

struct ListenFd {
  UniqueFd fd;
  std::string name;  // "unknown" when the manager gave no names
};
// Starts `argv` the way a service manager starts a service: argv[0] a path, or a name looked up
// in $PATH; `fds` become 3.. with $LISTEN_FDS, $LISTEN_FDNAMES (their names) and $LISTEN_PID
// (none of them when `fds` is empty); the environment is this process's without LISTEN_*, plus
// `env` ("KEY=VALUE", replacing a variable of that name); the signal mask is emptied. Everything
// is prepared before fork, so a threaded process may call it. Returns the child's pid; a failed
// exec ends the child with status 127.
Result<pid_t> SpawnService(const std::vector<std::string>& argv,
                           const std::vector<std::pair<std::string, int>>& fds,
                           const std::vector<std::string>& env = {});

// The fds the manager passed to this process, once: marks them close-on-exec and unsets the
// LISTEN_* variables (children must not take them). Empty when none were passed to us.
std::vector<ListenFd> TakeListenFds();

}  // namespace digestd
