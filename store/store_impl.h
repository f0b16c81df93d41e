#pragma once

// Internal state of a Store, shared by store.cc, blob_writer.cc and maintenance.cc.
//
// Lock order: maint_mu (shared for commits and ref/lease writes, exclusive for GC, quota and fsck)
// before mu (in-flight set, usage, deny set, audit sequence). Neither is held across a callback.

#include <sys/types.h>

#include <atomic>
#include <functional>
#include <optional>
#include <string>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <shared_mutex>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include <spdlog/logger.h>

#include "common/unique_fd.h"
#include "store/index.h"
#include "store/tar_reader.h"
#include "store/store.h"
#include "verify/hasher.h"

namespace digestd::store {

// Record parsing shared by the meta records (inodes.cc): a decimal u64, the whole of `s`; and
// `s` split on single spaces into exactly n fields.
bool ParseU64(std::string_view s, std::uint64_t& out);
bool Fields(std::string_view s, std::size_t n, std::vector<std::string_view>& out);

struct AtomicCounters {
  std::atomic<std::uint64_t> corrupt_records{0};
  std::atomic<std::uint64_t> digest_mismatches{0};
  std::atomic<std::uint64_t> size_mismatches{0};
  std::atomic<std::uint64_t> commits{0};
  std::atomic<std::uint64_t> aborts{0};
  std::atomic<std::uint64_t> scrub_bytes{0};
  std::atomic<std::uint64_t> scrub_problems{0};
  std::atomic<std::uint64_t> scrub_passes{0};
  std::atomic<std::uint64_t> audit_write_failures{0};
};

// One file found under blobs/ or files/: either a well-formed digest name, or something to remove.
struct FoundFile {
  int shard_fd;
  std::string name;
  std::optional<Digest> digest;  // nullopt: bad name or not a regular file
  std::string problem;           // why digest is nullopt
  std::uint64_t size = 0;
  mode_t mode = 0;
};

// Walks <dir>/<alg>/<shard>/<name> (blobs/ or files/), creating missing algorithm and shard
// directories, and calls fn for every file. Entries that are not shard directories are reported
// through fn too (shard_fd = the algorithm directory, digest = nullopt).
// Adds to `batch` a new inode range for (kind, digest) unless one of this layout with room for
// `count` is recorded, plus the advanced counter. The caller holds impl.inode_mu until `batch`
// is written (or dropped: the numbers are then simply never used).
Result<void> AddInodeRange(Store::Impl& impl, Index::Batch& batch, InodeKind kind,
                           const Digest& digest, std::uint64_t count);

Result<void> WalkBlobFiles(int dir_fd, const std::function<Result<void>(const FoundFile&)>& fn);

struct Store::Impl {
  StoreOptions opts;
  std::shared_ptr<spdlog::logger> log;
  UniqueFd root_fd;
  UniqueFd lock_fd;
  UniqueFd blobs_fd;
  UniqueFd staging_fd;
  UniqueFd files_fd;
  std::unique_ptr<Index> index;
  RecoveryReport recovery;
  std::atomic<bool> use_tmpfile{true};
  // Large file objects are written with O_DIRECT until the filesystem refuses it once.
  std::atomic<bool> use_direct_io{true};
  mutable AtomicCounters counters;  // counted from const readers too
  std::atomic<std::uint64_t> generation{0};  // see Store::generation()

  mutable std::shared_mutex maint_mu;
  mutable std::mutex mu;
  std::condition_variable in_flight_cv;
  std::unordered_set<Digest> in_flight;
  Usage usage;
  std::unordered_set<Digest> denied;
  std::uint64_t next_audit_seq = 1;
  // Removed digests not yet told to the removal listener (guarded by mu).
  std::vector<Digest> removed_pending;
  std::function<void(const std::vector<Digest>&)> removal_listener;  // set once before use
  AuditStats audit;  // guarded by mu

