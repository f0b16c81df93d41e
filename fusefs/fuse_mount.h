#pragma once

// The libfuse3 low-level session serving a Namespace read-only at a mount point. Only this
// module includes FUSE headers; this header does not.
//
// Mount options: ro,nosuid,nodev,allow_other,default_permissions (fsname/subtype "digestd").
// Content never changes, so entry/attribute timeouts are long for trees (tree_timeout) and short
// for the top directories that list the store (dynamic_timeout, so a new pull appears and a
// denied digest disappears quickly); keep_cache is set and, where the kernel offers it, open and
// opendir are skipped (FUSE_CAP_NO_OPEN_SUPPORT / NO_OPENDIR_SUPPORT) so reads go by inode to a
// cached backing fd.
//
// Thread safety: Mount/Unmount from one thread; callbacks run on the session's worker threads.

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "common/error.h"
#include "common/unique_fd.h"
#include "fusefs/namespace.h"
#include "store/store.h"

namespace digestd::metrics {
class Registry;
}

namespace digestd::fusefs {

struct MountOptions {
  std::string mountpoint;  // absolute; created if missing
  unsigned max_threads = 8;
  // The mount's read-ahead (its bdi's read_ahead_kb); 0 keeps the kernel default (128 KiB).
  unsigned read_ahead_kb = 1024;
  double tree_timeout_s = 4 * 3600.0;
  double dynamic_timeout_s = 1.0;
  bool no_open = true;  // use FUSE_CAP_NO_OPEN_SUPPORT when the kernel has it (not with passthrough)
  // FUSE passthrough (kernel >= 6.9, libfuse >= 3.16): reads of regular files go from the kernel
  // straight to the backing file, never through the daemon. Falls back to the read path where
  // the kernel or the store's filesystem refuses it.
  bool passthrough = true;
  bool debug = false;   // libfuse's own request log on stderr
  // Backing fds kept open for reads (an LRU by inode). Each costs the process an fd that any
  // reader of the mount can make it spend: size it from the fd limit (ContentCacheBudget); when
  // an open still fails with EMFILE/ENFILE, half the cache is closed and the open retried.
  std::size_t content_cache_entries = 4096;
  // Group allowed into blobs/ (mode 0750 root:blobs_gid, blob files 0440): raw blobs and image
  // configs would bypass the modes of the files inside layers, so only root and this group (the
  // daemon's admin group) may read them. Layer trees and rootfs views keep the image's modes.
  std::uint32_t blobs_gid = 0;
  std::function<bool(const verify::Digest&)> hidden;  // see NamespaceOptions::hidden
  // Adopt only: views built before the session is served (Namespace::Warm): what a hand-over's
  // predecessor had built, so its readers never wait on this process building them cold.
  std::vector<verify::Digest> warm;
  // Test seam: runs in the worker thread before each lookup is answered (null in production).
  std::function<void(std::string_view name)> before_lookup;
};

// Counters for metrics; read with relaxed ordering.
struct FuseStats {
  std::atomic<std::uint64_t> lookups{0};
  std::atomic<std::uint64_t> getattrs{0};
  std::atomic<std::uint64_t> readdirs{0};
  std::atomic<std::uint64_t> opens{0};
  std::atomic<std::uint64_t> reads{0};
  std::atomic<std::uint64_t> read_bytes{0};
  std::atomic<std::uint64_t> errors{0};  // replies with an errno other than ENOENT/ENODATA
  std::atomic<std::uint64_t> passthrough_opens{0};      // opens served by the backing file
  std::atomic<std::uint64_t> passthrough_fallbacks{0};  // opens where passthrough was refused
  std::atomic<std::uint64_t> fd_evictions{0};  // cache halvings forced by EMFILE/ENFILE
  std::atomic<std::uint64_t> views_dropped{0};  // views dropped because their object was removed
  // Latency of every answered request, a Prometheus-style cumulative histogram: bucket i counts
  // requests that took at most kLatencyBounds[i] seconds; the last bucket is +Inf.
  static constexpr double kLatencyBounds[] = {0.00001, 0.00005, 0.0001, 0.0005, 0.001,
                                              0.005,   0.01,    0.05,   0.1,    1.0};
  static constexpr std::size_t kBuckets = sizeof(kLatencyBounds) / sizeof(double) + 1;
  std::atomic<std::uint64_t> latency_buckets[kBuckets] = {};
  std::atomic<std::uint64_t> latency_count{0};
  std::atomic<std::uint64_t> latency_sum_ns{0};
  void Observe(std::uint64_t ns) {
    const double s = static_cast<double>(ns) / 1e9;
    std::size_t i = 0;
    while (i + 1 < kBuckets && s > kLatencyBounds[i]) ++i;
    latency_buckets[i].fetch_add(1, std::memory_order_relaxed);
    latency_count.fetch_add(1, std::memory_order_relaxed);
    latency_sum_ns.fetch_add(ns, std::memory_order_relaxed);
  }
};

class FuseMount;
using FuseMountPtr = std::unique_ptr<FuseMount>;

// A live mount's kernel connection as one digestd process hands it to the next (through the
// service manager's fd store or digestd-supervise): the /dev/fuse fd and a memfd with the
// session's state (fusefs/session_state.h).
struct SessionFds {
  UniqueFd fuse;
  UniqueFd state;
};

class FuseMount {
 public:
  // Clears a stale mount at the mount point (a crashed daemon's), mounts, starts the worker
  // threads and applies read_ahead_kb. kBusy if a live filesystem is mounted there already.
  static Result<FuseMountPtr> Mount(store::Store& store, const MountOptions& options);
  // Takes over a live mount from a predecessor's session instead of mounting: same mount, same
  // kernel inode cache, no new FUSE_INIT (the saved one is replayed into libfuse and its answer
  // swallowed), and, with `resend`, the requests the predecessor read but never answered are
  // sent again by the kernel (FUSE_NOTIFY_RESEND, kernel >= 6.9; without it such callers wait
  // until the connection is aborted: logged). Without `resend` the predecessor is still serving
  // the same connection (a hand-over: both read requests until it detaches); call Resend() if it
  // then dies instead. kCorrupt: `fds.state` is not a digestd session state; kInvalidArgument:
  // it is for another mount point; kNotFound: nothing of ours is mounted there any more (a stop
  // unmounted it): mount afresh.
  static Result<FuseMountPtr> Adopt(store::Store& store, const MountOptions& options,
                                    SessionFds fds, bool resend = true);
  // Unmounts if still mounted (and not detached).
  ~FuseMount();
  FuseMount(const FuseMount&) = delete;
  FuseMount& operator=(const FuseMount&) = delete;

