// Thin libfuse3 glue: every callback ends in exactly one fuse_reply_*; all logic is in Namespace.

#define FUSE_USE_VERSION 312
#include <fuse_lowlevel.h>
#include "fusefs/errors.h"

#if FUSE_MAJOR_VERSION < 3 || (FUSE_MAJOR_VERSION == 3 && FUSE_MINOR_VERSION < 16)
#error "libfuse >= 3.16 (passthrough) is required: run scripts/fetch-libfuse.sh"
#endif

#include <fcntl.h>
#include <linux/fuse.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/mount.h>
#include <sys/uio.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <optional>
#include <fstream>
#include <list>
#include <mutex>
#include <thread>
#include <unordered_map>

#include "common/log.h"
#include "fusefs/fuse_mount.h"
#include "fusefs/session_state.h"

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
  // A leaf: nothing else is locked while it is held (the fds it drops are closed under it).
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
  // Concurrent opens of an inode share its backing id; the last release closes it. The table
  // lives in the session state (shared with a successor, and during a hand-over used by both
  // processes at once): backing_mu serializes it within this process, then a
  // SessionState::TableLock across processes. Lock order: backing_mu, then the TableLock; no
  // other lock of this file or of the namespace is taken while they are held.
  std::mutex backing_mu;
  std::shared_ptr<spdlog::logger> log = Logger(Module::kFuse);

  // Session hand-over (docs/architecture.md, "Live restart"). Every read of /dev/fuse goes
  // through IoRead and every write through IoWritev (libfuse's custom I/O).
  std::optional<SessionState> state;
  UniqueFd wake;                    // eventfd: readable once Detach() has begun
  std::atomic<bool> stopping{false};
  std::atomic<int> in_read{0};      // threads between their stop check and their read's return
  std::mutex io_mu;  // with io_cv: the replayed INIT and Detach; a leaf, never held in /dev/fuse I/O
  std::condition_variable io_cv;
  bool replay_pending = false;      // the next read returns the saved INIT (adopted sessions)
  bool init_done = true;            // false while a replayed INIT is unanswered; reads wait
  std::optional<std::string> replay_reply;  // what libfuse answered the replayed INIT
  std::atomic<bool> init_captured{false};
  std::atomic<std::uint64_t> init_unique{0};  // unique of the INIT whose reply is recorded
  bool adopted = false;
  bool detached = false;
  bool resend = false;

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
  if (s.opts.before_lookup) s.opts.before_lookup(name);
  auto a = s.ns.Lookup(parent, name);
  const double timeout = s.Timeout(parent);
  if (!a) {
    const int err = s.Errno(a.error());
    if (err == ENOENT && a.error().code() == Errc::kNotFound && !s.ns.IsDynamic(parent) &&
        s.ns.GetAttr(parent)) {
      // Trees never change: the kernel keeps a name absent from a tree it can see like a
      // present one. Names missing from the top directories (an image not pulled yet), names
      // withheld by a deny and lookups in a tree that is gone (wiped, to be pulled again) are
      // not cached at all, so neither a pull nor a lifted deny has to take a negative entry
      // back (see InvalidateInodes).
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
      // One backing id per inode while any open uses it, whichever process registered it.
      std::lock_guard lock(s.backing_mu);
      SessionState::TableLock table(*s.state);  // a hand-over's other process shares the table
      auto b = s.state->GetBacking(ino);
      if (b && b->id > 0 && b->opens > 0) {
        if (s.state->PutBacking(ino, {.id = b->id, .opens = b->opens + 1})) backing_id = b->id;
      } else {
        const int id = fuse_passthrough_open(req, (*c)->fd.Get());
        if (id > 0) {
          if (s.state->PutBacking(ino, {.id = id, .opens = 1})) {
            backing_id = id;
          } else {
            (void)fuse_passthrough_close(req, id);  // table full: this open goes without
          }
        }
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
    SessionState::TableLock table(*s.state);
    if (auto b = s.state->GetBacking(ino)) {
      if (b->opens <= 1) {
        s.state->EraseBacking(ino);  // recorded first: a kill in between only leaks the id
        (void)fuse_passthrough_close(req, b->id);
      } else {
        (void)s.state->PutBacking(ino, {.id = b->id, .opens = b->opens - 1});
      }
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

// libfuse's custom I/O: every read of /dev/fuse and every write to it. Reads wait in poll() on
// the device and on the wake eventfd, so Detach() can stop them at a request boundary; the first
// FUSE_INIT read is saved in the session state with our reply (a successor replays it), and in an
// adopted session the first read returns the saved INIT and the reply to it is swallowed.
ssize_t IoRead(int fd, void* buf, size_t len, void* userdata) {
  auto& s = *static_cast<FuseMount::Impl*>(userdata);
  {
    std::unique_lock lock(s.io_mu);
    if (s.replay_pending) {
      const auto init = s.state->init();
      if (len < init.size()) {
        errno = EINVAL;
        return -1;
      }
      std::memcpy(buf, init.data(), init.size());
      s.replay_pending = false;
      return static_cast<ssize_t>(init.size());
    }
    // Nothing else is read before libfuse has taken the replayed INIT (it refuses requests that
    // come first).
    s.io_cv.wait(lock, [&] { return s.init_done || s.stopping.load(); });
  }
  s.in_read.fetch_add(1, std::memory_order_acq_rel);
  struct Leave {
    std::atomic<int>& n;
    ~Leave() { n.fetch_sub(1, std::memory_order_acq_rel); }
  } leave{s.in_read};
  for (;;) {
    if (s.stopping.load(std::memory_order_acquire)) {
      errno = EINTR;  // libfuse's worker loop then sees the session exit
      return -1;
    }
    pollfd p[2] = {{.fd = fd, .events = POLLIN, .revents = 0},
                   {.fd = s.wake.Get(), .events = POLLIN, .revents = 0}};
    if (::poll(p, 2, -1) < 0) {
      if (errno == EINTR) continue;
      return -1;
    }
    if (s.stopping.load(std::memory_order_acquire)) continue;
    const ssize_t n = ::read(fd, buf, len);
    if (n < 0 && (errno == EAGAIN || errno == EINTR)) continue;  // another thread took it
    if (n >= static_cast<ssize_t>(sizeof(fuse_in_header)) &&
        !s.init_captured.load(std::memory_order_acquire)) {
      const auto* h = static_cast<const fuse_in_header*>(buf);
      if (h->opcode == FUSE_INIT && !s.init_captured.exchange(true)) {
        s.init_unique = h->unique;
        if (auto r = s.state->SetInit({static_cast<const std::byte*>(buf),
                                       static_cast<std::size_t>(n)});
            !r) {
          s.log->warn("FUSE_INIT not saved ({}): this mount cannot be handed over",
                      r.error().ToString());
        }
      }
    }
    return n;
  }
}

ssize_t IoWritev(int fd, struct iovec* iov, int count, void* userdata) {
  auto& s = *static_cast<FuseMount::Impl*>(userdata);
  if (count >= 1 && iov[0].iov_len >= sizeof(fuse_out_header)) {
    const auto* h = static_cast<const fuse_out_header*>(iov[0].iov_base);
    const std::uint64_t unique = s.init_unique.load(std::memory_order_acquire);
    if (unique != 0 && h->unique == unique) {
      std::string reply;
      for (int i = 0; i < count; ++i) {
        reply.append(static_cast<const char*>(iov[i].iov_base), iov[i].iov_len);
      }
      std::unique_lock lock(s.io_mu);
      if (!s.init_done) {
        // The answer to the replayed INIT: the kernel has its answer from the first process.
        s.replay_reply = std::move(reply);
        s.init_done = true;
        s.init_unique = 0;
        lock.unlock();
        s.io_cv.notify_all();
        return static_cast<ssize_t>(s.replay_reply->size());
      }
      s.init_unique = 0;
      if (auto r = s.state->SetInitReply(std::as_bytes(std::span(reply))); !r) {
        s.log->warn("FUSE_INIT reply not saved ({}): this mount cannot be handed over",
                    r.error().ToString());
      }
    }
  }
  return ::writev(fd, iov, count);
}

constexpr struct fuse_custom_io kIo = {
    .writev = IoWritev, .read = IoRead, .splice_receive = nullptr, .splice_send = nullptr,
    .clone_fd = nullptr};

// FUSE_NOTIFY_RESEND (kernel >= 6.9): requests a dead process read but never answered go back to
// the queue, marked as resent, for this session to read.
constexpr std::uint32_t kNotifyResend = 7;
constexpr std::uint64_t kHasResendFlag2 = std::uint64_t{1} << (39 - 32);

bool KernelCanResend(std::span<const std::byte> init) {
  if (init.size() < sizeof(fuse_in_header) + sizeof(fuse_init_in)) return false;
  fuse_init_in in{};
  std::memcpy(&in, init.data() + sizeof(fuse_in_header), sizeof(in));
  constexpr std::uint32_t kInitExt = 1u << 30;  // FUSE_INIT_EXT: flags2 is meaningful
  return in.major == 7 && (in.flags & kInitExt) && (in.flags2 & kHasResendFlag2);
}

// The file system type of the topmost mount at `path` ("fuse.digestd" for ours), or "".
std::string MountType(const std::string& path) {
  std::ifstream in("/proc/self/mountinfo");
  std::string line, type;
  while (std::getline(in, line)) {
    std::size_t pos = 0;
    for (int field = 0; field < 4 && pos != std::string::npos; ++field) {
      pos = line.find(' ', pos);
      if (pos != std::string::npos) ++pos;
    }
    if (pos == std::string::npos) continue;
    const auto end = line.find(' ', pos);
    if (end == std::string::npos || line.compare(pos, end - pos, path) != 0 ||
        end - pos != path.size()) {
      continue;
    }
    const auto dash = line.find(" - ", end);
    if (dash == std::string::npos) continue;
    const auto type_end = line.find(' ', dash + 3);
    type = line.substr(dash + 3, type_end == std::string::npos ? std::string::npos
                                                                 : type_end - dash - 3);
  }
  return type;
}

// Whether `path` is currently a mount point.
bool IsMountPoint(const std::string& path) { return !MountType(path).empty(); }

}  // namespace

void InvalidateInodes(FuseMount::Impl& s, const std::vector<DroppedRange>& ranges,
                      const std::vector<verify::Digest>& digests);

Result<bool> ClearStaleMount(const std::string& mountpoint) {
  // statfs always reaches the filesystem's daemon; stat may be answered from the attr cache.
  struct statvfs st {};
  if (::statvfs(mountpoint.c_str(), &st) == 0 || errno != ENOTCONN) return false;
  // "Transport endpoint is not connected": a FUSE mount whose daemon died.
  if (::umount2(mountpoint.c_str(), MNT_DETACH) != 0) {
    return SysError(Module::kFuse, "detach stale mount at " + Quote(mountpoint));
  }
  Logger(Module::kFuse)->warn("cleared a stale mount at {} (a previous daemon died)", mountpoint);
  return true;
}

FuseMount::FuseMount(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

FuseMount::~FuseMount() {
  if (auto r = Unmount(); !r) impl_->log->error("unmount: {}", r.error().ToString());
}

void FuseMount::Invalidate(const verify::Digest& digest) {
  auto& s = *impl_;
  // Its views here, and those of every image using it (built here, or, for numbers a
  // predecessor handed out, recorded in the store as its parents).
  auto ranges = s.ns.Ranges(digest);
  auto images = s.ns.ImagesUsing(digest);
  if (auto parents = s.store.Parents(digest)) {
    images.insert(images.end(), parents->begin(), parents->end());
  }
  std::sort(images.begin(), images.end());
  images.erase(std::unique(images.begin(), images.end()), images.end());
  for (const auto& image : images) {
    if (image == digest) continue;
    const auto more = s.ns.Ranges(image);
    ranges.insert(ranges.end(), more.begin(), more.end());
  }
  images.push_back(digest);
  InvalidateInodes(s, ranges, images);
}

// The kernel forgets the attributes (and, where reads are not admitted at open, the cached
// pages) of every inode it may hold in `ranges` and in the recorded ranges of `digests`: a walk
// over a cached name then asks for the attributes, and is answered ENOENT for what is gone.
//
// Only FUSE_NOTIFY_INVAL_INODE without pages: it takes no lock a reader can hold. An entry
// invalidation (FUSE_NOTIFY_INVAL_ENTRY, FUSE_NOTIFY_DELETE) takes the parent directory's lock,
// which a reader's lookup holds while it waits for this daemon's answer; killed at that moment,
// the daemon could never exit (its thread uninterruptible in the kernel) and so no successor
// could start to answer the lookup. Page invalidation waits on pages whose reads are in flight,
// the same cycle; it is only needed without opens (no_open), where reads are the admissions.
void InvalidateInodes(FuseMount::Impl& s, const std::vector<DroppedRange>& ranges,
                      const std::vector<verify::Digest>& digests) {
  if (s.se == nullptr || !s.mounted || s.detached) return;
  const off_t off = s.no_open.load(std::memory_order_relaxed) ? 0 : -1;
  auto inval = [&](Ino ino) { (void)fuse_lowlevel_notify_inval_inode(s.se, ino, off, 0); };
  for (const auto& r : ranges) {
    for (std::uint64_t i = 0; i < r.count; ++i) {
      if (s.ns.LookupCount(r.first + i) > 0) inval(r.first + i);
    }
  }
  if (s.adopted) {
    // The kernel may hold numbers a predecessor handed out, whose lookups this process never
    // counted: every number of the recorded ranges goes.
    for (const auto& d : digests) {
      auto recorded = s.store.InodeRangesOf(d);
      if (!recorded) continue;
      for (const auto& r : *recorded) {
        for (std::uint64_t i = 0; i < std::min<std::uint64_t>(r.count, 1u << 22); ++i) {
          inval(r.first + i);
        }
      }
    }
  }
  // Cached listings of the top directories go with their attributes (auto_inval_data: the
  // kernel drops a listing whose directory's mtime changed).
  for (Ino dir : {Namespace::kBlobsDirIno, Namespace::kLayersDirIno, Namespace::kImagesDirIno}) {
    (void)fuse_lowlevel_notify_inval_inode(s.se, dir, -1, 0);
  }
}

void FuseMount::Removed(const verify::Digest& digest) {
  auto& s = *impl_;
  auto images = s.ns.ImagesUsing(digest);
  const auto ranges = s.ns.Drop(digest);
  for (const auto& r : ranges) s.cache.EraseRange(r.first, r.count);
  if (!ranges.empty()) s.stats.views_dropped.fetch_add(ranges.size(), std::memory_order_relaxed);
  images.push_back(digest);
  InvalidateInodes(s, ranges, images);
}

Namespace& FuseMount::ns() { return impl_->ns; }
bool FuseMount::passthrough_active() const { return impl_->passthrough; }
const FuseStats& FuseMount::stats() const { return impl_->stats; }
const MountOptions& FuseMount::options() const { return impl_->opts; }

namespace {

struct fuse_session* NewSession(FuseMount::Impl& impl, bool debug) {
  std::vector<std::string> argv = {
      "digestd", "-o",
      "ro,nosuid,nodev,allow_other,default_permissions,fsname=digestd,subtype=digestd"};
  if (debug) argv.push_back("-d");
  std::vector<char*> cargv;
  for (auto& a : argv) cargv.push_back(a.data());
  struct fuse_args args = FUSE_ARGS_INIT(static_cast<int>(cargv.size()), cargv.data());
  struct fuse_session* se = fuse_session_new(&args, &kOps, sizeof(kOps), &impl);
  fuse_opt_free_args(&args);  // the session copied what it needs; args may have been reallocated
  return se;
}

// Puts the session's device fd behind the custom I/O (non-blocking reads after poll()).
Result<void> UseCustomIo(FuseMount::Impl& impl, int fd) {
  impl.wake = UniqueFd(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!impl.wake) return SysError(Module::kFuse, "eventfd");
  const int flags = ::fcntl(fd, F_GETFL);
  if (flags < 0 || ::fcntl(fd, F_SETFL, flags | O_NONBLOCK) != 0) {
    return SysError(Module::kFuse, "make /dev/fuse non-blocking");
  }
  if (const int rc = fuse_session_custom_io(impl.se, &kIo, fd); rc != 0) {
    return FuseError(Errc::kInternal, "fuse_session_custom_io failed", -rc);
  }
  return {};
}

void StartLoop(FuseMount::Impl& impl) {
  FuseMount::Impl* raw = &impl;
  impl.loop = std::thread([raw] {
    struct fuse_loop_config* cfg = fuse_loop_cfg_create();
    fuse_loop_cfg_set_max_threads(cfg, raw->opts.max_threads);
    fuse_loop_cfg_set_clone_fd(cfg, 0);
    const int rc = fuse_session_loop_mt(raw->se, cfg);
    fuse_loop_cfg_destroy(cfg);
    if (rc != 0 && !raw->stopping) raw->log->warn("fuse session loop ended with {}", rc);
  });
}

// Stops the workers at a request boundary: no read starts after `stopping`, and the session is
// only marked exited once no thread is inside a read (libfuse drops a request it read after the
// exit), so every request taken is answered. Waits for the loop.
void StopLoop(FuseMount::Impl& s) {
  if (!s.loop.joinable()) return;
  {
    std::lock_guard lock(s.io_mu);
    s.stopping = true;
  }
  s.io_cv.notify_all();
  const std::uint64_t one = 1;
  (void)!::write(s.wake.Get(), &one, sizeof(one));
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (s.in_read.load(std::memory_order_acquire) > 0 &&
         std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::microseconds(100));
  }
  fuse_session_exit(s.se);
  s.loop.join();
}

void ApplyReadAhead(FuseMount::Impl& impl) {
  if (impl.opts.read_ahead_kb == 0) return;
  struct stat st {};
  if (::stat(impl.opts.mountpoint.c_str(), &st) != 0) return;
  const std::string bdi = "/sys/class/bdi/" + std::to_string(major(st.st_dev)) + ":" +
                          std::to_string(minor(st.st_dev)) + "/read_ahead_kb";
  std::ofstream ra(bdi);
  ra << impl.opts.read_ahead_kb << "\n";
  ra.flush();
  if (!ra) impl.log->warn("could not set {} (read-ahead stays at the default)", bdi);
}

}  // namespace

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
  DIGESTD_ASSIGN_OR_RETURN(auto state, SessionState::Create(options.mountpoint));
  impl->state = std::move(state);
  impl->se = NewSession(*impl, options.debug);
  if (impl->se == nullptr) return FuseError(Errc::kInternal, "fuse_session_new failed");
  if (fuse_session_mount(impl->se, options.mountpoint.c_str()) != 0) {
    fuse_session_destroy(impl->se);
    impl->se = nullptr;
    return FuseError(Errc::kIo, "mount FUSE at " + Quote(options.mountpoint) +
                                    " failed (is /dev/fuse there, and are we root?)");
  }
  impl->mounted = true;
  FuseMountPtr mount(new FuseMount(std::move(impl)));  // from here, errors unmount
  DIGESTD_RETURN_IF_ERROR(UseCustomIo(*mount->impl_, fuse_session_fd(mount->impl_->se)));
  StartLoop(*mount->impl_);
  ApplyReadAhead(*mount->impl_);
  mount->impl_->log->info("mounted at {} threads={} read_ahead_kb={} passthrough={}",
                          options.mountpoint, options.max_threads, options.read_ahead_kb,
                          mount->impl_->passthrough.load());
  return mount;
}

Result<FuseMountPtr> FuseMount::Adopt(store::Store& store, const MountOptions& options,
                                      SessionFds fds, bool resend) {
  if (options.mountpoint.empty() || options.mountpoint.front() != '/') {
    return FuseError(Errc::kInvalidArgument, "mount point must be an absolute path");
  }
  if (!fds.fuse || !fds.state) return FuseError(Errc::kInvalidArgument, "session fds missing");
  DIGESTD_ASSIGN_OR_RETURN(auto state, SessionState::Open(std::move(fds.state)));
  if (state.mountpoint() != options.mountpoint) {
    return FuseError(Errc::kInvalidArgument, "the handed-over session is for " +
                                                 Quote(state.mountpoint()) + ", not " +
                                                 Quote(options.mountpoint));
  }
  if (state.init().size() < sizeof(fuse_in_header) + sizeof(fuse_init_in) ||
      state.init_reply().size() < sizeof(fuse_out_header)) {
    return FuseError(Errc::kCorrupt, "the handed-over session has no FUSE_INIT saved");
  }
  fuse_in_header init_header{};
  std::memcpy(&init_header, state.init().data(), sizeof(init_header));
  if (init_header.opcode != FUSE_INIT) {
    return FuseError(Errc::kCorrupt, "the saved FUSE_INIT is not one");
  }
  // Never stat the mount point here: it is served by this very session, which is not reading.
  if (MountType(options.mountpoint) != "fuse.digestd") {
    return FuseError(Errc::kNotFound, "no digestd mount at " + Quote(options.mountpoint) +
                                          " to adopt (it was unmounted)");
  }
  auto impl = std::make_unique<Impl>(store, options);
  impl->state = std::move(state);
  impl->adopted = true;
  impl->replay_pending = true;
  impl->init_done = false;
  impl->init_captured = true;
  impl->init_unique = init_header.unique;
  impl->resend = KernelCanResend(impl->state->init());
  impl->se = NewSession(*impl, options.debug);
  if (impl->se == nullptr) return FuseError(Errc::kInternal, "fuse_session_new failed");
  const int fd = fds.fuse.Get();
  if (auto r = UseCustomIo(*impl, fd); !r) {
    fuse_session_destroy(impl->se);
    return r.error();
  }
  (void)fds.fuse.Release();  // the session owns it now
  impl->mounted = true;
  FuseMountPtr mount(new FuseMount(std::move(impl)));
  auto& s = *mount->impl_;
  if (!s.resend) {
    s.log->warn("this kernel cannot resend FUSE requests (FUSE_NOTIFY_RESEND, Linux >= 6.9): "
                "requests a killed predecessor read stay unanswered until the connection is "
                "aborted (docs/operations.md, \"Restarts and upgrades\")");
  } else if (resend) {
    mount->Resend();
  }
  if (!options.warm.empty()) {
    const auto start = std::chrono::steady_clock::now();
    for (const auto& d : options.warm) s.ns.Warm(d);
    s.log->info("built {} views before serving in {} ms", options.warm.size(),
                std::chrono::duration_cast<std::chrono::milliseconds>(
                    std::chrono::steady_clock::now() - start).count());
  }
  StartLoop(s);
  {
    std::unique_lock lock(s.io_mu);
    if (!s.io_cv.wait_for(lock, std::chrono::seconds(10), [&] { return s.init_done; })) {
      lock.unlock();
      (void)mount->Detach();  // leave the mount as it was found
      return FuseError(Errc::kAborted, "libfuse did not take the replayed FUSE_INIT");
    }
  }
  // libfuse negotiated again from the same INIT; the kernel keeps what the first process
  // answered. They differ only when the options did (passthrough switched, say): say so.
  const auto saved = s.state->init_reply();
  if (!s.replay_reply || s.replay_reply->size() != saved.size() ||
      std::memcmp(s.replay_reply->data() + sizeof(fuse_out_header),
                  saved.data() + sizeof(fuse_out_header), saved.size() - sizeof(fuse_out_header)) != 0) {
    s.log->warn("this process would answer FUSE_INIT differently from the one that mounted (were "
                "mount options changed?); the kernel keeps the first answer until a remount");
  }
  s.log->info("adopted the mount at {} (kernel resend: {}, passthrough: {}, open backing ids: {})",
              options.mountpoint, s.resend ? "yes" : "no", s.passthrough.load(),
              s.state->backing_count());
  return mount;
}

Result<SessionFds> FuseMount::Export() const {
  auto& s = *impl_;
  if (s.se == nullptr || !s.state) return FuseError(Errc::kInvalidArgument, "no session");
  SessionFds out{UniqueFd(::fcntl(fuse_session_fd(s.se), F_DUPFD_CLOEXEC, 3)),
                 UniqueFd(::fcntl(s.state->fd(), F_DUPFD_CLOEXEC, 3))};
  if (!out.fuse || !out.state) return SysError(Module::kFuse, "dup session fds");
  return out;
}

Result<void> FuseMount::Detach() {
  auto& s = *impl_;
  if (s.se == nullptr || s.detached) return {};
  StopLoop(s);
  s.detached = true;
  s.log->info("detached from the mount at {} (handed over; the mount stays)", s.opts.mountpoint);
  return {};
}

void FuseMount::Resend() {
  auto& s = *impl_;
  if (!s.resend || s.se == nullptr) return;
  // Requests a predecessor read and never answered (it was killed) go back to the queue, for
  // whoever reads next; a reply to one of them from anyone else is refused by the kernel.
  fuse_out_header notify{.len = sizeof(fuse_out_header),
                         .error = static_cast<std::int32_t>(kNotifyResend), .unique = 0};
  if (::write(fuse_session_fd(s.se), &notify, sizeof(notify)) != static_cast<ssize_t>(sizeof(notify))) {
    s.log->warn("FUSE_NOTIFY_RESEND failed (errno {}): callers of requests a dead predecessor "
                "read may wait until the connection is aborted", errno);
  }
}

bool FuseMount::adopted() const { return impl_->adopted; }
bool FuseMount::resend_supported() const { return impl_->resend; }

Result<void> FuseMount::Unmount() {
  auto& s = *impl_;
  if (!s.se) return {};
  StopLoop(s);
  if (s.mounted && !s.detached) {
    if (s.adopted) {
      // libfuse did not mount this session: unmount by path.
      if (::umount2(s.opts.mountpoint.c_str(), MNT_DETACH) != 0) {
        s.log->warn("unmount {}: {}", s.opts.mountpoint, std::strerror(errno));
      }
    } else {
      fuse_session_unmount(s.se);
    }
    s.log->info("unmounted {}", s.opts.mountpoint);
  }
  s.mounted = false;
  fuse_session_destroy(s.se);
  s.se = nullptr;
  return {};
}

}  // namespace digestd::fusefs
