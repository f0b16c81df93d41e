#include "store/index.h"

#include <rocksdb/db.h>
#include <rocksdb/options.h>
#include <rocksdb/write_batch.h>

namespace digestd::store {
namespace {

constexpr const char* kCfNames[] = {"default", "meta",    "blobs", "refs",  "edges", "backrefs",
                                    "trees",   "entries", "leases", "deny", "audit",
                                    "filerefs", "images", "snapshots"};
constexpr std::size_t kCfCount = sizeof(kCfNames) / sizeof(kCfNames[0]);

Error DbError(std::string_view what, const rocksdb::Status& s) {
  return MakeError(Module::kStore, s.IsCorruption() ? Errc::kCorrupt : Errc::kIo,
                   "index " + std::string(what) + ": " + s.ToString());
}

rocksdb::Slice ToSlice(std::string_view s) { return rocksdb::Slice(s.data(), s.size()); }

}  // namespace

void Index::Batch::Put(Cf cf, std::string_view key, std::string_view value) {
  ops_.push_back({cf, {std::string(key), std::string(value)}});
}
void Index::Batch::Delete(Cf cf, std::string_view key) {
  ops_.push_back({cf, {std::string(key), std::nullopt}});
}
std::size_t Index::Batch::Count() const { return ops_.size(); }

Result<std::unique_ptr<Index>> Index::Open(const std::string& path) {
  rocksdb::DBOptions db_opts;
  db_opts.create_if_missing = true;
  db_opts.create_missing_column_families = true;
  // The store's records are small; keep RocksDB's own footprint and threads modest.
  db_opts.max_background_jobs = 2;
  db_opts.keep_log_file_num = 4;
  db_opts.max_manifest_file_size = 16 << 20;
  db_opts.paranoid_checks = true;
  std::vector<rocksdb::ColumnFamilyDescriptor> cfs;
  for (const char* name : kCfNames) {
    cfs.emplace_back(name, rocksdb::ColumnFamilyOptions());
  }
  std::unique_ptr<Index> index(new Index());
  rocksdb::DB* raw = nullptr;
  rocksdb::Status s = rocksdb::DB::Open(db_opts, path, cfs, &index->handles_, &raw);
  if (!s.ok()) return DbError("open " + path, s);
  index->db_.reset(raw);
  return index;
}

Index::~Index() {
  if (db_) {
    for (auto* h : handles_) {
      // Errors destroying a handle at close have no remedy; the DB is closed right after.
      (void)db_->DestroyColumnFamilyHandle(h);
    }
    (void)db_->Close();
  }
}

rocksdb::ColumnFamilyHandle* Index::Handle(Cf cf) const {
  const auto i = static_cast<std::size_t>(cf);
  DIGESTD_CHECK(i < kCfCount && i < handles_.size());
  return handles_[i];
}

Result<std::optional<std::string>> Index::Get(Cf cf, std::string_view key) const {
  std::string value;
  rocksdb::Status s = db_->Get(rocksdb::ReadOptions(), Handle(cf), ToSlice(key), &value);
  if (s.IsNotFound()) return std::optional<std::string>();
  if (!s.ok()) return DbError("get", s);
  return std::optional<std::string>(std::move(value));
}

Result<void> Index::Write(const Batch& batch, bool sync) {
  rocksdb::WriteBatch wb;
  for (const auto& [cf, kv] : batch.ops_) {
    rocksdb::Status s = kv.second ? wb.Put(Handle(cf), ToSlice(kv.first), ToSlice(*kv.second))
                                  : wb.Delete(Handle(cf), ToSlice(kv.first));
    if (!s.ok()) return DbError("batch", s);
  }
  rocksdb::WriteOptions wo;
  wo.sync = sync;
  rocksdb::Status s = db_->Write(wo, &wb);
  if (!s.ok()) return DbError("write", s);
  return {};
}

Result<void> Index::Scan(Cf cf, std::string_view start,
                         const std::function<bool(std::string_view, std::string_view)>& fn) const {
  std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(rocksdb::ReadOptions(), Handle(cf)));
  for (it->Seek(ToSlice(start)); it->Valid(); it->Next()) {
    if (!fn(std::string_view(it->key().data(), it->key().size()),
            std::string_view(it->value().data(), it->value().size()))) {
      break;
    }
  }
  if (!it->status().ok()) return DbError("scan", it->status());
  return {};
}

Result<void> Index::ScanPrefix(
    Cf cf, std::string_view prefix,
    const std::function<bool(std::string_view, std::string_view)>& fn) const {
  return Scan(cf, prefix, [&](std::string_view k, std::string_view v) {
    if (!k.starts_with(prefix)) return false;
    return fn(k, v);
  });
}

Result<std::optional<std::string>> Index::LastKey(Cf cf) const {
  std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(rocksdb::ReadOptions(), Handle(cf)));
  it->SeekToLast();
  if (!it->status().ok()) return DbError("seek", it->status());
  if (!it->Valid()) return std::optional<std::string>();
  return std::optional<std::string>(it->key().ToString());
}

}  // namespace digestd::store
