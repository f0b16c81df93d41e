// Thin libfuse3 glue: every callback ends in exactly one fuse_reply_*; all logic is in Namespace.

#define FUSE_USE_VERSION 312
#include <fuse_lowlevel.h>

#if FUSE_MAJOR_VERSION < 3 || (FUSE_MAJOR_VERSION == 3 && FUSE_MINOR_VERSION < 16)
#error "libfuse >= 3.16 (passthrough) is required: run scripts/fetch-libfuse.sh"
#endif

#include <fcntl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <fstream>
#include <list>
#include <mutex>
#include <thread>
#include <unordered_map>

#include "common/log.h"
#include "fusefs/fuse_mount.h"

namespace digestd::fusefs {

namespace {

// Backing content by inode, for reads that come without an open (no-open mode). Bounded LRU.
class ContentCache {
 public:
  explicit ContentCache(std::size_t capacity) : capacity_(capacity) {}

  std::shared_ptr<const Content> Get(Ino ino) {
    std::lock_guard lock(mu_);
    auto it = map_.find(ino);
    if (it == map_.end()) return nullptr;
    lru_.splice(lru_.begin(), lru_, it->second.second);
    return it->second.first;
  }
  void Put(Ino ino, std::shared_ptr<const Content> c) {
    std::lock_guard lock(mu_);
    if (map_.count(ino)) return;
    lru_.push_front(ino);
    map_.emplace(ino, std::make_pair(std::move(c), lru_.begin()));
    while (map_.size() > capacity_) {
      map_.erase(lru_.back());
      lru_.pop_back();
    }
  }
  // Closes the least recently used half (what an EMFILE asks for). Returns how many went.
  std::size_t EvictHalf() {
    std::lock_guard lock(mu_);
    const std::size_t n = (map_.size() + 1) / 2;
    for (std::size_t i = 0; i < n; ++i) {
      map_.erase(lru_.back());
      lru_.pop_back();
    }
    return n;
  }
  // Forgets the entries of inodes in [first, first + count).
  void EraseRange(Ino first, std::uint64_t count) {
    std::lock_guard lock(mu_);
    for (auto it = lru_.begin(); it != lru_.end();) {
      if (*it >= first && *it - first < count) {
        map_.erase(*it);
        it = lru_.erase(it);
      } else {
        ++it;
      }
    }
  }

 private:
  std::mutex mu_;
  std::size_t capacity_;
  std::list<Ino> lru_;
  std::unordered_map<Ino, std::pair<std::shared_ptr<const Content>, std::list<Ino>::iterator>> map_;
};

}  // namespace

struct FuseMount::Impl {
  store::Store& store;
  MountOptions opts;
  Namespace ns;
  FuseStats stats;
  ContentCache cache;
  struct fuse_session* se = nullptr;
  std::thread loop;
  bool mounted = false;
  std::atomic<bool> no_open{false};
  std::atomic<bool> no_opendir{false};
  std::atomic<bool> passthrough{false};
  std::atomic<bool> passthrough_warned{false};
  // The kernel allows one backing file per FUSE inode at a time (a second, different one is
  // EBUSY, seen by the opener as EIO: a program exec'ing itself, or two containers on a layer).
  // Concurrent opens of an inode share its backing id; the last release closes it.
  struct Backing {
    int id = 0;
    int opens = 0;
  };
  std::mutex backing_mu;
  std::unordered_map<fuse_ino_t, Backing> backing;
  std::shared_ptr<spdlog::logger> log = Logger("fusefs");

  Impl(store::Store& s, const MountOptions& o)
      : store(s),
        opts(o),
        ns(s, NamespaceOptions{
                  .mountpoint = o.mountpoint, .hidden = o.hidden, .blobs_gid = o.blobs_gid}),
        cache(std::max<std::size_t>(o.content_cache_entries, 1)) {}

