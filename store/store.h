#pragma once

// The content-addressed blob store: verified blobs as files named by their digest, indexed by
// RocksDB. See docs/architecture.md ("The store") for the on-disk format and commit protocol.
//
// Thread safety: a Store and its methods are safe to call from many threads. A BlobWriter is used by
// one thread at a time. One process holds a store root at a time (an flock on <root>/LOCK).
//
// Trust: everything read back from the root — index records and names on disk — is parsed and
// validated; corrupt state is an error (Errc::kCorrupt) plus a counter, never a crash and never a
// path outside the root.

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "common/clock.h"
#include "common/error.h"
#include "common/unique_fd.h"
#include "store/tree.h"
#include "store/types.h"
#include "verify/digest.h"

namespace digestd::metrics {
class Registry;
}

namespace digestd::store {

struct AuditEvent;

inline constexpr int kSchemaVersion = 1;

struct StoreOptions {
  // Store root. Created (0700) if missing when `create` is set. Refused when it is a symlink, not a
  // directory, world-writable, or owned by another user.
  std::filesystem::path root;
  bool create = true;
  // Quota in bytes of blob content; 0 (default) disables eviction.
  std::uint64_t quota_bytes = 0;
  // Eviction starts when usage exceeds high * quota and stops below low * quota.
  double quota_high = 0.90;
  double quota_low = 0.80;
  // Bytes between sync_file_range() writeback kicks while ingesting. Default 8 MiB.
  std::size_t writeback_interval = 8u << 20;
  // Layers at least this large are decompressed on a thread of their own, a few MiB ahead of the
  // tar parser, when they are unpacked. Default 4 MiB.
  std::uint64_t pipeline_threshold = 4u << 20;
  // The clock seam (common/clock.h): unix seconds. Default: the system clock. The daemon's
  // parts read time through Now() below, so setting this moves time for all of them.
  Clock clock;
};

struct IngestOptions {
  std::string media_type;        // recorded; printable ASCII, at most 255 bytes
  std::vector<Digest> children;  // for manifests: config and layers (edges GC follows)
  std::string tenant;            // tenant whose credentials fetched it; empty if shared
  // When another writer is ingesting the same digest: true waits for it to finish (then the call
  // returns kAlreadyExists if it committed, or takes over if it aborted); false returns kBusy.
  bool wait_if_in_flight = true;
  // For layers: the expected digest of the uncompressed tar (the config's diff_id). When set, the
  // layer is decompressed (by media_type: gzip, zstd or plain tar) while it is written, and
  // Commit() fails with kDigestMismatch if it does not match, or kCorrupt if the stream is bad.
  std::optional<Digest> diff_id;
  // Bound on the uncompressed size when diff_id is set (a decompression bomb is kTooLarge-like
  // kCorrupt). Default 256 GiB.
  std::uint64_t max_uncompressed = std::uint64_t{256} << 30;
  // For layers with diff_id: also unpack the layer into file objects and a tree (as PrepareTree
  // does) while it streams in, on another core, following the staging file. Commit() then fails
  // if the tar is refused too, and a successful Commit() leaves the uncommitted tree for
  // BlobWriter::TakeTree(). Replaces the separate decode (the tree reader checks the diff_id).
  std::optional<UnpackLimits> unpack;
};

class PendingTree;
using PendingTreePtr = std::unique_ptr<PendingTree>;

class Store;

// Streams one blob into staging while hashing it. Destroying an uncommitted writer discards it.
class BlobWriter {
 public:
  ~BlobWriter();
  BlobWriter(const BlobWriter&) = delete;
  BlobWriter& operator=(const BlobWriter&) = delete;

  // Appends bytes. Writing past the expected size fails at once (kTooLarge) and poisons the
  // writer: Commit() will fail.
  Result<void> Write(std::span<const std::byte> data);
  Result<void> Write(std::string_view data) { return Write(std::as_bytes(std::span(data))); }