  // Blobs staged by image transactions (image_txn.h): published under their digest name, neither
  // synced nor recorded, still claimed in `in_flight`. Guarded by mu.
  struct StagedBlob {
    std::uint64_t size = 0;
    std::string media_type;
    std::string tenant;
    int holders = 0;
    bool recorded = false;  // a holder committed it
    bool keep = false;      // a commit whose index write may have happened named it: never unlink
    std::shared_ptr<PendingTree> tree;  // unpacked while it streamed in (layers)
  };
  std::unordered_map<Digest, StagedBlob> staged;
  // Stored blobs held by image transactions in flight (count per digest). Guarded by mu.
  std::unordered_map<Digest, int> txn_pins;
  // Image commits one at a time (each is one syncfs and one batch; trees shared between
  // transactions are recorded by exactly one of them).
  std::mutex commit_mu;
  UniqueFd quarantine_fd;

  // File objects in use by unpacks in flight (content digest -> count), so that a failed unpack
  // never removes a file object another unpack is about to reference. Guarded by files_mu, which
  // is also held while removing file objects; taken after maint_mu, never together with mu.
  std::mutex files_mu;
  std::unordered_map<Digest, int> file_pins;

  // Inode ranges (Store::InodesFor): the next free number, loaded from the index on first use.
  // Held from reserving numbers until the batch recording them is written, so the counter the
  // index keeps never goes back. Taken after commit_mu; never together with mu.
  std::mutex inode_mu;
  std::optional<std::uint64_t> inode_next;

  std::int64_t Now() const;
  // "sha256/ab/<hex>" relative to blobs_fd; built only from a parsed Digest.
  static std::string RelPath(const Digest& d);
  static std::string ShardPath(const Digest& d);

  Result<std::optional<BlobInfo>> GetBlobRecord(const Digest& d) const;
  // The whole blob file `d` of `size` bytes (no deny check: callers decide).
  Result<std::string> ReadWhole(const Digest& d, std::uint64_t size) const;
  // Every record of `cf`, decoded strictly: the first corrupt one is the error (and a counter),
  // never a partial list. `decode(key, value)` returns Result<T>.
  template <class T, class Decode>
  Result<std::vector<T>> DecodeAll(Cf cf, const Decode& decode) const {
    std::vector<T> out;
    std::optional<Error> err;
    DIGESTD_RETURN_IF_ERROR(index->Scan(cf, "", [&](std::string_view k, std::string_view v) {
      auto rec = decode(k, v);
      if (!rec) {
        counters.corrupt_records.fetch_add(1, std::memory_order_relaxed);
        err = rec.error();
        return false;
      }
      out.push_back(std::move(*rec));
      return true;
    }));
    if (err) return *err;
    return out;
  }
  Result<std::vector<Digest>> Edges(Cf cf, const Digest& d) const;
  // Adds deletes of the blob record and its outgoing edges (and their backrefs) to `batch`.
  Result<void> AddBlobDeletes(Index::Batch& batch, const Digest& d) const;
  // Unlinks the file and removes the records; caller holds maint_mu exclusively or shared.
  Result<void> RemoveBlobUnlocked(const Digest& d, std::uint64_t size);
  // Re-hashes file `name` in `dirfd` and compares with `expected` (and `size` when set).
  Result<void> VerifyFile(int dirfd, std::string_view name, const Digest& expected,
                          std::optional<std::uint64_t> size, std::uint64_t* hashed = nullptr) const;
  // Appends `event` (store/audit_event.h); a failure is logged and counted, and returned.
  Result<std::uint64_t> Audit(AuditEvent event);
  // An event the store records itself (actor "store"); a failure is logged and counted.
  void AuditInternal(std::string_view type, std::string_view digest, std::string_view reason);

