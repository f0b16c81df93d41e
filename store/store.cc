#include "store/store.h"
#include "store/errors.h"

#include "store/audit_event.h"

#include "verify/oci.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <nlohmann/json.hpp>

#include "common/log.h"
#include "store/fs_util.h"
#include "store/records.h"
#include "store/store_impl.h"

namespace digestd::store {
namespace {

constexpr const char* kSchemaKey = "schema_version";

// Opens the root directory after checking it is safe to own: a real directory (not a symlink),
// owned by us, and not world-writable.
Result<UniqueFd> OpenRoot(const StoreOptions& opts) {
  const std::string root = opts.root.string();
  if (root.empty()) return StoreError(Errc::kInvalidArgument, "store root is empty");
  struct stat st {};
  if (::lstat(root.c_str(), &st) != 0) {
    if (errno != ENOENT || !opts.create) {
      return SysError(Module::kStore, "store root " + Quote(root));
    }
    if (::mkdir(root.c_str(), 0700) != 0 && errno != EEXIST) {
      return SysError(Module::kStore, "create store root " + Quote(root));
    }
  }
  UniqueFd fd(::open(root.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
  if (!fd) {
    const int err = errno;
    if (err == ELOOP || err == ENOTDIR) {
      return StoreError(Errc::kPermission,
                        "store root " + Quote(root) + " is a symlink or not a directory; refusing");
    }
    return SysError(Module::kStore, "open store root " + Quote(root), err);
  }
  // Check the directory we actually hold, not the path (no TOCTOU).
  if (::fstat(fd.Get(), &st) != 0) return SysError(Module::kStore, "fstat store root");
  if (st.st_uid != ::geteuid()) {
    return StoreError(Errc::kPermission, "store root " + Quote(root) + " is owned by uid " +
                                             std::to_string(st.st_uid) + ", not by us (uid " +
                                             std::to_string(::geteuid()) + "); refusing");
  }
  if (st.st_mode & S_IWOTH) {
    return StoreError(Errc::kPermission,
                      "store root " + Quote(root) + " is world-writable; refusing (chmod 0700 it)");
  }
  return fd;
}

Result<UniqueFd> TakeLock(int root_fd, const std::string& root) {
  auto fd = OpenBeneath(root_fd, "LOCK", O_RDWR | O_CREAT | O_NOFOLLOW, 0600);
  if (!fd) return fd.error();
  if (::flock(fd->Get(), LOCK_EX | LOCK_NB) != 0) {
    if (errno == EWOULDBLOCK) {
      return StoreError(Errc::kBusy, "store " + Quote(root) +
                                         " is in use by another process (lock held on LOCK)");
    }
    return SysError(Module::kStore, "flock LOCK");
  }
  return fd;
}

Result<void> CheckSchema(Index& index, const std::string& root) {
  DIGESTD_ASSIGN_OR_RETURN(auto value, index.Get(Cf::kMeta, kSchemaKey));
  if (!value) {
    Index::Batch batch;
    batch.Put(Cf::kMeta, kSchemaKey, std::to_string(kSchemaVersion));
    return index.Write(batch);
  }
  int version = 0;
  const auto& v = *value;
  if (v.empty() || v.size() > 9 || v.find_first_not_of("0123456789") != std::string::npos) {
    return StoreError(Errc::kCorrupt, "store " + Quote(root) + ": schema version record " +
                                          Quote(v) + " is not a number");
  }
  version = std::stoi(v);
  if (version > kSchemaVersion) {
    return StoreError(Errc::kUnsupported,
                      "store " + Quote(root) + " was written by a newer digestd (schema " +
                          std::to_string(version) + ", this build understands up to " +
                          std::to_string(kSchemaVersion) +
                          "); refusing to open it. Upgrade digestd or use another root.");
  }
  return {};
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Impl helpers

std::int64_t Store::Impl::Now() const { return opts.clock ? opts.clock() : SystemSeconds(); }

std::int64_t Store::Now() const { return impl_->Now(); }

std::string Store::Impl::ShardPath(const Digest& d) {
  std::string p(verify::ToString(d.algorithm()));
  p.push_back('/');
  p.append(d.hex().substr(0, 2));
  return p;
}

std::string Store::Impl::RelPath(const Digest& d) {
  std::string p = ShardPath(d);
  p.push_back('/');
  p.append(d.hex());
  return p;
}

Result<std::optional<BlobInfo>> Store::Impl::GetBlobRecord(const Digest& d) const {
  const std::string key = d.ToString();
  DIGESTD_ASSIGN_OR_RETURN(auto value, index->Get(Cf::kBlobs, key));
  if (!value) return std::optional<BlobInfo>();
  auto info = DecodeBlob(key, *value);
  if (!info) {
    counters.corrupt_records.fetch_add(1, std::memory_order_relaxed);
    return info.error();
  }
  return std::optional<BlobInfo>(std::move(*info));
}

Result<std::vector<Digest>> Store::Impl::Edges(Cf cf, const Digest& d) const {
  std::vector<Digest> out;
  std::optional<Error> err;
  DIGESTD_RETURN_IF_ERROR(
      index->ScanPrefix(cf, d.ToString() + " ", [&](std::string_view key, std::string_view) {
        auto edge = DecodeEdgeKey(key);
        if (!edge) {
          counters.corrupt_records.fetch_add(1, std::memory_order_relaxed);
          err = edge.error();
          return false;
        }
        out.push_back(std::move(edge->second));
        return true;
      }));
  if (err) return *err;
  return out;
}

Result<void> Store::Impl::AddBlobDeletes(Index::Batch& batch, const Digest& d) const {
  std::vector<Digest> contents;  // swept by the next GC or recovery
  DIGESTD_RETURN_IF_ERROR(AddTreeDeletes(batch, d, contents));
  batch.Delete(Cf::kBlobs, d.ToString());
  batch.Delete(Cf::kImages, d.ToString());
  DIGESTD_ASSIGN_OR_RETURN(auto children, Edges(Cf::kEdges, d));
  for (const auto& c : children) {
    batch.Delete(Cf::kEdges, EdgeKey(d, c));
    batch.Delete(Cf::kBackrefs, EdgeKey(c, d));
  }
  return {};
}

Result<void> Store::Impl::RemoveBlobUnlocked(const Digest& d, std::uint64_t size) {
  // File first, then the record: a crash in between leaves a record without a file, which
  // recovery drops. The other order would leave an orphan that recovery re-adopts.
  auto shard = OpenBeneath(blobs_fd.Get(), ShardPath(d), O_RDONLY | O_DIRECTORY);
  if (!shard) return shard.error();
  const std::string hex(d.hex());
  if (::unlinkat(shard->Get(), hex.c_str(), 0) != 0 && errno != ENOENT) {
    return SysError(Module::kStore, "unlink blob " + d.ToString());
  }
  Index::Batch batch;
  std::vector<Digest> contents;
  DIGESTD_RETURN_IF_ERROR(AddTreeDeletes(batch, d, contents));
  DIGESTD_RETURN_IF_ERROR(AddBlobDeletes(batch, d));
  DIGESTD_RETURN_IF_ERROR(index->Write(batch));
  {
    std::lock_guard lock(mu);
    usage.blobs -= usage.blobs > 0 ? 1 : 0;
    usage.bytes -= std::min(usage.bytes, size);
  }
  generation.fetch_add(1, std::memory_order_release);
  NoteRemoved(d);
  // The layer's file objects that no other tree uses go with it.
  if (!contents.empty()) DIGESTD_RETURN_IF_ERROR(SweepFiles(&contents));
  return {};
}

Result<void> Store::Impl::VerifyFile(int dirfd, std::string_view name, const Digest& expected,
                                     std::optional<std::uint64_t> size,
                                     std::uint64_t* hashed) const {
  DIGESTD_ASSIGN_OR_RETURN(UniqueFd fd, OpenBeneath(dirfd, name, O_RDONLY | O_NOFOLLOW));
  struct stat st {};
  if (::fstat(fd.Get(), &st) != 0) return SysError(Module::kStore, "fstat " + Quote(name));
  if (!S_ISREG(st.st_mode)) {
    return StoreError(Errc::kCorrupt, expected.ToString() + " is not a regular file");
  }
  if (size && static_cast<std::uint64_t>(st.st_size) != *size) {
    return StoreError(Errc::kSizeMismatch, "size mismatch for " + expected.ToString() +
                                               ": expected " + std::to_string(*size) +
                                               " bytes, file has " + std::to_string(st.st_size));
  }
  DIGESTD_ASSIGN_OR_RETURN(auto hasher, verify::Hasher::Create(expected.algorithm()));
  std::vector<std::byte> buf(1 << 20);
  for (;;) {
    const ssize_t n = ::read(fd.Get(), buf.data(), buf.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      return SysError(Module::kStore, "read " + expected.ToString());
    }
    if (n == 0) break;
    hasher.Update(std::span(buf.data(), static_cast<std::size_t>(n)));
    if (hashed) *hashed += static_cast<std::uint64_t>(n);
  }
  const Digest actual = hasher.Finish();
  if (actual != expected) {
    return StoreError(Errc::kDigestMismatch, "digest mismatch for " + expected.ToString() +
                                                 ": expected " + expected.ToString() + ", got " +
                                                 actual.ToString());
  }
  return {};
}

Result<std::uint64_t> Store::Impl::Audit(AuditEvent event) {
  if (event.time == 0) event.time = Now();
  const std::string text = event.ToJson();
  auto fail = [&](const Error& e) {
    const auto n = counters.audit_write_failures.fetch_add(1, std::memory_order_relaxed) + 1;
    log->error("audit event not written ({} so far): {}: {}", n, e.ToString(), text);
    return e;
  };
  // Callers clip their fields (the daemon's Auditor); this bound keeps any one record small.
  if (text.size() > (64u << 10)) return fail(StoreError(Errc::kTooLarge, "audit event over 64 KiB"));
  std::uint64_t seq;
  {
    std::lock_guard lock(mu);
    seq = next_audit_seq++;
  }
  Index::Batch batch;
  batch.Put(Cf::kAudit, AuditKey(seq), text);
  if (auto r = index->Write(batch); !r) return fail(r.error());
  std::lock_guard lock(mu);
  audit.events += 1;
  audit.bytes += text.size();
  return seq;
}

void Store::Impl::AuditInternal(std::string_view type, std::string_view digest,
                                std::string_view reason) {
  AuditEvent event{.type = std::string(type), .component = "store"};
  event.digest = std::string(digest);
  event.reason = std::string(reason);
  if (Audit(std::move(event))) log->info("audit type={} digest={} reason={}", type, digest, reason);
}

void Store::Impl::FinishInFlight(const Digest& d) {
  {
    std::lock_guard lock(mu);
    in_flight.erase(d);
  }
  in_flight_cv.notify_all();
}

// ---------------------------------------------------------------------------------------------
// Store

Store::Store(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Store::~Store() = default;

Result<StorePtr> Store::Open(const StoreOptions& options) {
  auto impl = std::make_unique<Impl>();
  impl->opts = options;
  impl->log = Logger(Module::kStore);
  if (!(options.quota_low > 0 && options.quota_low <= options.quota_high &&
        options.quota_high <= 1.0)) {
    return StoreError(Errc::kInvalidArgument, "quota watermarks must satisfy 0 < low <= high <= 1");
  }
  const std::string root = options.root.string();
  DIGESTD_ASSIGN_OR_RETURN(impl->root_fd, OpenRoot(options));
  DIGESTD_ASSIGN_OR_RETURN(impl->lock_fd, TakeLock(impl->root_fd.Get(), root));
  DIGESTD_ASSIGN_OR_RETURN(auto index_fd, EnsureDir(impl->root_fd.Get(), "index", 0700));
  DIGESTD_ASSIGN_OR_RETURN(impl->blobs_fd, EnsureDir(impl->root_fd.Get(), "blobs", 0700));
  DIGESTD_ASSIGN_OR_RETURN(impl->files_fd, EnsureDir(impl->root_fd.Get(), "files", 0700));
  DIGESTD_ASSIGN_OR_RETURN(impl->staging_fd, EnsureDir(impl->root_fd.Get(), "staging", 0700));
  DIGESTD_ASSIGN_OR_RETURN(impl->quarantine_fd,
                           EnsureDir(impl->root_fd.Get(), "quarantine", 0700));
  DIGESTD_RETURN_IF_ERROR(FsyncFd(impl->root_fd.Get(), "store root"));
  // RocksDB opens by path; the directory was checked above through our own fd, and the root is
  // 0700 and ours, so nobody else can swap it in between.
  DIGESTD_ASSIGN_OR_RETURN(impl->index, Index::Open((options.root / "index").string()));
  DIGESTD_RETURN_IF_ERROR(CheckSchema(*impl->index, root));
  // The audit sequence (and the log's size) before recovery, which records events: starting at
  // 1 again would overwrite the oldest events of an existing log.
  DIGESTD_RETURN_IF_ERROR(
      impl->index->Scan(Cf::kAudit, "", [&](std::string_view, std::string_view v) {
        impl->audit.events += 1;
        impl->audit.bytes += v.size();
        return true;
      }));
  DIGESTD_ASSIGN_OR_RETURN(auto last_audit, impl->index->LastKey(Cf::kAudit));
  if (last_audit) {
    auto seq = DecodeAuditKey(*last_audit);
    if (!seq) return seq.error();
    impl->next_audit_seq = *seq + 1;
  }
  DIGESTD_ASSIGN_OR_RETURN(auto clean, impl->TakeCleanStop());
  if (clean) {
    impl->recovery.after_clean_stop = true;
    impl->usage = *clean;
    DIGESTD_RETURN_IF_ERROR(impl->RecoverQuick());
  } else {
    DIGESTD_RETURN_IF_ERROR(impl->Recover());
  }

  // The deny set lives in memory for the hot paths.
  std::optional<Error> err;
  DIGESTD_RETURN_IF_ERROR(
      impl->index->Scan(Cf::kDeny, "", [&](std::string_view k, std::string_view v) {
        auto rec = DecodeDeny(k, v);
        if (!rec) {
          impl->counters.corrupt_records.fetch_add(1, std::memory_order_relaxed);
          // A deny record we cannot read still denies: fail closed if the key is a digest.
          if (auto d = Digest::Parse(k)) impl->denied.insert(*d);
          impl->log->error("corrupt deny record: {}", rec.error().ToString());
          return true;
        }
        impl->denied.insert(rec->digest);
        return true;
      }));
  const auto& rr = impl->recovery;
  impl->log->info(
      "opened root={} blobs={} bytes={} files={} file_bytes={} staging_removed={} "
      "uncommitted_removed={} orphans_removed={} records_dropped={} bad_records={} quarantined={} "
      "recovery={}",
      root, impl->usage.blobs, impl->usage.bytes, impl->usage.files, impl->usage.file_bytes,
      rr.staging_removed, rr.uncommitted_removed, rr.orphans_removed, rr.records_dropped,
      rr.bad_records, rr.quarantined, rr.after_clean_stop ? "quick (clean stop)" : "full");
  StorePtr store(new Store(std::move(impl)));
  auto& report = store->impl_->recovery;
  DIGESTD_ASSIGN_OR_RETURN(report.images_broken, store->BrokenImages());
  for (const auto& ref : report.images_broken) {
    store->impl_->log->warn("recovery: image {} is not whole; pull it again", ref);
    store->impl_->AuditInternal("store.recovery.image_broken", "", ref + " is not whole; pull it again");
  }
  return store;
}

const std::filesystem::path& Store::root() const { return impl_->opts.root; }
const RecoveryReport& Store::recovery() const { return impl_->recovery; }

bool Store::Contains(const Digest& digest) const {
  auto v = impl_->index->Get(Cf::kBlobs, digest.ToString());
  return v && v->has_value();
}

Result<UniqueFd> Store::OpenBlob(const Digest& digest) const {
  if (IsDenied(digest)) {
    return StoreError(Errc::kPermission, digest.ToString() + " is on the deny list");
  }
  if (!Contains(digest)) return StoreError(Errc::kNotFound, "no blob " + digest.ToString());
  auto fd = OpenBeneath(impl_->blobs_fd.Get(), Impl::RelPath(digest), O_RDONLY | O_NOFOLLOW);
  if (!fd) return std::move(fd).error().Wrap("blob " + digest.ToString());
  return fd;
}

Result<std::string> Store::ReadBlob(const Digest& digest, std::uint64_t cap) const {
  DIGESTD_ASSIGN_OR_RETURN(auto info, Stat(digest));
  if (info.size > cap) {
    return StoreError(Errc::kTooLarge, digest.ToString() + " is " + std::to_string(info.size) +
                                           " bytes, over the " + std::to_string(cap) + " read here");
  }
  if (IsDenied(digest)) {
    return StoreError(Errc::kPermission, digest.ToString() + " is on the deny list");
  }
  return impl_->ReadWhole(digest, info.size);
}

Result<std::string> Store::Impl::ReadWhole(const Digest& d, std::uint64_t size) const {
  auto fd = OpenBeneath(blobs_fd.Get(), RelPath(d), O_RDONLY | O_NOFOLLOW);
  if (!fd) return std::move(fd).error().Wrap("blob " + d.ToString());
  std::string bytes(static_cast<std::size_t>(size), '\0');
  if (::pread(fd->Get(), bytes.data(), bytes.size(), 0) != static_cast<ssize_t>(bytes.size())) {
    return SysError(Module::kStore, "read " + d.ToString());
  }
  return bytes;
}

Result<BlobInfo> Store::Stat(const Digest& digest) const {
  DIGESTD_ASSIGN_OR_RETURN(auto info, impl_->GetBlobRecord(digest));
  if (!info) return StoreError(Errc::kNotFound, "no blob " + digest.ToString());
  return std::move(*info);
}

Result<BlobPage> Store::ListBlobs(const std::optional<Digest>& after, std::size_t limit) const {
  if (limit == 0 || limit > 10000) {
    return StoreError(Errc::kInvalidArgument, "page limit must be 1..10000");
  }
  BlobPage page;
  const std::string start = after ? after->ToString() : std::string();
  std::optional<Error> err;
  DIGESTD_RETURN_IF_ERROR(
      impl_->index->Scan(Cf::kBlobs, start, [&](std::string_view k, std::string_view v) {
        if (after && k == start) return true;
        if (page.items.size() == limit) {
          page.next = page.items.back().digest;
          return false;
        }
        auto info = DecodeBlob(k, v);
        if (!info) {
          impl_->counters.corrupt_records.fetch_add(1, std::memory_order_relaxed);
          err = info.error();
          return false;
        }
        page.items.push_back(std::move(*info));
        return true;
      }));
  if (err) return *err;
  return page;
}

void Store::Impl::NoteRemoved(const Digest& d) {
  std::lock_guard lock(mu);
  removed_pending.push_back(d);
}

void Store::Impl::FlushRemoved() {
  std::vector<Digest> removed;
  {
    std::lock_guard lock(mu);
    removed.swap(removed_pending);
  }
  if (!removed.empty() && removal_listener) removal_listener(removed);
}

void Store::SetRemovalListener(std::function<void(const std::vector<Digest>&)> listener) {
  impl_->removal_listener = std::move(listener);
}

Result<void> Store::RemoveBlob(const Digest& digest) {
  RemovalNotice notice(*impl_);
  std::shared_lock maint(impl_->maint_mu);
  DIGESTD_ASSIGN_OR_RETURN(auto info, impl_->GetBlobRecord(digest));
  if (!info) return StoreError(Errc::kNotFound, "no blob " + digest.ToString());
  return impl_->RemoveBlobUnlocked(digest, info->size);
}

Result<void> Store::RemoveImage(const Digest& manifest) {
  std::shared_lock maint(impl_->maint_mu);
  DIGESTD_ASSIGN_OR_RETURN(auto refs, ListRefs());
  DIGESTD_ASSIGN_OR_RETURN(auto record, impl_->index->Get(Cf::kImages, manifest.ToString()));
  Index::Batch batch;
  for (const auto& r : refs) {
    if (r.digest == manifest) batch.Delete(Cf::kRefs, r.reference);
  }
  if (record) batch.Delete(Cf::kImages, manifest.ToString());
  if (batch.Count() == 0) return StoreError(Errc::kNotFound, "no image " + manifest.ToString());
  DIGESTD_RETURN_IF_ERROR(impl_->index->Write(batch));
  impl_->generation.fetch_add(1, std::memory_order_release);
  return {};
}

Result<Usage> Store::SizeOf(const Digest& manifest) const {
  std::unordered_set<Digest> closure;
  DIGESTD_RETURN_IF_ERROR(impl_->MarkFrom({manifest}, closure));
  Usage u;
  for (const auto& d : closure) {
    DIGESTD_ASSIGN_OR_RETURN(auto info, impl_->GetBlobRecord(d));
    if (!info) continue;
    u.blobs += 1;
    u.bytes += info->size;
    DIGESTD_ASSIGN_OR_RETURN(auto tree, GetTreeInfo(d));
    if (tree) {
      u.files += tree->entries;
      u.file_bytes += tree->file_bytes;
    }
  }
  return u;
}

Result<void> Store::Touch(const Digest& digest) {
  DIGESTD_ASSIGN_OR_RETURN(auto info, impl_->GetBlobRecord(digest));
  if (!info) return StoreError(Errc::kNotFound, "no blob " + digest.ToString());
  info->last_used = impl_->Now();
  Index::Batch batch;
  batch.Put(Cf::kBlobs, digest.ToString(), EncodeBlob(*info));
  return impl_->index->Write(batch, /*sync=*/false);
}

Result<std::vector<Digest>> Store::Parents(const Digest& digest) const {
  return impl_->Edges(Cf::kBackrefs, digest);
}

Result<std::vector<Digest>> Store::Children(const Digest& digest) const {
  return impl_->Edges(Cf::kEdges, digest);
}

Result<void> Store::PutBlob(const Digest& expected, std::string_view bytes, IngestOptions options) {
  auto writer = Ingest(expected, bytes.size(), std::move(options));
  if (!writer) {
    if (writer.error().code() == Errc::kAlreadyExists) return {};
    return writer.error();
  }
  DIGESTD_RETURN_IF_ERROR((*writer)->Write(bytes));
  return (*writer)->Commit();
}

// ---- refs

Result<void> Store::SetRef(std::string_view reference, const Digest& manifest) {
  DIGESTD_RETURN_IF_ERROR(ValidateReferenceText(reference));
  std::shared_lock maint(impl_->maint_mu);
  const auto now = impl_->Now();
  Index::Batch batch;
  batch.Put(Cf::kRefs, reference,
            EncodeRef(RefRecord{.reference = std::string(reference), .digest = manifest,
                                .resolved_at = now}));
  DIGESTD_ASSIGN_OR_RETURN(auto info, impl_->GetBlobRecord(manifest));
  if (info) {
    info->last_used = now;
    batch.Put(Cf::kBlobs, manifest.ToString(), EncodeBlob(*info));
  }
  return impl_->index->Write(batch);
}

Result<RefRecord> Store::GetRef(std::string_view reference) const {
  DIGESTD_RETURN_IF_ERROR(ValidateReferenceText(reference));
  DIGESTD_ASSIGN_OR_RETURN(auto value, impl_->index->Get(Cf::kRefs, reference));
  if (!value) return StoreError(Errc::kNotFound, "no ref " + Quote(reference));
  auto ref = DecodeRef(reference, *value);
  if (!ref) impl_->counters.corrupt_records.fetch_add(1, std::memory_order_relaxed);
  return ref;
}

Result<std::vector<RefRecord>> Store::ListRefs() const {
  return impl_->DecodeAll<RefRecord>(Cf::kRefs, DecodeRef);
}

Result<void> Store::RemoveRef(std::string_view reference) {
  DIGESTD_RETURN_IF_ERROR(ValidateReferenceText(reference));
  DIGESTD_ASSIGN_OR_RETURN(auto value, impl_->index->Get(Cf::kRefs, reference));
  if (!value) return StoreError(Errc::kNotFound, "no ref " + Quote(reference));
  Index::Batch batch;
  batch.Delete(Cf::kRefs, reference);
  return impl_->index->Write(batch);
}

// ---- image records

Result<void> Store::PutImageRecord(const ImageRecord& image) {
  std::shared_lock maint(impl_->maint_mu);
  Index::Batch batch;
  batch.Put(Cf::kImages, image.manifest.ToString(), EncodeImage(image));
  DIGESTD_RETURN_IF_ERROR(impl_->index->Write(batch));
  impl_->generation.fetch_add(1, std::memory_order_release);
  return {};
}

Result<std::optional<ImageRecord>> Store::GetImageRecord(const Digest& manifest) const {
  DIGESTD_ASSIGN_OR_RETURN(auto value, impl_->index->Get(Cf::kImages, manifest.ToString()));
  if (!value) return std::optional<ImageRecord>();
  auto rec = DecodeImage(manifest.ToString(), *value);
  if (!rec) {
    impl_->counters.corrupt_records.fetch_add(1, std::memory_order_relaxed);
    return rec.error();
  }
  return std::optional<ImageRecord>(std::move(*rec));
}

Result<std::vector<ImageRecord>> Store::ListImageRecords() const {
  return impl_->DecodeAll<ImageRecord>(Cf::kImages, DecodeImage);
}

// ---- image manifests

Result<std::vector<Digest>> Store::ImageLayers(const Digest& manifest, bool even_if_denied) const {
  auto info = Stat(manifest);
  auto kind = info ? verify::ManifestKindOf(info->media_type) : Result<verify::ManifestKind>(
                                                                    info.error());
  if (!info || !kind || verify::IsIndexKind(*kind)) {
    return StoreError(Errc::kNotFound, "no image manifest " + manifest.ToString());
  }
  // ReadBlob, but a denied manifest is read too when the caller asks.
  std::string bytes;
  if (!even_if_denied) {
    DIGESTD_ASSIGN_OR_RETURN(bytes, ReadBlob(manifest, verify::kDefaultManifestCap));
  } else if (info->size > verify::kDefaultManifestCap) {
    return StoreError(Errc::kTooLarge, manifest.ToString() + " is too large for a manifest");
  } else {
    DIGESTD_ASSIGN_OR_RETURN(bytes, impl_->ReadWhole(manifest, info->size));
  }
  DIGESTD_ASSIGN_OR_RETURN(auto m, verify::ParseImageManifest(bytes, info->media_type));
  std::vector<Digest> layers;
  for (const auto& l : m.layers) layers.push_back(l.digest);
  return layers;
}

// ---- snapshotter records

namespace {
Result<void> ValidSnapshotName(std::string_view name) {
  if (name.empty() || name.size() > 4096 || name.find('\0') != std::string_view::npos) {
    return StoreError(Errc::kInvalidArgument,
                     "snapshot name must be 1..4096 bytes without NUL");
  }
  return {};
}
}  // namespace

Result<void> Store::PutSnapshotRecord(std::string_view name, std::string_view value) {
  DIGESTD_RETURN_IF_ERROR(ValidSnapshotName(name));
  std::shared_lock maint(impl_->maint_mu);
  Index::Batch batch;
  batch.Put(Cf::kSnapshots, name, value);
  return impl_->index->Write(batch);
}

Result<void> Store::DeleteSnapshotRecord(std::string_view name) {
  DIGESTD_RETURN_IF_ERROR(ValidSnapshotName(name));
  std::shared_lock maint(impl_->maint_mu);
  Index::Batch batch;
  batch.Delete(Cf::kSnapshots, name);
  return impl_->index->Write(batch);
}

Result<std::vector<std::pair<std::string, std::string>>> Store::ListSnapshotRecords() const {
  std::vector<std::pair<std::string, std::string>> out;
  DIGESTD_RETURN_IF_ERROR(
      impl_->index->Scan(Cf::kSnapshots, "", [&](std::string_view k, std::string_view v) {
        out.emplace_back(std::string(k), std::string(v));
        return true;
      }));
  return out;
}

// ---- leases

Result<void> Store::PutLease(const Lease& lease) {
  DIGESTD_RETURN_IF_ERROR(ValidateName("lease id", lease.id));
  DIGESTD_RETURN_IF_ERROR(ValidateName("tenant", lease.tenant));
  if (!lease.container.empty()) DIGESTD_RETURN_IF_ERROR(ValidateName("container id", lease.container));
  std::shared_lock maint(impl_->maint_mu);
  Lease rec = lease;
  if (rec.created == 0) rec.created = impl_->Now();
  Index::Batch batch;
  batch.Put(Cf::kLeases, rec.id, EncodeLease(rec));
  return impl_->index->Write(batch);
}

Result<Lease> Store::GetLease(std::string_view id) const {
  DIGESTD_RETURN_IF_ERROR(ValidateName("lease id", id));
  DIGESTD_ASSIGN_OR_RETURN(auto value, impl_->index->Get(Cf::kLeases, id));
  if (!value) return StoreError(Errc::kNotFound, "no lease " + Quote(id));
  auto lease = DecodeLease(id, *value);
  if (!lease) impl_->counters.corrupt_records.fetch_add(1, std::memory_order_relaxed);
  return lease;
}

Result<std::vector<Lease>> Store::ListLeases() const {
  return impl_->DecodeAll<Lease>(Cf::kLeases, DecodeLease);
}

Result<void> Store::RemoveLease(std::string_view id) {
  DIGESTD_RETURN_IF_ERROR(ValidateName("lease id", id));
  DIGESTD_ASSIGN_OR_RETURN(auto value, impl_->index->Get(Cf::kLeases, id));
  if (!value) return StoreError(Errc::kNotFound, "no lease " + Quote(id));
  Index::Batch batch;
  batch.Delete(Cf::kLeases, id);
  return impl_->index->Write(batch);
}

// ---- deny list

Result<void> Store::Deny(const Digest& digest, std::string_view reason) {
  if (reason.size() > 1024) return StoreError(Errc::kInvalidArgument, "deny reason over 1 KiB");
  Index::Batch batch;
  batch.Put(Cf::kDeny, digest.ToString(),
            EncodeDeny(DenyRecord{.digest = digest, .reason = std::string(reason),
                                  .created = impl_->Now()}));
  // Deny in memory first: a crash before the write loses the entry, but no reader can observe
  // the digest as allowed after Deny() has started.
  {
    std::lock_guard lock(impl_->mu);
    impl_->denied.insert(digest);
  }
  impl_->generation.fetch_add(1, std::memory_order_release);
  return impl_->index->Write(batch);
}

Result<void> Store::Undeny(const Digest& digest) {
  Index::Batch batch;
  batch.Delete(Cf::kDeny, digest.ToString());
  DIGESTD_RETURN_IF_ERROR(impl_->index->Write(batch));
  std::lock_guard lock(impl_->mu);
  impl_->denied.erase(digest);
  impl_->generation.fetch_add(1, std::memory_order_release);
  return {};
}

std::uint64_t Store::generation() const {
  return impl_->generation.load(std::memory_order_acquire);
}

bool Store::IsDenied(const Digest& digest) const {
  std::lock_guard lock(impl_->mu);
  return impl_->denied.count(digest) != 0;
}

Result<std::vector<DenyRecord>> Store::ListDenied() const {
  return impl_->DecodeAll<DenyRecord>(Cf::kDeny, DecodeDeny);
}

// ---- audit

Result<std::uint64_t> Store::AppendAudit(const AuditEvent& event) { return impl_->Audit(event); }

AuditStats Store::GetAuditStats() const {
  std::lock_guard lock(impl_->mu);
  return impl_->audit;
}

Result<AuditPruneReport> Store::PruneAudit(std::uint64_t max_bytes, std::int64_t max_age_s) {
  AuditPruneReport report;
  const AuditStats before = GetAuditStats();
  const std::int64_t cutoff = max_age_s > 0 ? impl_->Now() - max_age_s : 0;
  std::uint64_t bytes_left = before.bytes;
  Index::Batch batch;
  std::size_t in_batch = 0;
  auto flush = [&]() -> Result<void> {
    if (in_batch == 0) return {};
    // Not synced: losing a deletion to a crash only keeps an old event a little longer.
    DIGESTD_RETURN_IF_ERROR(impl_->index->Write(batch, /*sync=*/false));
    batch = Index::Batch();
    in_batch = 0;
    return {};
  };
  std::optional<Error> err;
  // Oldest first; stop at the first event that is both young enough and within the size bound.
  DIGESTD_RETURN_IF_ERROR(
      impl_->index->Scan(Cf::kAudit, "", [&](std::string_view k, std::string_view v) {
        const bool over_size = max_bytes > 0 && bytes_left > max_bytes;
        bool too_old = false;
        if (cutoff > 0) {
          auto j = nlohmann::json::parse(v, nullptr, false);
          auto t = j.is_object() ? j.find("time") : j.end();
          too_old = !j.is_object() || t == j.end() || !t->is_number_integer() ||
                    t->get<std::int64_t>() < cutoff;
        }
        if (!over_size && !too_old) return false;
        batch.Delete(Cf::kAudit, k);
        ++in_batch;
        report.removed += 1;
        report.bytes_removed += v.size();
        bytes_left -= std::min<std::uint64_t>(bytes_left, v.size());
        if (in_batch >= 1000) {
          if (auto r = flush(); !r) {
            err = r.error();
            return false;
          }
        }
        return true;
      }));
  if (err) return *err;
  DIGESTD_RETURN_IF_ERROR(flush());
  std::lock_guard lock(impl_->mu);
  impl_->audit.events -= std::min(impl_->audit.events, report.removed);
  impl_->audit.bytes -= std::min(impl_->audit.bytes, report.bytes_removed);
  report.after = impl_->audit;
  return report;
}

Result<std::vector<AuditRecord>> Store::ReadAudit(std::uint64_t since_seq,
                                                  std::size_t limit) const {
  std::vector<AuditRecord> out;
  std::optional<Error> err;
  DIGESTD_RETURN_IF_ERROR(impl_->index->Scan(
      Cf::kAudit, AuditKey(since_seq), [&](std::string_view k, std::string_view v) {
        if (out.size() >= limit) return false;
        auto seq = DecodeAuditKey(k);
        if (!seq) {
          impl_->counters.corrupt_records.fetch_add(1, std::memory_order_relaxed);
          err = seq.error();
          return false;
        }
        out.push_back(AuditRecord{.seq = *seq, .json = std::string(v)});
        return true;
      }));
  if (err) return *err;
  return out;
}

Usage Store::GetUsage() const {
  std::lock_guard lock(impl_->mu);
  return impl_->usage;
}

StoreCounters Store::counters() const {
  const auto& c = impl_->counters;
  return StoreCounters{
      .corrupt_records = c.corrupt_records.load(std::memory_order_relaxed),
      .digest_mismatches = c.digest_mismatches.load(std::memory_order_relaxed),
      .size_mismatches = c.size_mismatches.load(std::memory_order_relaxed),
      .commits = c.commits.load(std::memory_order_relaxed),
      .aborts = c.aborts.load(std::memory_order_relaxed),
      .scrub_bytes = c.scrub_bytes.load(std::memory_order_relaxed),
      .scrub_problems = c.scrub_problems.load(std::memory_order_relaxed),
      .scrub_passes = c.scrub_passes.load(std::memory_order_relaxed),
      .index_write_failures = impl_->index->write_failures(),
      .audit_write_failures = c.audit_write_failures.load(std::memory_order_relaxed),
  };
}

bool Store::degraded() const { return impl_->index->degraded();
}

}  // namespace digestd::store
