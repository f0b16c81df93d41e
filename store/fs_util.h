#pragma once

// Filesystem helpers for store/ (internal header). Every path below the store root is opened with
// openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS), so a symlink planted in
// the cache directory can never redirect the store outside its root.

#include <sys/stat.h>

#include <cstdint>
#include <cstdlib>
#include <memory>
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

// Starts writeback of a file as it is written, so that the final sync has little left to do, and
// bounds its dirty pages: every `window` bytes the new window is handed to writeback, and the
// writer waits for the writeback of data more than `windows` windows old (waiting on the window
// just kicked would serialise it with the disk; this keeps the disk busy). Advisory: when
// sync_file_range fails, the final fsync/syncfs still makes the data durable.
class WritebackPacer {
 public:
  WritebackPacer(std::uint64_t window, std::uint64_t windows) : window_(window), windows_(windows) {}
  // Bytes [0, written) of `fd` are written.
  void Advance(int fd, std::uint64_t written);
  void Reset() { kicked_ = waited_ = 0; }

 private:
  std::uint64_t window_;
  std::uint64_t windows_;
  std::uint64_t kicked_ = 0;  // bytes handed to writeback so far
  std::uint64_t waited_ = 0;  // bytes whose writeback was waited for
};

// Writes a new file front to back with O_DIRECT through an aligned buffer: the data goes to the
// device without passing through the page cache (no page allocation and copy per write, and a
// large layer does not push everything else out of the cache). The last partial block is written
// zero-padded and the file then truncated to its size. Durability still needs fsync or syncfs
// (metadata, the device's cache).
class DirectAppender {
 public:
  static constexpr std::size_t kAlign = 4096;
  static constexpr std::size_t kBuffer = 4u << 20;

  DirectAppender() = default;
  DirectAppender(const DirectAppender&) = delete;
  DirectAppender& operator=(const DirectAppender&) = delete;

  // Switches `fd` (opened for writing, empty) to O_DIRECT. False when the filesystem refuses it;
  // then write it the ordinary way.
  bool Start(int fd);
  Result<void> Append(std::span<const std::byte> data);
  // Writes what is buffered and sets the file's size. The fd stays O_DIRECT.
  Result<void> Finish();

 private:
  struct FreeDeleter {
    void operator()(std::byte* p) const { std::free(p); }
  };
  Result<void> Flush(std::size_t len);

  int fd_ = -1;
  std::unique_ptr<std::byte, FreeDeleter> buf_;
  std::size_t used_ = 0;
  std::uint64_t flushed_ = 0;  // bytes of the file written (a multiple of kAlign)
};

}  // namespace digestd::store
