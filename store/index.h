#pragma once

// RocksDB-backed index (internal to store/; the only place that includes RocksDB headers).
// Column families are fixed by the schema; values are opaque strings here and are parsed and
// validated by records.h. Thread-safe (RocksDB is).

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/error.h"

namespace rocksdb {
class DB;
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

 private:
  Index() = default;
  rocksdb::ColumnFamilyHandle* Handle(Cf cf) const;
  std::unique_ptr<rocksdb::DB> db_;
  std::vector<rocksdb::ColumnFamilyHandle*> handles_;
};

}  // namespace digestd::store