  int Errno(const Error& e) {
    int err = e.sys_errno();
    if (err == 0) err = e.code() == Errc::kNotFound ? ENOENT : EIO;
    if (err != ENOENT && err != ENODATA) {
      stats.errors.fetch_add(1, std::memory_order_relaxed);
      log->debug("fuse error errno={} {}", err, e.ToString());
    }
    return err;
  }

  double Timeout(Ino parent) const {
    return ns.IsDynamic(parent) ? opts.dynamic_timeout_s : opts.tree_timeout_s;
  }

  static struct stat ToStat(const Attr& a) {
    struct stat st {};
    st.st_ino = a.ino;
    st.st_mode = a.mode;
    st.st_nlink = a.nlink;
    st.st_uid = a.uid;
    st.st_gid = a.gid;
    st.st_size = static_cast<off_t>(a.size);
    st.st_blksize = 4096;
    st.st_blocks = static_cast<blkcnt_t>((a.size + 511) / 512);
    st.st_mtim.tv_sec = a.mtime;
    st.st_mtim.tv_nsec = a.mtime_nsec;
    st.st_ctim.tv_sec = a.mtime;
    st.st_atim.tv_sec = a.mtime;
    st.st_rdev = makedev(a.rdev_major, a.rdev_minor);
    return st;
  }

  fuse_entry_param Entry(const Attr& a, double timeout) const {
    fuse_entry_param e{};
    e.ino = a.ino;
    e.generation = 1;
    e.attr = ToStat(a);
    e.attr_timeout = timeout;
    e.entry_timeout = timeout;
    return e;
  }

  // `admit`: the caller is opening the file (or reading without opens): a cached fd is only
  // handed out while the inode is still served (not denied, withdrawn or removed).
  Result<std::shared_ptr<const Content>> ContentFor(Ino ino, bool admit) {
    if (auto c = cache.Get(ino)) {
      if (admit) DIGESTD_RETURN_IF_ERROR(ns.GetAttr(ino));
      return c;
    }
    auto content = ns.Open(ino);
    if (!content && (content.error().sys_errno() == EMFILE || content.error().sys_errno() == ENFILE)) {
      // Out of fds: close the colder half of the cache rather than fail every reader.
      const std::size_t closed = cache.EvictHalf();
      stats.fd_evictions.fetch_add(1, std::memory_order_relaxed);
      log->warn("out of file descriptors: closed {} cached backing fds", closed);
      content = ns.Open(ino);
    }
    if (!content) return content.error();
    auto shared = std::make_shared<const Content>(std::move(*content));
    cache.Put(ino, shared);
    return shared;
  }
};

namespace {

FuseMount::Impl& Self(fuse_req_t req) {
  return *static_cast<FuseMount::Impl*>(fuse_req_userdata(req));
}

// Observes the request's latency when the callback returns (after its reply).
class OpTimer {
 public:
  explicit OpTimer(FuseStats& stats) : stats_(stats), start_(std::chrono::steady_clock::now()) {}
  ~OpTimer() {
    stats_.Observe(static_cast<std::uint64_t>(
        std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - start_)
            .count()));
  }
  OpTimer(const OpTimer&) = delete;
  OpTimer& operator=(const OpTimer&) = delete;

