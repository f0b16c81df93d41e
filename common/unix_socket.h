#pragma once

// Listening Unix sockets for digestd's local APIs (the control socket, the snapshotter's gRPC
// socket): one way to create them, so both get the same care.

#include <sys/types.h>

#include <filesystem>
#include <string>

#include "common/error.h"
#include "common/unique_fd.h"

namespace digestd {

// The group named `name` (for a socket's owner group); kInvalidArgument if there is none.
Result<gid_t> GroupId(const std::string& name, Module module);

// Creates the parent directory, replaces a stale socket left at `path` (but refuses to replace
// anything that is not a socket), binds under a restrictive umask (never connectable by others,
// even for a moment), sets owner group `group` and `mode`, and listens. Returns the listening
// socket (blocking, close-on-exec).
Result<UniqueFd> ListenUnixSocket(const std::filesystem::path& path, mode_t mode, gid_t group,
                                  Module module);

}  // namespace digestd