  // Adds deletes of `layer`'s tree (info, entries, filerefs) to `batch`; the contents it used are
  // appended to `contents` so the caller can sweep them after the batch is written.
  Result<void> AddTreeDeletes(Index::Batch& batch, const Digest& layer,
                              std::vector<Digest>& contents) const;
  // Removes the file objects among `contents` that no tree references and no unpack pins.
  // With `contents` null, walks all of files/ (recovery and GC). Returns how many were removed.
  Result<std::uint64_t> SweepFiles(const std::vector<Digest>* contents, bool wipe = false,
                                   std::uint64_t* bytes = nullptr);
  bool FileReferenced(const Digest& content) const;

  Result<void> Recover();
  // Staging and transient leases only: what a clean stop can still leave (run by Recover too).
  Result<void> RecoverQuick();
  // Reads and removes (synced) the clean-stop record; its usage, or nullopt when there is none.
  Result<std::optional<Usage>> TakeCleanStop();
  Result<GcReport> GcLocked(bool dry_run);

  // What no remover may take: everything reachable through manifest edges from the references,
  // image records, leases, blobs being written or staged, and blobs image transactions hold. The
  // one liveness rule of GC, quota eviction, lease wipe and image removal; callers hold maint_mu
  // exclusively. With `lease`: that lease is left out, and so are the references and image
  // records of its own tenant's images among its roots (what a wipe of it may take).
  Result<std::unordered_set<Digest>> LiveSet(const Lease* lease = nullptr) const;
  // Adds `roots` and everything reachable from them to `live`.
  Result<void> MarkFrom(std::vector<Digest> roots, std::unordered_set<Digest>& live) const;
  // Quota: evicts unleased images (least recently used first) until usage is at most `target`
  // bytes; caller holds maint_mu exclusively.
  Result<void> EvictLocked(std::uint64_t target, QuotaReport& report);
  // Before `need` more bytes are written: when the quota would be exceeded, evicts; kNoSpace
  // ("the store is full") when even then they do not fit. No store lock held by the caller.
  Result<void> MakeRoom(std::uint64_t need);
  // Moves file `name` in `dirfd` to quarantine/<target> (replacing an older one).
  Result<void> Quarantine(int dirfd, std::string_view name, std::string_view target);
  // Removes the blobs and trees of every layer whose tree uses file object `content`.
  Result<std::vector<Digest>> RemoveLayersUsing(const Digest& content);

  void FinishInFlight(const Digest& d);
  // Records a removal for the listener (caller may hold any lock).
  void NoteRemoved(const Digest& d);
  // Tells the listener what was removed; call with no store lock held.
  void FlushRemoved();
};

// Declared before a remover takes its locks, so that its destructor (after theirs) tells the
// removal listener what went.
class RemovalNotice {
 public:
  explicit RemovalNotice(Store::Impl& impl) : impl_(impl) {}
  ~RemovalNotice() { impl_.FlushRemoved(); }
  RemovalNotice(const RemovalNotice&) = delete;
  RemovalNotice& operator=(const RemovalNotice&) = delete;

 private:
  Store::Impl& impl_;
};

// Reads a layer's tar from `source` into file objects (pinned, not synced) and an uncommitted
// tree, checking the diff_id (trees.cc). Used by PrepareTree over a stored blob and by the blob
// writer over its staging file while the layer downloads.
// For image transactions (records written in the transaction's own batch).
bool TreeNeedsRecords(const PendingTree::State& s);
Result<void> AddTreeRecords(Store::Impl& impl, Index::Batch& batch, PendingTree::State& s,
                            std::int64_t now);
void MarkTreeCommitted(Store::Impl& impl, PendingTree::State& s);
const TreeInfo& PendingTreeInfo(const PendingTree::State& s);

Result<PendingTreePtr> ReadPendingTree(Store::Impl& impl, const Digest& layer,
                                       const Digest& diff_id, LayerDecoder::Kind kind,
                                       const UnpackLimits& limits, ByteSource& source,
                                       bool pipelined);

}  // namespace digestd::store