 private:
  FuseStats& stats_;
  std::chrono::steady_clock::time_point start_;
};

void OpInit(void* userdata, struct fuse_conn_info* conn) {
  auto& s = *static_cast<FuseMount::Impl*>(userdata);
  if (s.opts.passthrough && (conn->capable & FUSE_CAP_PASSTHROUGH)) {
    conn->want |= FUSE_CAP_PASSTHROUGH;
    // Backing files live on the store's own filesystem (stacking depth 0), which makes this
    // mount depth 1 (libfuse sends depth + 1): overlayfs can still stack on it (depth 2, the
    // kernel's maximum). A store on a stacked filesystem gets no passthrough (the open falls
    // back to the read path).
    conn->max_backing_stack_depth = 0;
    s.passthrough = true;
  }
  // No-open would bypass the open where passthrough is set up; with passthrough, opens stay.
  if (s.opts.no_open && !s.passthrough && (conn->capable & FUSE_CAP_NO_OPEN_SUPPORT)) {
    s.no_open = true;
  }
  // Without opendir the kernel caches every listing (FOPEN_CACHE_DIR); a walk then costs no
  // round trip per directory. See below for how the top directories stay fresh.
  if (s.opts.no_open && (conn->capable & FUSE_CAP_NO_OPENDIR_SUPPORT)) s.no_opendir = true;
  if (conn->capable & FUSE_CAP_READDIRPLUS) {
    conn->want |= FUSE_CAP_READDIRPLUS;
    // Adaptive: plain readdir for walks that do not stat, plus for `ls -l`-style ones.
    if (conn->capable & FUSE_CAP_READDIRPLUS_AUTO) conn->want |= FUSE_CAP_READDIRPLUS_AUTO;
  }
  if (conn->capable & FUSE_CAP_CACHE_SYMLINKS) conn->want |= FUSE_CAP_CACHE_SYMLINKS;
  // With auto_inval_data the kernel refreshes a directory's mtime (once its attribute timeout
  // has passed) before serving a cached listing, and drops the listing if it changed: that is
  // how the top directories' listings follow the store (their mtime follows its generation)
  // while trees stay cached for hours.
  if (conn->capable & FUSE_CAP_AUTO_INVAL_DATA) conn->want |= FUSE_CAP_AUTO_INVAL_DATA;
  if (conn->capable & FUSE_CAP_SPLICE_WRITE) conn->want &= ~FUSE_CAP_SPLICE_WRITE;
}

void OpLookup(fuse_req_t req, fuse_ino_t parent, const char* name) {
  auto& s = Self(req);
  OpTimer timer(s.stats);
  s.stats.lookups.fetch_add(1, std::memory_order_relaxed);
  auto a = s.ns.Lookup(parent, name);
  const double timeout = s.Timeout(parent);
  if (!a) {
    const int err = s.Errno(a.error());
    if (err == ENOENT) {
      // Negative entries are cached like positive ones: never for the top directories.
      fuse_entry_param e{};
      e.entry_timeout = timeout;
      fuse_reply_entry(req, &e);
      return;
    }
    fuse_reply_err(req, err);
    return;
  }
  const fuse_entry_param e = s.Entry(*a, timeout);
  s.ns.Ref(a->ino);
  if (fuse_reply_entry(req, &e) != 0) s.ns.Forget(a->ino, 1);
}

void OpForget(fuse_req_t req, fuse_ino_t ino, uint64_t nlookup) {
  Self(req).ns.Forget(ino, nlookup);
  fuse_reply_none(req);
}

void OpForgetMulti(fuse_req_t req, size_t count, struct fuse_forget_data* forgets) {
  auto& s = Self(req);
  for (size_t i = 0; i < count; ++i) s.ns.Forget(forgets[i].ino, forgets[i].nlookup);
  fuse_reply_none(req);
}

void OpGetattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info*) {
  auto& s = Self(req);
  OpTimer timer(s.stats);
  s.stats.getattrs.fetch_add(1, std::memory_order_relaxed);
  auto a = s.ns.GetAttr(ino);
  if (!a) {
    fuse_reply_err(req, s.Errno(a.error()));
    return;
  }
  const struct stat st = FuseMount::Impl::ToStat(*a);
  fuse_reply_attr(req, &st, s.ns.IsDynamic(ino) ? s.opts.dynamic_timeout_s : s.opts.tree_timeout_s);
}

void OpReadlink(fuse_req_t req, fuse_ino_t ino) {
  auto& s = Self(req);
  OpTimer timer(s.stats);
  auto t = s.ns.ReadLink(ino);
  if (!t) {
    fuse_reply_err(req, s.Errno(t.error()));
    return;
  }
  fuse_reply_readlink(req, t->c_str());
}