  // Checks size and digest, fsyncs, publishes the file under its digest (0444), fsyncs the
  // directory and records it in the index with a synced batch. On any error nothing is
  // published, the staging file is discarded, and the error names expected and actual values.
  Result<void> Commit();

  // Discards the staging file. Idempotent.
  void Abort();

  // For callers that write the staging file themselves (the daemon writes with io_uring):
  // BeginWrite(n) checks the size bound exactly as Write() does and says where the next n bytes
  // go; after writing exactly `data` there (pwrite semantics: the file position is not used),
  // CompleteWrite(data) accounts for them (hashing, diff_id decoding, writeback). Write() is
  // BeginWrite + pwrite + CompleteWrite.
  struct WriteSlot {
    int fd;                // borrowed; valid until Commit() or Abort()
    std::uint64_t offset;  // where the next byte goes
  };
  Result<WriteSlot> BeginWrite(std::size_t n);
  // kBlock: when the reader that follows the staging file (hashing, unpacking) lags too far
  // behind, CompleteWrite waits for it. kReport: it returns at once and Saturated() says when the
  // caller should hold off (an event loop that must not block waits asynchronously instead).
  enum class Backpressure { kBlock, kReport };
  Result<void> CompleteWrite(std::span<const std::byte> data,
                             Backpressure backpressure = Backpressure::kBlock);
  // True while the follower is further behind than it may be; the writer should wait.
  bool Saturated() const;

  const Digest& expected_digest() const;
  std::uint64_t expected_size() const;
  const IngestOptions& options() const;
  std::uint64_t bytes_written() const;

  // After a successful Commit() with IngestOptions::unpack: the layer's tree, not yet durable or
  // visible (Store::CommitTrees makes it so). Null otherwise, and after the first call.
  PendingTreePtr TakeTree();

 private:
  friend class Store;
  friend class ImageTxn;
  struct State;
  // Checks size, digest, diff_id and the tree reader's verdict.
  Result<void> Verify();
  // Publishes the staging file under its digest name (0444); `durable` adds the fdatasync
  // before and the directory fsync after.
  Result<void> Publish(bool durable);
  // For an image transaction: Verify + Publish without syncs and without a record; the digest
  // stays claimed. On error the writer is aborted.
  Result<void> Stage();
  explicit BlobWriter(std::unique_ptr<State> state);
  std::unique_ptr<State> s_;
};
using BlobWriterPtr = std::unique_ptr<BlobWriter>;

// A layer unpacked by Store::PrepareTree whose tree is not durable or visible yet. Destroying it
// uncommitted discards it: file objects only it created are removed.
class PendingTree {
 public:
  ~PendingTree();
  PendingTree(const PendingTree&) = delete;
  PendingTree& operator=(const PendingTree&) = delete;
  const TreeInfo& info() const;

  struct State;

 private:
  friend class Store;
  friend class ImageTxn;
  explicit PendingTree(std::unique_ptr<State> state);
  std::unique_ptr<State> s_;
};

class Store;
class ImageTxn;
using StorePtr = std::unique_ptr<Store>;

class Store {
 public:
  // Opens the store: checks the root, takes the lock, opens the index (refusing a newer schema),
  // wipes staging and reconciles index and files (see recovery()).
  static Result<StorePtr> Open(const StoreOptions& options);
  ~Store();
  Store(const Store&) = delete;
  Store& operator=(const Store&) = delete;

  const std::filesystem::path& root() const;
  const RecoveryReport& recovery() const;

  // ---- blobs
  // Starts ingesting a blob. kAlreadyExists when it is committed already; kPermission when the
  // digest is denied; kBusy per IngestOptions::wait_if_in_flight.
  Result<BlobWriterPtr> Ingest(const Digest& expected, std::uint64_t expected_size,
                               IngestOptions options = {});
  // Ingest + Write + Commit of an in-memory blob; an existing blob is success.
  Result<void> PutBlob(const Digest& expected, std::string_view bytes, IngestOptions options = {});