  // Stops the session and unmounts; waits for the worker threads. Idempotent.
  Result<void> Unmount();

  // Duplicates of the session's fds, for the fd store a successor adopts them from.
  Result<SessionFds> Export() const;
  // Graceful hand-over: stops reading requests at a request boundary, answers every request it
  // read, and returns with the mount still in place: whoever holds a copy of the connection (the
  // fd store) keeps it alive for a successor. After it, Unmount() only releases the session.
  Result<void> Detach();
  // Whether this session was adopted from a predecessor, and whether the kernel can resend
  // requests a dead predecessor left unanswered.
  bool adopted() const;
  // Has the kernel send again every request read from this connection and not answered yet (a
  // predecessor that died serving it). Requests this process is serving are sent again too; its
  // late replies to them are refused (ENOENT, ignored) and the resent ones answered. No-op when
  // the kernel cannot (resend_supported()).
  void Resend();
  bool resend_supported() const;

  // `digest` was denied or withdrawn: the kernel forgets the attributes of every inode it may
  // hold for it (blob, layer, image, and every image using it), so the next walk over a cached
  // name asks this mount, is answered ENOENT, and the digest is gone at once, not after the
  // entry timeout. Opens are refused by the mount itself. Never waits on a reader: see
  // InvalidateInodes in fuse_mount.cc (no entry invalidation; it can wedge a killed daemon).
  void Invalidate(const verify::Digest& digest);

  // `digest` (a blob, a layer's tree, or both) was removed from the store (wipe, GC, quota,
  // repair): drops every view built on it (its layer view and the image views using it), closes
  // the cached backing fds of their inodes, and invalidates the kernel's inodes, so nothing
  // serves a removed or overwritten object, and a later pull of the same digest gets fresh views.
  // Call it after the store's removal returns (never under a store lock: the kernel may wait on
  // a request that needs one).
  void Removed(const verify::Digest& digest);

  // Whether the kernel accepted FUSE passthrough for this mount.
  bool passthrough_active() const;

  Namespace& ns();
  const FuseStats& stats() const;
  // Request counts, passthrough state, errors and the latency histogram (fusefs/fuse_metrics.cc).
  void RegisterMetrics(metrics::Registry& registry) const;
  const MountOptions& options() const;

  struct Impl;

 private:
  explicit FuseMount(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// If `mountpoint` is a dead FUSE mount (ENOTCONN), detaches it and returns true.
Result<bool> ClearStaleMount(const std::string& mountpoint);

}  // namespace digestd::fusefs