void OpOpen(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info* fi) {
  auto& s = Self(req);
  s.stats.opens.fetch_add(1, std::memory_order_relaxed);
  if ((fi->flags & O_ACCMODE) != O_RDONLY) {
    fuse_reply_err(req, EROFS);
    return;
  }
  if (s.no_open) {
    // The kernel stops sending opens for this mount; reads go by inode (ContentFor).
    fuse_reply_err(req, ENOSYS);
    return;
  }
  auto c = s.ContentFor(ino, /*admit=*/true);
  if (!c) {
    fuse_reply_err(req, s.Errno(c.error()));
    return;
  }
  if (s.passthrough && (*c)->fd) {
    int backing_id = 0;
    {
      std::lock_guard lock(s.backing_mu);
      auto& b = s.backing[ino];
      if (b.opens == 0) b.id = fuse_passthrough_open(req, (*c)->fd.Get());
      if (b.id > 0) {
        b.opens += 1;
        backing_id = b.id;
      } else {
        s.backing.erase(ino);
      }
    }
    if (backing_id > 0) {
      fi->backing_id = backing_id;
      fi->fh = static_cast<std::uint64_t>(ino);
      s.stats.passthrough_opens.fetch_add(1, std::memory_order_relaxed);
      fuse_reply_open(req, fi);
      return;
    }
    s.stats.passthrough_fallbacks.fetch_add(1, std::memory_order_relaxed);
    if (!s.passthrough_warned.exchange(true)) {
      s.log->warn("FUSE passthrough refused for inode {} (errno {}); serving reads through the "
                  "daemon where it is refused",
                  ino, errno);
    }
  }
  fi->fh = 0;
  fi->keep_cache = 1;
  fuse_reply_open(req, fi);
}

void OpRead(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, struct fuse_file_info*) {
  auto& s = Self(req);
  OpTimer timer(s.stats);
  s.stats.reads.fetch_add(1, std::memory_order_relaxed);
  // Reads of an open file go on after a deny, as passthrough reads do; without opens (no-open
  // mode) every read is an admission.
  auto c = s.ContentFor(ino, /*admit=*/s.no_open.load(std::memory_order_relaxed));
  if (!c) {
    fuse_reply_err(req, s.Errno(c.error()));
    return;
  }
  const Content& content = **c;
  if (!content.fd) {
    const auto& b = content.bytes;
    const std::size_t start = std::min<std::size_t>(static_cast<std::size_t>(off), b.size());
    const std::size_t n = std::min(size, b.size() - start);
    s.stats.read_bytes.fetch_add(n, std::memory_order_relaxed);
    fuse_reply_buf(req, b.data() + start, n);
    return;
  }
  thread_local std::vector<char> buf;
  if (buf.size() < size) buf.resize(size);
  ssize_t n;
  do {
    n = ::pread(content.fd.Get(), buf.data(), size, off);
  } while (n < 0 && errno == EINTR);
  if (n < 0) {
    s.stats.errors.fetch_add(1, std::memory_order_relaxed);
    fuse_reply_err(req, EIO);
    return;
  }
  s.stats.read_bytes.fetch_add(static_cast<std::uint64_t>(n), std::memory_order_relaxed);
  fuse_reply_buf(req, buf.data(), static_cast<size_t>(n));
}

void OpRelease(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info* fi) {
  if (fi->fh > 0) {
    auto& s = Self(req);
    std::lock_guard lock(s.backing_mu);
    auto it = s.backing.find(ino);
    if (it != s.backing.end() && --it->second.opens == 0) {
      (void)fuse_passthrough_close(req, it->second.id);
      s.backing.erase(it);
    }
  }
  fuse_reply_err(req, 0);
}