  bool Contains(const Digest& digest) const;
  // Read-only fd to the blob's file. kNotFound if absent; kPermission if denied.
  Result<UniqueFd> OpenBlob(const Digest& digest) const;
  Result<BlobInfo> Stat(const Digest& digest) const;
  // A whole small blob (a manifest, a config) in memory; kTooLarge when it is over `cap` bytes.
  Result<std::string> ReadBlob(const Digest& digest, std::uint64_t cap) const;
  // The layer digests of an image manifest in the store, bottom first. kNotFound when `manifest`
  // is absent or not an image manifest (an index, a config); other errors when it cannot be read.
  // With `even_if_denied`, a denied manifest is read too (for deciding what only denied images
  // use); otherwise it is refused like every other read of a denied blob.
  Result<std::vector<Digest>> ImageLayers(const Digest& manifest, bool even_if_denied = false) const;
  // Blobs in digest order, starting after `after`; at most `limit` (1..10000) per page.
  Result<BlobPage> ListBlobs(const std::optional<Digest>& after, std::size_t limit) const;
  // Removes file, record and its edges. kNotFound if absent.
  Result<void> RemoveBlob(const Digest& digest);
  // Marks the blob used now (for LRU eviction). Not synced: losing it in a crash is harmless.
  Result<void> Touch(const Digest& digest);
  // Manifests that reference `digest`, and what `digest` references.
  Result<std::vector<Digest>> Parents(const Digest& digest) const;
  Result<std::vector<Digest>> Children(const Digest& digest) const;

  // ---- layer trees (files/ and the trees/entries/filerefs index; see docs/architecture.md)
  // Unpacks committed layer `layer` (gzip, zstd or plain tar per `media_type`, or the media type
  // recorded at ingest when empty) into content-addressed file objects and a tree record. The
  // uncompressed stream must hash to `diff_id` (kDigestMismatch otherwise); hostile entries and
  // anything past `limits` are kCorrupt naming the entry (see tar_reader.h). On any failure no
  // tree is recorded and file objects only this layer would have used are removed. Idempotent:
  // a layer already unpacked returns its info once `diff_id` is checked against the record.
  // kPermission if the layer is denied; kNotFound if it is not committed.
  Result<TreeInfo> UnpackLayer(const Digest& layer, const Digest& diff_id,
                               std::string_view media_type = {}, const UnpackLimits& limits = {});
  // UnpackLayer in two steps, so that many layers (one pull) share one sync: PrepareTree does
  // all the checks and writes the file objects (pinned, not synced); CommitTrees makes every
  // given tree durable and visible with one syncfs and one synced index batch (on error none of
  // them is recorded). A layer that already had a tree yields a PendingTree with nothing to do.
  Result<PendingTreePtr> PrepareTree(const Digest& layer, const Digest& diff_id,
                                     std::string_view media_type = {},
                                     const UnpackLimits& limits = {});
  Result<void> CommitTrees(std::span<const PendingTreePtr> trees);
  // nullopt when the layer has no tree.
  Result<std::optional<TreeInfo>> GetTreeInfo(const Digest& layer) const;
  // Every recorded tree, in layer digest order.
  Result<std::vector<TreeInfo>> ListTrees() const;
  // The whole tree, validated (paths, parents, types, link groups); kCorrupt on any bad record.
  Result<LayerTree> LoadTree(const Digest& layer) const;
  // Read-only fd to a file object's content. kNotFound if absent.
  Result<UniqueFd> OpenFile(const Digest& content) const;
  // Number and bytes of file objects (for metrics and statfs); walks files/.
  Result<Usage> FileUsage() const;

  // ---- refs (canonical reference -> manifest digest)
  Result<void> SetRef(std::string_view reference, const Digest& manifest);
  Result<RefRecord> GetRef(std::string_view reference) const;
  Result<std::vector<RefRecord>> ListRefs() const;
  Result<void> RemoveRef(std::string_view reference);

  // ---- image records (why an image is here; removed with its manifest)
  Result<void> PutImageRecord(const ImageRecord& image);
  Result<std::optional<ImageRecord>> GetImageRecord(const Digest& manifest) const;
  Result<std::vector<ImageRecord>> ListImageRecords() const;

