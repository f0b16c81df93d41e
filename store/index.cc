#include "store/index.h"
#include "store/errors.h"

#include <rocksdb/convenience.h>
#include <rocksdb/db.h>
#include <rocksdb/env.h>
#include <rocksdb/options.h>
#include <rocksdb/write_batch.h>

#include <chrono>
#include <cstdarg>
#include <cstdio>
#include <mutex>

#include "common/log.h"

namespace digestd::store {
namespace {

constexpr const char* kCfNames[] = {"default", "meta",    "blobs", "refs",  "edges", "backrefs",
                                    "trees",   "entries", "leases", "deny", "audit",
                                    "filerefs", "images", "snapshots"};
constexpr std::size_t kCfCount = sizeof(kCfNames) / sizeof(kCfNames[0]);

Error DbError(std::string_view what, const rocksdb::Status& s) {
  return StoreError(s.IsCorruption() ? Errc::kCorrupt : Errc::kIo,
                   "index " + std::string(what) + ": " + s.ToString());
}

rocksdb::Slice ToSlice(std::string_view s) { return rocksdb::Slice(s.data(), s.size()); }

// RocksDB's info log through digestd's logger (never a file of its own under index/).
class InfoLog final : public rocksdb::Logger {
 public:
  InfoLog() : rocksdb::Logger(rocksdb::InfoLogLevel::WARN_LEVEL), log_(::digestd::Logger(Module::kStore, "index")) {}
  using rocksdb::Logger::Logv;
  void Logv(const char* format, va_list ap) override {
    Logv(rocksdb::InfoLogLevel::INFO_LEVEL, format, ap);
  }
  void Logv(const rocksdb::InfoLogLevel level, const char* format, va_list ap) override {
    if (level < GetInfoLogLevel()) return;
    char buf[1024];
    std::vsnprintf(buf, sizeof buf, format, ap);
    if (level >= rocksdb::InfoLogLevel::ERROR_LEVEL) {
      log_->error("rocksdb: {}", buf);
    } else {
      log_->warn("rocksdb: {}", buf);
    }
  }