void OpOpendir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info* fi) {
  auto& s = Self(req);
  if (s.no_opendir) {
    fuse_reply_err(req, ENOSYS);
    return;
  }
  auto a = s.ns.GetAttr(ino);
  if (!a) {
    fuse_reply_err(req, s.Errno(a.error()));
    return;
  }
  if (!S_ISDIR(a->mode)) {
    fuse_reply_err(req, ENOTDIR);
    return;
  }
  // Trees never change: let the kernel keep their listings.
  if (!s.ns.IsDynamic(ino)) {
    fi->cache_readdir = 1;
    fi->keep_cache = 1;
  }
  fuse_reply_open(req, fi);
}

void DoReaddir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, bool plus) {
  auto& s = Self(req);
  OpTimer timer(s.stats);
  s.stats.readdirs.fetch_add(1, std::memory_order_relaxed);
  std::vector<char> buf(size);
  std::size_t used = 0;
  const double timeout = s.Timeout(ino);
  auto r = s.ns.ReadDirFrom(ino, static_cast<std::uint64_t>(off),
                            [&](const DirEntry& d, std::uint64_t next) {
    const bool dot = d.name == "." || d.name == "..";
    std::size_t need;
    if (plus) {
      fuse_entry_param e = s.Entry(d.attr, timeout);
      if (dot) e.ino = 0;  // no lookup count for . and ..
      need = fuse_add_direntry_plus(req, buf.data() + used, size - used, d.name.c_str(), &e,
                                    static_cast<off_t>(next));
      if (need > size - used) return false;
      if (!dot) s.ns.Ref(d.attr.ino);
    } else {
      const struct stat st = FuseMount::Impl::ToStat(d.attr);
      need = fuse_add_direntry(req, buf.data() + used, size - used, d.name.c_str(), &st,
                               static_cast<off_t>(next));
      if (need > size - used) return false;
    }
    used += need;
    return true;
  });
  if (!r) {
    fuse_reply_err(req, s.Errno(r.error()));
    return;
  }
  fuse_reply_buf(req, buf.data(), used);
}

void OpReaddir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, struct fuse_file_info*) {
  DoReaddir(req, ino, size, off, false);
}
void OpReaddirplus(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
                   struct fuse_file_info*) {
  DoReaddir(req, ino, size, off, true);
}
void OpReleasedir(fuse_req_t req, fuse_ino_t, struct fuse_file_info*) { fuse_reply_err(req, 0); }

void OpStatfs(fuse_req_t req, fuse_ino_t) {
  auto& s = Self(req);
  struct statvfs st {};
  if (::statvfs(s.store.root().c_str(), &st) != 0) {
    fuse_reply_err(req, errno);
    return;
  }
  // The store's filesystem, as seen read-only: nothing is free for writers of this mount.
  const auto usage = s.store.GetUsage();
  st.f_bfree = st.f_bavail = 0;
  st.f_files = usage.blobs;
  st.f_ffree = st.f_favail = 0;
  st.f_namemax = 255;
  st.f_flag |= ST_RDONLY | ST_NOSUID | ST_NODEV;
  fuse_reply_statfs(req, &st);
}

void OpGetxattr(fuse_req_t req, fuse_ino_t ino, const char* name, size_t size) {
  auto& s = Self(req);
  auto xs = s.ns.Xattrs(ino);
  if (!xs) {
    fuse_reply_err(req, s.Errno(xs.error()));
    return;
  }
  for (const auto& [n, v] : *xs) {
    if (n != name) continue;
    if (size == 0) {
      fuse_reply_xattr(req, v.size());
    } else if (size < v.size()) {
      fuse_reply_err(req, ERANGE);
    } else {
      fuse_reply_buf(req, v.data(), v.size());
    }
    return;
  }
  fuse_reply_err(req, ENODATA);
}