  // Records of the containerd snapshotter (snapshotter/), opaque to the store: the snapshotter
  // encodes and strictly decodes them. Keys are snapshot names (1..4096 bytes, no NUL).
  Result<void> PutSnapshotRecord(std::string_view name, std::string_view value);
  Result<void> DeleteSnapshotRecord(std::string_view name);
  Result<std::vector<std::pair<std::string, std::string>>> ListSnapshotRecords() const;

  // ---- leases
  Result<void> PutLease(const Lease& lease);
  Result<Lease> GetLease(std::string_view id) const;
  Result<std::vector<Lease>> ListLeases() const;
  Result<void> RemoveLease(std::string_view id);
  // Releases lease `id`. With `wipe`: every blob reachable from the lease that was pulled with
  // the lease's tenant (BlobInfo::tenant) and that no other lease reaches is overwritten with
  // zeros, synced and unlinked, with its tree; so is every file object no remaining tree uses;
  // references to wiped manifests are removed. Staging files are anonymous and die with their
  // writer, so no tenant data persists there. kNotFound if there is no such lease.
  // With `owner` (a release on a container's behalf, e.g. the OCI poststop hook): the lease must
  // be bound to that container (Lease::container, non-empty) and, when owner->tenant is set, to
  // that tenant; otherwise kPermission and nothing is released. Checked under the same lock as
  // the release.
  Result<WipeReport> ReleaseLease(std::string_view id, bool wipe,
                                  const LeaseOwner* owner = nullptr);

  // ---- clean stop
  // Records that this process stops cleanly, as its last index write: nothing is being written,
  // staged or removed, so the next Open can skip the walks of blobs/ and files/ (they repair what
  // a crash leaves, and take most of a restart's time). Every index write after it fails
  // (kAborted). False, recording nothing, when the store is busy (a pull, GC or wipe running):
  // the next open then recovers in full. Open takes the record back before anything else, so a
  // crash after that recovers in full again.
  bool MarkCleanShutdown();
  // After MarkCleanShutdown returned true, in a process that hands over to a successor: gives
  // the store to the successor while this process still serves reads from it. The index goes on
  // as a read-only view of its sealed state (Index::ContinueReadOnly), its writable database is
  // closed and the store's lock dropped, so the successor opens the store while the mount is
  // still served (a hand-over's readers never wait on that open). Reads of this object keep
  // answering from the view; every write fails. False (nothing released) when the view could
  // not be opened or the index not be switched at once: the successor then waits for this
  // process's exit.
  bool ReleaseForSuccessor();
  // For a process about to open a store that another one still holds: runs the index's open
  // path once in memory (nothing on disk is touched), so that the real Open runs warm.
  static void WarmUp();
  // Before a stop, while the mount still serves: writes the index's memory out to its tables,
  // so that the next process's open (which readers of a handed-over mount wait for) replays a
  // short log instead of every write since the last flush, and lets RocksDB's background work
  // finish (none starts after it: the process is stopping).
  Result<void> FlushIndex();

  // ---- deny list
  Result<void> Deny(const Digest& digest, std::string_view reason);
  Result<void> Undeny(const Digest& digest);
  bool IsDenied(const Digest& digest) const;
  Result<std::vector<DenyRecord>> ListDenied() const;

  // ---- audit log: append-only, sequence numbers start at 1
  // Appends `event` (store/audit_event.h: the log's one schema; `time` 0 takes the store's
  // clock) and returns its sequence number. A failed write is logged and counted
  // (counters().audit_write_failures) before it is returned: no event is dropped silently.
  Result<std::uint64_t> AppendAudit(const AuditEvent& event);
  Result<std::vector<AuditRecord>> ReadAudit(std::uint64_t since_seq, std::size_t limit) const;
  // Size of the audit log (records and bytes of their JSON), kept as events come and go.
  AuditStats GetAuditStats() const;
  // Retention: removes the oldest events while the log is over `max_bytes` (0: no size bound),
  // and every event older than `max_age_s` seconds before now (0: no age bound). Sequence
  // numbers are never reused. An event whose "time" cannot be read counts as old.
  Result<AuditPruneReport> PruneAudit(std::uint64_t max_bytes, std::int64_t max_age_s);