 private:
  std::shared_ptr<spdlog::logger> log_;
};

}  // namespace

void Index::Batch::Put(Cf cf, std::string_view key, std::string_view value) {
  ops_.push_back({cf, {std::string(key), std::string(value)}});
}
void Index::Batch::Delete(Cf cf, std::string_view key) {
  ops_.push_back({cf, {std::string(key), std::nullopt}});
}
std::size_t Index::Batch::Count() const { return ops_.size(); }

Result<std::unique_ptr<Index>> Index::Open(const std::string& path) {
  std::unique_ptr<Index> index(new Index());
  index->path_ = path;
  DIGESTD_RETURN_IF_ERROR(index->OpenDb(/*read_only=*/false));
  return index;
}

namespace {

rocksdb::DBOptions DbOptions() {
  rocksdb::DBOptions db_opts;
  db_opts.create_if_missing = true;
  db_opts.create_missing_column_families = true;
  // The store's records are small; keep RocksDB's own footprint and threads modest.
  db_opts.max_background_jobs = 2;
  db_opts.keep_log_file_num = 4;
  db_opts.max_manifest_file_size = 16 << 20;
  db_opts.paranoid_checks = true;
  db_opts.info_log = std::make_shared<InfoLog>();
  // Open in the calling thread: the default (16 threads per column family to load table
  // handlers) started and ended about 210 threads at every open, a third of the open's time;
  // a restart waits on it (docs/PERFORMANCE.md, "Restarts").
  db_opts.max_file_opening_threads = 1;
  db_opts.skip_stats_update_on_db_open = true;
  // No periodic statistics dump (a timer thread's work at open; nobody reads it).
  db_opts.stats_dump_period_sec = 0;
  db_opts.stats_persist_period_sec = 0;
  // A successor replays the predecessor's log into memory instead of writing (and syncing) it
  // out as a new table file before it can serve; the log stays until the next flush.
  db_opts.avoid_flush_during_recovery = true;
  return db_opts;
}

std::vector<rocksdb::ColumnFamilyDescriptor> CfDescriptors() {
  std::vector<rocksdb::ColumnFamilyDescriptor> cfs;
  for (const char* name : kCfNames) {
    cfs.emplace_back(name, rocksdb::ColumnFamilyOptions());
  }
  return cfs;
}

}  // namespace

void Index::WarmUp() {
  std::unique_ptr<rocksdb::Env> memory(rocksdb::NewMemEnv(rocksdb::Env::Default()));
  rocksdb::DBOptions db_opts = DbOptions();
  db_opts.env = memory.get();
  // (Created first: RocksDB logs an error when the directory it lists is missing.)
  if (!memory->CreateDirIfMissing("/warm-up").ok()) return;
  std::vector<rocksdb::ColumnFamilyHandle*> handles;
  rocksdb::DB* raw = nullptr;
  if (!rocksdb::DB::Open(db_opts, "/warm-up", CfDescriptors(), &handles, &raw).ok()) return;
  for (auto* h : handles) (void)raw->DestroyColumnFamilyHandle(h);
  (void)raw->Close();
  delete raw;
}

struct Index::Db {
  std::unique_ptr<rocksdb::DB> db;
  std::vector<rocksdb::ColumnFamilyHandle*> handles;
};

Result<Index::Db> Index::OpenDbAt(bool read_only) const {
  const rocksdb::DBOptions db_opts = DbOptions();
  const auto cfs = CfDescriptors();
  rocksdb::DB* raw = nullptr;
  Db out;
  rocksdb::Status s = read_only
                          ? rocksdb::DB::OpenForReadOnly(db_opts, path_, cfs, &out.handles, &raw)
                          : rocksdb::DB::Open(db_opts, path_, cfs, &out.handles, &raw);
  if (!s.ok()) return DbError("open " + path_, s);
  out.db.reset(raw);
  return out;
}

void Index::CloseDb(Db& d) {
  if (!d.db) return;
  for (auto* h : d.handles) {
    // Errors destroying a handle at close have no remedy; the DB is closed right after.
    (void)d.db->DestroyColumnFamilyHandle(h);
  }
  d.handles.clear();
  (void)d.db->Close();
  d.db.reset();
}

Result<void> Index::OpenDb(bool read_only) {
  handles_.clear();
  DIGESTD_ASSIGN_OR_RETURN(Db d, OpenDbAt(read_only));
  db_ = std::move(d.db);
  handles_ = std::move(d.handles);
  read_only_ = read_only;
  return {};
}

void Index::CloseDb() {
  Db d{std::move(db_), std::move(handles_)};
  handles_.clear();
  CloseDb(d);
}

Index::~Index() { CloseDb(); }

Result<void> Index::Reopen() {
  // Exclusive: no call may use the database while it is replaced. Bounded, so a caller that
  // somehow holds a shared lock across a write cannot deadlock the store (the write fails).
  std::unique_lock lock(mu_, std::defer_lock);
  if (!lock.try_lock_for(std::chrono::seconds(1))) {
    return StoreError(Errc::kIo, "index busy: cannot reopen after a write error");
  }
  if (!needs_reopen_.load() || sealed_) return {};
  auto log = ::digestd::Logger(Module::kStore, "index");
  CloseDb();
  if (auto r = OpenDb(/*read_only=*/false); r) {
    needs_reopen_ = false;
    log->warn("index reopened after a write error");
    return {};
  } else {
    log->error("index reopen failed ({}); serving reads read-only", r.error().ToString());
  }
  if (auto r = OpenDb(/*read_only=*/true); !r) {
    log->error("index read-only reopen failed: {}", r.error().ToString());
    return r;
  }
  return StoreError(Errc::kIo, "index is read-only after a write error");
}

rocksdb::ColumnFamilyHandle* Index::Handle(Cf cf) const {
  const auto i = static_cast<std::size_t>(cf);
  DIGESTD_CHECK(i < kCfCount && i < handles_.size());
  return handles_[i];
}

Result<std::optional<std::string>> Index::Get(Cf cf, std::string_view key) const {
  std::shared_lock lock(mu_);
  if (!db_) return StoreError(Errc::kIo, "index is closed after a write error");
  std::string value;
  rocksdb::Status s = db_->Get(rocksdb::ReadOptions(), Handle(cf), ToSlice(key), &value);
  if (s.IsNotFound()) return std::optional<std::string>();
  if (!s.ok()) return DbError("get", s);
  return std::optional<std::string>(std::move(value));
}

Result<void> Index::Fill(const Batch& batch, rocksdb::WriteBatch& wb) const {
  for (const auto& [cf, kv] : batch.ops_) {
    rocksdb::Status s = kv.second ? wb.Put(Handle(cf), ToSlice(kv.first), ToSlice(*kv.second))
                                  : wb.Delete(Handle(cf), ToSlice(kv.first));
    if (!s.ok()) return DbError("batch", s);
  }
  return {};
}

Result<void> Index::WriteLast(const Batch& batch, std::chrono::milliseconds wait) {
  // Writers out, readers not: a hand-over's predecessor still serves reads while this syncs.
  std::unique_lock writing(writes_mu_, std::defer_lock);
  if (!writing.try_lock_for(wait)) {
    return StoreError(Errc::kBusy, "index writes in progress");
  }
  std::shared_lock lock(mu_);
  if (sealed_ || !db_ || read_only_ || needs_reopen_) {
    return StoreError(Errc::kAborted, "index not writable");
  }
  rocksdb::WriteBatch wb;
  DIGESTD_RETURN_IF_ERROR(Fill(batch, wb));
  rocksdb::WriteOptions wo;
  wo.sync = true;
  if (rocksdb::Status s = db_->Write(wo, &wb); !s.ok()) return DbError("write", s);
  sealed_ = true;
  return {};
}

Result<void> Index::ContinueReadOnly(std::chrono::milliseconds wait) {
  if (!sealed_) return StoreError(Errc::kInvalidArgument, "index not sealed");
  // Opened beside the writable database, which readers keep using meanwhile: a read-only open
  // takes no lock, and a sealed database no longer changes.
  DIGESTD_ASSIGN_OR_RETURN(Db view, OpenDbAt(/*read_only=*/true));
  Db writable;
  {
    std::unique_lock lock(mu_, std::defer_lock);
    if (!lock.try_lock_for(wait)) {
      CloseDb(view);
      return StoreError(Errc::kBusy, "index in use");
    }
    if (read_only_ || !db_) {
      CloseDb(view);
      return StoreError(Errc::kAborted, "index not writable");
    }
    writable.db = std::move(db_);
    writable.handles = std::move(handles_);
    db_ = std::move(view.db);
    handles_ = std::move(view.handles);
    read_only_ = true;
  }
  // Outside the lock: readers go on while the writable database closes.
  rocksdb::CancelAllBackgroundWork(writable.db.get(), /*wait=*/false);
  CloseDb(writable);
  return {};
}

Result<void> Index::FlushForStop() {
  std::shared_lock lock(mu_);
  if (!db_ || read_only_) return StoreError(Errc::kAborted, "index not writable");
  rocksdb::FlushOptions fo;
  fo.wait = true;
  if (rocksdb::Status s = db_->Flush(fo, handles_); !s.ok()) return DbError("flush", s);
  // The compaction a flush may start would run on while this process stops (and close would
  // wait for it): let it finish now, and start nothing after it.
  if (rocksdb::Status s = db_->PauseBackgroundWork(); !s.ok()) return DbError("pause", s);
  return {};
}

Result<void> Index::Write(const Batch& batch, bool sync) {
  // (A sealed index never needs a reopen: WriteLast seals only a healthy one, and every write
  // after it stops at the check below.)
  if (needs_reopen_.load()) DIGESTD_RETURN_IF_ERROR(Reopen());
  rocksdb::WriteBatch wb;
  std::shared_lock writing(writes_mu_);
  std::shared_lock lock(mu_);
  if (sealed_) {
    return StoreError(Errc::kAborted, "the store is closing (clean stop recorded)");
  }
  if (!db_ || read_only_) {
    needs_reopen_ = true;
    return StoreError(Errc::kIo, "index is read-only after a write error");
  }
  DIGESTD_RETURN_IF_ERROR(Fill(batch, wb));
  rocksdb::WriteOptions wo;
  wo.sync = sync;
  rocksdb::Status s = db_->Write(wo, &wb);
  if (!s.ok()) {
    write_failures_.fetch_add(1);
    // RocksDB now refuses every write until it is reopened; the next write does that.
    if (!s.IsCorruption()) needs_reopen_ = true;
    return DbError("write", s);
  }
  return {};
}

Result<void> Index::Scan(Cf cf, std::string_view start,
                         const std::function<bool(std::string_view, std::string_view)>& fn) const {
  std::shared_lock lock(mu_);
  if (!db_) return StoreError(Errc::kIo, "index is closed after a write error");
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
  std::shared_lock lock(mu_);
  if (!db_) return StoreError(Errc::kIo, "index is closed after a write error");
  std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(rocksdb::ReadOptions(), Handle(cf)));
  it->SeekToLast();
  if (!it->status().ok()) return DbError("seek", it->status());
  if (!it->Valid()) return std::optional<std::string>();
  return std::optional<std::string>(it->key().ToString());
}

}  // namespace digestd::store