void OpListxattr(fuse_req_t req, fuse_ino_t ino, size_t size) {
  auto& s = Self(req);
  auto xs = s.ns.Xattrs(ino);
  if (!xs) {
    fuse_reply_err(req, s.Errno(xs.error()));
    return;
  }
  std::string names;
  for (const auto& [n, v] : *xs) {
    names += n;
    names.push_back('\0');
  }
  if (size == 0) {
    fuse_reply_xattr(req, names.size());
  } else if (size < names.size()) {
    fuse_reply_err(req, ERANGE);
  } else {
    fuse_reply_buf(req, names.data(), names.size());
  }
}

// Every write is refused (the mount is ro too; these cover callers that get past that).
void OpSetattr(fuse_req_t req, fuse_ino_t, struct stat*, int, struct fuse_file_info*) {
  fuse_reply_err(req, EROFS);
}
void OpSetxattr(fuse_req_t req, fuse_ino_t, const char*, const char*, size_t, int) {
  fuse_reply_err(req, EROFS);
}
void OpRemovexattr(fuse_req_t req, fuse_ino_t, const char*) { fuse_reply_err(req, EROFS); }
void OpMknod(fuse_req_t req, fuse_ino_t, const char*, mode_t, dev_t) { fuse_reply_err(req, EROFS); }
void OpMkdir(fuse_req_t req, fuse_ino_t, const char*, mode_t) { fuse_reply_err(req, EROFS); }
void OpUnlink(fuse_req_t req, fuse_ino_t, const char*) { fuse_reply_err(req, EROFS); }
void OpSymlink(fuse_req_t req, const char*, fuse_ino_t, const char*) { fuse_reply_err(req, EROFS); }
void OpRename(fuse_req_t req, fuse_ino_t, const char*, fuse_ino_t, const char*, unsigned int) {
  fuse_reply_err(req, EROFS);
}
void OpLink(fuse_req_t req, fuse_ino_t, fuse_ino_t, const char*) { fuse_reply_err(req, EROFS); }
void OpCreate(fuse_req_t req, fuse_ino_t, const char*, mode_t, struct fuse_file_info*) {
  fuse_reply_err(req, EROFS);
}
void OpWrite(fuse_req_t req, fuse_ino_t, const char*, size_t, off_t, struct fuse_file_info*) {
  fuse_reply_err(req, EROFS);
}

const struct fuse_lowlevel_ops kOps = [] {
  struct fuse_lowlevel_ops ops {};
  ops.init = OpInit;
  ops.lookup = OpLookup;
  ops.forget = OpForget;
  ops.forget_multi = OpForgetMulti;
  ops.getattr = OpGetattr;
  ops.readlink = OpReadlink;
  ops.open = OpOpen;
  ops.read = OpRead;
  ops.release = OpRelease;
  ops.opendir = OpOpendir;
  ops.readdir = OpReaddir;
  ops.readdirplus = OpReaddirplus;
  ops.releasedir = OpReleasedir;
  ops.statfs = OpStatfs;
  ops.getxattr = OpGetxattr;
  ops.listxattr = OpListxattr;
  ops.setattr = OpSetattr;
  ops.setxattr = OpSetxattr;
  ops.removexattr = OpRemovexattr;
  ops.mknod = OpMknod;
  ops.mkdir = OpMkdir;
  ops.unlink = OpUnlink;
  ops.rmdir = OpUnlink;
  ops.symlink = OpSymlink;
  ops.rename = OpRename;
  ops.link = OpLink;
  ops.create = OpCreate;
  ops.write = OpWrite;
  return ops;
}();

Error FuseError(Errc code, std::string context) {
  return MakeError(Module::kFuse, code, std::move(context));
}

