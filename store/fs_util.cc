#include "store/fs_util.h"
#include "store/errors.h"

#include <dirent.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string>
#include <vector>

namespace digestd::store {
namespace {

Error Sys(std::string context) { return SysError(Module::kStore, std::move(context)); }

}  // namespace

Result<UniqueFd> OpenBeneath(int dirfd, std::string_view rel, int flags, mode_t mode) {
  open_how how{};
  how.flags = static_cast<std::uint64_t>(flags | O_CLOEXEC);
  how.mode = (flags & (O_CREAT | O_TMPFILE)) ? mode : 0;
  how.resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS;
  const std::string path(rel);
  long fd;
  do {
    fd = ::syscall(SYS_openat2, dirfd, path.c_str(), &how, sizeof(how));
  } while (fd < 0 && errno == EINTR);
  if (fd < 0) {
    const int err = errno;
    Error e = SysError(Module::kStore, "open " + Quote(rel), err);
    if (err == ENOENT) e = StoreError(Errc::kNotFound, "open " + Quote(rel), err);
    return e;
  }
  return UniqueFd(static_cast<int>(fd));
}

Result<UniqueFd> EnsureDir(int dirfd, std::string_view name, mode_t mode) {
  const std::string n(name);
  if (::mkdirat(dirfd, n.c_str(), mode) != 0 && errno != EEXIST) {
    return Sys("mkdir " + Quote(name));
  }
  auto fd = OpenBeneath(dirfd, name, O_RDONLY | O_DIRECTORY);
  if (!fd) {
    return std::move(fd).error().Wrap("directory " + Quote(name) +
                                      " is not a plain directory (symlink?)");
  }
  struct stat st {};
  if (::fstat(fd->Get(), &st) != 0) return Sys("fstat " + Quote(name));
  if (st.st_uid != ::geteuid()) {
    return StoreError(Errc::kPermission,
                     "directory " + Quote(name) + " is owned by uid " + std::to_string(st.st_uid) +
                         ", not by us (uid " + std::to_string(::geteuid()) + ")");
  }
  if ((st.st_mode & 07777) != mode) {
    // Tighten what an older version or an operator left looser; never loosen.
    if (::fchmod(fd->Get(), mode) != 0) return Sys("chmod " + Quote(name));
  }
  return fd;
}

Result<void> FsyncFd(int fd, std::string_view what) {
  if (::fsync(fd) != 0) return Sys("fsync " + std::string(what));
  return {};
}

Result<void> ForEachEntry(
    int dirfd, const std::function<Result<void>(std::string_view, unsigned char)>& fn) {
  // Duplicate so that closedir() does not close the caller's fd.
  auto dup = OpenBeneath(dirfd, ".", O_RDONLY | O_DIRECTORY);
  if (!dup) return dup.error();
  DIR* dir = ::fdopendir(dup->Get());
  if (dir == nullptr) return Sys("fdopendir");
  dup->Release();
  std::vector<std::pair<std::string, unsigned char>> entries;
  errno = 0;
  while (dirent* de = ::readdir(dir)) {
    std::string_view name(de->d_name);
    if (name == "." || name == "..") continue;
    entries.emplace_back(std::string(name), de->d_type);
  }
  const int err = errno;
  ::closedir(dir);
  if (err != 0) return SysError(Module::kStore, "readdir", err);
  // Entries are collected first so that fn may unlink what it is given.
  for (const auto& [name, type] : entries) {
    DIGESTD_RETURN_IF_ERROR(fn(name, type));
  }
  return {};
}

Result<void> RemoveEntry(int dirfd, std::string_view name) {
  const std::string n(name);
  if (::unlinkat(dirfd, n.c_str(), 0) == 0 || errno == ENOENT) return {};
  if (errno != EISDIR && errno != EPERM) return Sys("unlink " + Quote(name));
  auto sub = OpenBeneath(dirfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW);
  if (!sub) return sub.error();
  DIGESTD_RETURN_IF_ERROR(ClearDir(sub->Get()));
  if (::unlinkat(dirfd, n.c_str(), AT_REMOVEDIR) != 0 && errno != ENOENT) {
    return Sys("rmdir " + Quote(name));
  }
  return {};
}

Result<std::uint64_t> ClearDir(int dirfd) {
  std::uint64_t removed = 0;
  DIGESTD_RETURN_IF_ERROR(ForEachEntry(dirfd, [&](std::string_view name, unsigned char) {
    ++removed;
    return RemoveEntry(dirfd, name);
  }));
  return removed;
}

Result<void> WriteAll(int fd, std::span<const std::byte> data) {
  while (!data.empty()) {
    const ssize_t n = ::write(fd, data.data(), data.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      return Sys("write");
    }
    data = data.subspan(static_cast<std::size_t>(n));
  }
  return {};
}

Result<void> PWriteAll(int fd, std::span<const std::byte> data, std::uint64_t offset) {
  while (!data.empty()) {
    const ssize_t n = ::pwrite(fd, data.data(), data.size(), static_cast<off_t>(offset));
    if (n < 0) {
      if (errno == EINTR) continue;
      return Sys("pwrite");
    }
    data = data.subspan(static_cast<std::size_t>(n));
    offset += static_cast<std::uint64_t>(n);
  }
  return {};
}

Result<std::uint64_t> WipeFile(int dirfd, std::string_view name) {
  const std::string n(name);
  if (::fchmodat(dirfd, n.c_str(), 0600, 0) != 0 && errno != ENOENT) {
    return SysError(Module::kStore, "chmod " + Quote(name) + " for wiping");
  }
  auto fd = OpenBeneath(dirfd, name, O_WRONLY | O_NOFOLLOW);
  if (!fd) return fd.error();
  struct stat st {};
  if (::fstat(fd->Get(), &st) != 0 || !S_ISREG(st.st_mode)) {
    return StoreError(Errc::kCorrupt, Quote(name) + " is not a regular file");
  }
  static const std::vector<std::byte> kZeros(1u << 20);
  const auto size = static_cast<std::uint64_t>(st.st_size);
  for (std::uint64_t off = 0; off < size;) {
    const auto n_bytes = static_cast<std::size_t>(std::min<std::uint64_t>(kZeros.size(), size - off));
    DIGESTD_RETURN_IF_ERROR(PWriteAll(fd->Get(), std::span(kZeros.data(), n_bytes), off));
    off += n_bytes;
  }
  if (::fdatasync(fd->Get()) != 0) return SysError(Module::kStore, "fdatasync wiped file");
  if (::unlinkat(dirfd, n.c_str(), 0) != 0) return SysError(Module::kStore, "unlink wiped file");
  return size;
}

void WritebackPacer::Advance(int fd, std::uint64_t written) {
  if (window_ == 0 || written - kicked_ < window_) return;
  (void)::sync_file_range(fd, static_cast<off_t>(kicked_), static_cast<off_t>(written - kicked_),
                          SYNC_FILE_RANGE_WRITE);
  kicked_ = written;
  const std::uint64_t lag = window_ * windows_;
  if (kicked_ > waited_ + lag) {
    const std::uint64_t upto = kicked_ - lag;
    (void)::sync_file_range(fd, static_cast<off_t>(waited_), static_cast<off_t>(upto - waited_),
                            SYNC_FILE_RANGE_WAIT_BEFORE | SYNC_FILE_RANGE_WRITE |
                                SYNC_FILE_RANGE_WAIT_AFTER);
    waited_ = upto;
  }
}

bool DirectAppender::Start(int fd) {
  // Only where the filesystem says direct I/O works with our alignment (statx STATX_DIOALIGN;
  // a filesystem that does not say is written the ordinary way).
  struct statx stx {};
  if (::statx(fd, "", AT_EMPTY_PATH, STATX_DIOALIGN, &stx) != 0 ||
      (stx.stx_mask & STATX_DIOALIGN) == 0 || stx.stx_dio_offset_align == 0 ||
      stx.stx_dio_mem_align == 0 || kAlign % stx.stx_dio_offset_align != 0 ||
      kAlign % stx.stx_dio_mem_align != 0) {
    return false;
  }
  const int flags = ::fcntl(fd, F_GETFL);
  if (flags < 0 || ::fcntl(fd, F_SETFL, flags | O_DIRECT) != 0) return false;
  if (!buf_) {
    buf_.reset(static_cast<std::byte*>(std::aligned_alloc(kAlign, kBuffer)));
    if (!buf_) {
      (void)::fcntl(fd, F_SETFL, flags);
      return false;
    }
  }
  fd_ = fd;
  used_ = 0;
  flushed_ = 0;
  return true;
}

Result<void> DirectAppender::Flush(std::size_t len) {
  std::size_t done = 0;
  while (done < len) {
    const ssize_t n = ::pwrite(fd_, buf_.get() + done, len - done,
                               static_cast<off_t>(flushed_ + done));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return SysError(Module::kStore, "direct write");
    // A short direct write leaves an unaligned offset we cannot continue from.
    if (static_cast<std::size_t>(n) % kAlign != 0 && done + static_cast<std::size_t>(n) != len) {
      return StoreError(Errc::kIo, "short unaligned direct write");
    }
    done += static_cast<std::size_t>(n);
  }
  flushed_ += len;
  return {};
}

Result<void> DirectAppender::Append(std::span<const std::byte> data) {
  while (!data.empty()) {
    const std::size_t n = std::min(data.size(), kBuffer - used_);
    std::memcpy(buf_.get() + used_, data.data(), n);
    used_ += n;
    data = data.subspan(n);
    if (used_ == kBuffer) {
      DIGESTD_RETURN_IF_ERROR(Flush(kBuffer));
      used_ = 0;
    }
  }
  return {};
}

Result<void> DirectAppender::Finish() {
  const std::uint64_t size = flushed_ + used_;
  if (used_ > 0) {
    const std::size_t padded = (used_ + kAlign - 1) / kAlign * kAlign;
    std::memset(buf_.get() + used_, 0, padded - used_);
    DIGESTD_RETURN_IF_ERROR(Flush(padded));
    used_ = 0;
  }
  if (::ftruncate(fd_, static_cast<off_t>(size)) != 0) {
    return SysError(Module::kStore, "truncate direct-written file");
  }
  return {};
}

}  // namespace digestd::store
