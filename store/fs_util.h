#pragma once

// Filesystem helpers for store/ (internal header). Every path below the store root is opened with
// openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS), so a symlink planted in
// the cache directory can never redirect the store outside its root.

#include <sys/stat.h>

#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <string_view>

#include "common/error.h"
#include "common/unique_fd.h"

namespace digestd::store {

// Opens `rel` (relative, no "..", no symlinks) below `dirfd`. O_CLOEXEC is always added.
Result<UniqueFd> OpenBeneath(int dirfd, std::string_view rel, int flags, mode_t mode = 0);

// Opens or creates directory `name` in `dirfd` with `mode`; refuses a non-directory or a directory
// owned by another user.
Result<UniqueFd> EnsureDir(int dirfd, std::string_view name, mode_t mode);

Result<void> FsyncFd(int fd, std::string_view what);

// Removes every entry inside directory `dirfd` (recursively, never following symlinks).
// Returns the number of top-level entries removed.
Result<std::uint64_t> ClearDir(int dirfd);

// Removes `name` in `dirfd`, recursively when it is a directory; never follows symlinks.
Result<void> RemoveEntry(int dirfd, std::string_view name);

// Calls fn(name, d_type) for each entry of `dirfd` except "." and ".."; stops on the first error
// returned by fn.
Result<void> ForEachEntry(int dirfd, const std::function<Result<void>(std::string_view name,
                                                                      unsigned char type)>& fn);

// Overwrites regular file `name` in `dirfd` with zeros, syncs it and unlinks it (tenant data
// must not survive on disk for the next user of those blocks). Returns its size.
Result<std::uint64_t> WipeFile(int dirfd, std::string_view name);

Result<void> WriteAll(int fd, std::span<const std::byte> data);
// Writes all of `data` at `offset` (pwrite: the file position is untouched).
Result<void> PWriteAll(int fd, std::span<const std::byte> data, std::uint64_t offset);

}  // namespace digestd::store