// Whether `path` is currently a mount point, per /proc/self/mountinfo (field 5).
bool IsMountPoint(const std::string& path) {
  std::ifstream in("/proc/self/mountinfo");
  std::string line;
  while (std::getline(in, line)) {
    std::size_t pos = 0;
    for (int field = 0; field < 4 && pos != std::string::npos; ++field) {
      pos = line.find(' ', pos);
      if (pos != std::string::npos) ++pos;
    }
    if (pos == std::string::npos) continue;
    const auto end = line.find(' ', pos);
    if (line.compare(pos, end - pos, path) == 0 && end - pos == path.size()) return true;
  }
  return false;
}

}  // namespace

void InvalidateNames(FuseMount::Impl& s, const verify::Digest& digest,
                     const std::vector<verify::Digest>& images);

Result<bool> ClearStaleMount(const std::string& mountpoint) {
  // statfs always reaches the filesystem's daemon; stat may be answered from the attr cache.
  struct statvfs st {};
  if (::statvfs(mountpoint.c_str(), &st) == 0 || errno != ENOTCONN) return false;
  // "Transport endpoint is not connected": a FUSE mount whose daemon died.
  if (::umount2(mountpoint.c_str(), MNT_DETACH) != 0) {
    return SysError(Module::kFuse, "detach stale mount at " + Quote(mountpoint));
  }
  Logger("fusefs")->warn("cleared a stale mount at {} (a previous daemon died)", mountpoint);
  return true;
}