  // Called with the digests (blobs and their trees) that a removal took away: GC, quota
  // eviction, lease wipe, RemoveBlob, fsck repair. Runs on the remover's thread after the
  // removal's locks are released, so it may wait on anything (the mount drops its views and
  // cached fds there). Set once, before the store is shared.
  void SetRemovalListener(std::function<void(const std::vector<Digest>&)> listener);

  // ---- maintenance
  // Mark from refs and leases (following manifest edges), sweep the rest.
  Result<GcReport> CollectGarbage(bool dry_run);
  // When usage exceeds the high watermark: evicts unleased images least recently used first until
  // usage is below the low watermark.
  Result<QuotaReport> EnforceQuota();
  // Re-hashes every blob; with repair, removes what is wrong and adopts valid orphans.
  Result<FsckReport> Fsck(bool repair);
  Usage GetUsage() const;
  // Changes (in this process) whenever what the store lists can change: a commit, a removal, an
  // unpacked tree, a deny or undeny. Readers that cache listings compare it.
  std::uint64_t generation() const;
  StoreCounters counters() const;
  // Unix seconds by the store's clock (StoreOptions::clock).
  std::int64_t Now() const;
  // The store's usage, audit log size, counters and state, read whenever the registry renders
  // (store/store_metrics.cc lists them).
  void RegisterMetrics(metrics::Registry& registry) const;
  // True while the index is read-only after a write error (reads are served; writes fail and
  // are retried by reopening it). See index.h.
  bool degraded() const;

  // ---- image transactions (image_txn.h): what one pull stores, committed as one durable step
  // Inode numbers the mount (fusefs/) hands the kernel, kept in the index so that every later
  // digestd process on this store gives an object the same numbers: a restarted daemon adopts the
  // kernel's FUSE connection with its inode cache (docs/architecture.md, "Live restart"). A
  // range is allocated once per (kind, digest) and never reused; image commits allocate their
  // layers' and image's ranges in the commit's own batch, anything else gets one here (one
  // synced index write). A recorded range smaller than `count`, or of another kInodeLayout, is
  // replaced by a new one (the old numbers then resolve to nothing: the kernel gets ESTALE).
  Result<InodeRange> InodesFor(InodeKind kind, const Digest& digest, std::uint64_t count);
  // The ranges recorded for `digest` (any kind); reads only.
  Result<std::vector<InodeRange>> InodeRangesOf(const Digest& digest) const;
  // The recorded range holding `ino`; nullopt when none does.
  Result<std::optional<InodeRange>> InodeOwner(std::uint64_t ino) const;
  Result<std::unique_ptr<ImageTxn>> BeginImage(std::string_view tenant);
  // Drops an image: its record and every reference to `manifest` (its blobs go at the next GC
  // unless something else holds them). kNotFound when neither exists.
  Result<void> RemoveImage(const Digest& manifest);
  // Stored size of an image: bytes of its blobs and of the file objects its layers use (each
  // counted once). For listings.
  Result<Usage> SizeOf(const Digest& manifest) const;

  // Re-hashes a slice of the store online (blobs, then file objects, in digest order), resuming
  // where the previous call stopped; see ScrubOptions.
  Result<ScrubReport> Scrub(const ScrubOptions& options);

  // Opaque; defined in store_impl.h for store/'s own translation units.
  struct Impl;

 private:
  friend class BlobWriter;
  friend class ImageTxn;
  // References of image records lacking a blob, an edge or a layer tree.
  Result<std::vector<std::string>> BrokenImages() const;
  // Ingest once `expected` is claimed (in flight) by the caller.
  Result<BlobWriterPtr> StartWriter(const Digest& expected, std::uint64_t expected_size,
                                    IngestOptions options);
  explicit Store(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace digestd::store
