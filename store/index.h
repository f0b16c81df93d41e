#pragma once

// RocksDB-backed index (internal to store/; the only place that includes RocksDB headers).
// Column families are fixed by the schema; values are opaque strings here and are parsed and
// validated by records.h. Thread-safe.
//
// I/O errors: RocksDB refuses every write after one failed WAL write (a background error) until it
// is reopened. So after a failed write the next write reopens the database (replaying its WAL);
// when the disk still fails, it is opened read-only, reads go on, writes fail and are retried by
// reopening at the next write. RocksDB's own info log goes to digestd's logger: its file logger
// aborts the process in assertion-enabled builds after one failed write to index/LOG.

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <shared_mutex>
#include <string>
#include <string_view>
#include <vector>

#include "common/error.h"

namespace rocksdb {
class DB;
class WriteBatch;
class ColumnFamilyHandle;
}  // namespace rocksdb

namespace digestd::store {

enum class Cf : std::uint8_t {
  kDefault,
  kMeta,
  kBlobs,
  kRefs,
  kEdges,     // "<parent> <child>" -> ""    manifest -> config/layers
  kBackrefs,  // "<child> <parent>" -> ""    reverse of kEdges
  kTrees,
  kEntries,
  kLeases,
  kDeny,
  kAudit,
  kFileRefs,  // "<content> <layer>" -> ""        which layer trees use a file object
  kImages,    // "<manifest digest>" -> ImageRecord  why an image is here
  kSnapshots, // "<snapshot name>" -> opaque record of the containerd snapshotter
};

class Index {
 public:
  class Batch {
   public:
    void Put(Cf cf, std::string_view key, std::string_view value);
    void Delete(Cf cf, std::string_view key);
    std::size_t Count() const;

   private:
    friend class Index;
    std::vector<std::pair<Cf, std::pair<std::string, std::optional<std::string>>>> ops_;
  };

  // Opens (creating if missing) the database in directory `path`.
  static Result<std::unique_ptr<Index>> Open(const std::string& path);
  // Runs an open and a close of an empty database of the same shape in memory: RocksDB's first
  // open in a process costs twice the later ones (code and option tables touched the first
  // time), and a hand-over's successor does it before readers wait on its real open.
  static void WarmUp();
  ~Index();

  // nullopt when absent.
  Result<std::optional<std::string>> Get(Cf cf, std::string_view key) const;
  // Applies the batch atomically. sync=true waits until it is durable (WAL fsynced).
  Result<void> Write(const Batch& batch, bool sync = true);

  // Iterates keys >= start in order; fn returns false to stop.
  Result<void> Scan(Cf cf, std::string_view start,
                    const std::function<bool(std::string_view key, std::string_view value)>& fn) const;
  // Iterates keys that begin with prefix.
  Result<void> ScanPrefix(
      Cf cf, std::string_view prefix,
      const std::function<bool(std::string_view key, std::string_view value)>& fn) const;
  // Last key of a column family, nullopt when empty.
  Result<std::optional<std::string>> LastKey(Cf cf) const;

  // Applies the batch (synced) as the last write of this process: waits up to `wait` for writes
  // in progress, and refuses every write after it (kAborted). kBusy when writes did not finish.
  Result<void> WriteLast(const Batch& batch, std::chrono::milliseconds wait);

  // For a process about to stop: writes what is only in memory (and the log) to table files,
  // synced, so the next open replays a short log instead of every write since the last flush;
  // then waits for background work (a compaction the flush started) and starts no more.
  Result<void> FlushForStop();

  // After WriteLast, in a process handing the store to a successor that must open it while this
  // one still serves reads: opens a read-only view of the database as it is now (sealed, so it
  // never changes), puts it in place of the writable one and closes that (its lock goes with it).
  // Reads go on from the view, whatever the successor writes; writes fail. The view's table
  // files are all opened at once, so the successor's compactions cannot pull one away. kBusy
  // when calls in progress did not let go within `wait`; any failure leaves the index as it was.
  Result<void> ContinueReadOnly(std::chrono::milliseconds wait);

  // Writes that failed since the index was opened.
  std::uint64_t write_failures() const { return write_failures_.load(); }
  // True while the index is read-only after a write error it could not reopen from.
  bool degraded() const { return read_only_.load(); }

 private:
  Index() = default;
  Result<void> OpenDb(bool read_only);
  void CloseDb();
  struct Db;  // an open database and its column family handles
  Result<Db> OpenDbAt(bool read_only) const;
  static void CloseDb(Db& db);
  // After a failed write: close and open again (read-write, or read-only when that fails).
  Result<void> Reopen();
  rocksdb::ColumnFamilyHandle* Handle(Cf cf) const;
  Result<void> Fill(const Batch& batch, rocksdb::WriteBatch& wb) const;
  std::string path_;
  // Shared by every call, exclusive while reopening. Reads nest (scan callbacks read): glibc's
  // rwlock prefers readers, so a nested shared lock never waits behind a reopen.
  mutable std::shared_timed_mutex mu_;
  // Shared by every write, exclusive for the last one (WriteLast), which readers need not wait
  // for. Taken before mu_.
  std::shared_timed_mutex writes_mu_;
  std::unique_ptr<rocksdb::DB> db_;
  std::vector<rocksdb::ColumnFamilyHandle*> handles_;
  std::atomic<bool> needs_reopen_{false};
  std::atomic<bool> sealed_{false};  // after WriteLast
  std::atomic<bool> read_only_{false};
  std::atomic<std::uint64_t> write_failures_{0};
};

}  // namespace digestd::store