FuseMount::FuseMount(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

FuseMount::~FuseMount() {
  if (auto r = Unmount(); !r) impl_->log->error("unmount: {}", r.error().ToString());
}

void FuseMount::Invalidate(const verify::Digest& digest) {
  InvalidateNames(*impl_, digest, impl_->ns.ImagesUsing(digest));
}

void InvalidateNames(FuseMount::Impl& s, const verify::Digest& digest,
                     const std::vector<verify::Digest>& images) {
  if (s.se == nullptr || !s.mounted) return;
  auto drop = [&](Ino parent, std::string_view name) {
    // ENOENT (nothing cached) is the common case and fine.
    (void)fuse_lowlevel_notify_inval_entry(s.se, parent, name.data(), name.size());
  };
  const std::string hex(digest.hex());
  drop(Namespace::kBlobsDirIno, hex);
  drop(Namespace::kLayersDirIno, hex);
  drop(Namespace::kImagesDirIno, hex);
  for (const auto& image : images) {
    const std::string image_hex(image.hex());
    drop(Namespace::kImagesDirIno, image_hex);
  }
  // Cached listings of the top directories go too.
  for (Ino dir : {Namespace::kBlobsDirIno, Namespace::kLayersDirIno, Namespace::kImagesDirIno}) {
    (void)fuse_lowlevel_notify_inval_inode(s.se, dir, 0, 0);
  }
}

void FuseMount::Removed(const verify::Digest& digest) {
  auto& s = *impl_;
  const auto images = s.ns.ImagesUsing(digest);
  const auto ranges = s.ns.Drop(digest);
  for (const auto& r : ranges) s.cache.EraseRange(r.first, r.count);
  if (!ranges.empty()) s.stats.views_dropped.fetch_add(ranges.size(), std::memory_order_relaxed);
  // The names (layers/<L>, images/<m> of every image that used it, blobs/<d>) go from the
  // kernel's dentry cache with their subtrees; inodes the kernel knows drop their cached pages.
  InvalidateNames(s, digest, images);
  if (s.se == nullptr || !s.mounted) return;
  for (const auto& r : ranges) {
    for (std::uint64_t i = 0; i < r.count; ++i) {
      const Ino ino = r.first + i;
      if (s.ns.LookupCount(ino) > 0) (void)fuse_lowlevel_notify_inval_inode(s.se, ino, 0, 0);
    }
  }
}

Namespace& FuseMount::ns() { return impl_->ns; }
bool FuseMount::passthrough_active() const { return impl_->passthrough; }
const FuseStats& FuseMount::stats() const { return impl_->stats; }
const MountOptions& FuseMount::options() const { return impl_->opts; }

Result<FuseMountPtr> FuseMount::Mount(store::Store& store, const MountOptions& options) {
  if (options.mountpoint.empty() || options.mountpoint.front() != '/') {
    return FuseError(Errc::kInvalidArgument, "mount point must be an absolute path");
  }
  DIGESTD_RETURN_IF_ERROR(ClearStaleMount(options.mountpoint));
  if (::mkdir(options.mountpoint.c_str(), 0755) != 0 && errno != EEXIST) {
    return SysError(Module::kFuse, "create mount point " + Quote(options.mountpoint));
  }
  if (IsMountPoint(options.mountpoint)) {
    return FuseError(Errc::kBusy, "something is mounted at " + Quote(options.mountpoint) +
                                      " already (another digestd?); refusing to stack on it");
  }
  auto impl = std::make_unique<Impl>(store, options);
  std::vector<std::string> argv = {
      "digestd", "-o",
      "ro,nosuid,nodev,allow_other,default_permissions,fsname=digestd,subtype=digestd"};
  if (options.debug) argv.push_back("-d");
  std::vector<char*> cargv;
  for (auto& a : argv) cargv.push_back(a.data());
  struct fuse_args args = FUSE_ARGS_INIT(static_cast<int>(cargv.size()), cargv.data());
  impl->se = fuse_session_new(&args, &kOps, sizeof(kOps), impl.get());
  fuse_opt_free_args(&args);  // the session copied what it needs; args may have been reallocated
  if (impl->se == nullptr) return FuseError(Errc::kInternal, "fuse_session_new failed");
  if (fuse_session_mount(impl->se, options.mountpoint.c_str()) != 0) {
    fuse_session_destroy(impl->se);
    impl->se = nullptr;
    return FuseError(Errc::kIo, "mount FUSE at " + Quote(options.mountpoint) +
                                    " failed (is /dev/fuse there, and are we root?)");
  }
  impl->mounted = true;
  Impl* raw = impl.get();
  impl->loop = std::thread([raw] {
    struct fuse_loop_config* cfg = fuse_loop_cfg_create();
    fuse_loop_cfg_set_max_threads(cfg, raw->opts.max_threads);
    fuse_loop_cfg_set_clone_fd(cfg, 0);
    const int rc = fuse_session_loop_mt(raw->se, cfg);
    fuse_loop_cfg_destroy(cfg);
    if (rc != 0) raw->log->warn("fuse session loop ended with {}", rc);
  });
  FuseMountPtr mount(new FuseMount(std::move(impl)));

  if (options.read_ahead_kb > 0) {
    struct stat st {};
    if (::stat(options.mountpoint.c_str(), &st) == 0) {
      const std::string bdi = "/sys/class/bdi/" + std::to_string(major(st.st_dev)) + ":" +
                              std::to_string(minor(st.st_dev)) + "/read_ahead_kb";
      std::ofstream ra(bdi);
      ra << options.read_ahead_kb << "\n";
      ra.flush();
      if (!ra) mount->impl_->log->warn("could not set {} (read-ahead stays at the default)", bdi);
    }
  }
  mount->impl_->log->info("mounted at {} threads={} read_ahead_kb={} passthrough={}",
                          options.mountpoint, options.max_threads, options.read_ahead_kb,
                          mount->impl_->passthrough.load());
  return mount;
}

Result<void> FuseMount::Unmount() {
  auto& s = *impl_;
  if (!s.se) return {};
  fuse_session_exit(s.se);
  if (s.mounted) {
    // Unmounting makes the workers' reads of /dev/fuse fail, which ends the loop.
    fuse_session_unmount(s.se);
    s.mounted = false;
  }
  if (s.loop.joinable()) s.loop.join();
  fuse_session_destroy(s.se);
  s.se = nullptr;
  s.log->info("unmounted {}", s.opts.mountpoint);
  return {};
}

}  // namespace digestd::fusefs
