// Store: layer unpacking into file objects and tree records, and reading trees back.
//
// Commit protocol for a tree: every file object is written to an anonymous staging file while it
// is hashed, published as files/sha256/ab/<hex> (0444) unless that object exists already, and
// pinned; after the whole layer read without error and its diff_id matched, one syncfs() makes
// all file objects durable, then one synced RocksDB batch records the tree info, every entry and
// the filerefs. A crash before the batch leaves file objects no tree references: recovery removes
// them. A failure removes the objects this unpack created unless another tree references them or
// another unpack has them pinned.

#include <fcntl.h>
#include "store/errors.h"
#include <sys/stat.h>
#include <unistd.h>

#include <unordered_set>

#include "store/fs_util.h"
#include "store/tar_reader.h"
#include "store/records.h"
#include "store/store_impl.h"
#include "store/tree_codec.h"

namespace digestd::store {
namespace {

// Writes file objects. Small files are buffered and written only when the object is new.
class FileObjectSink final : public ContentSink {
 public:
  static constexpr std::size_t kBufferMax = 1u << 20;

  FileObjectSink(Store::Impl& impl, verify::Hasher hasher)
      : impl_(impl), hasher_(std::move(hasher)), pacer_(impl.opts.writeback_interval, 8) {}
  ~FileObjectSink() override { Unpin(); }

  Result<void> Begin(std::uint64_t size) override {
    // The quota counts unpacked bytes too: a layer that would unpack past it is refused before
    // the object is written (a small gzip can unpack to many GiB).
    DIGESTD_RETURN_IF_ERROR(impl_.MakeRoom(size));
    size_ = size;
    buffer_.clear();
    tmp_.Reset();
    at_ = 0;
    pacer_.Reset();
    direct_on_ = false;
    if (size > kBufferMax) {
      DIGESTD_ASSIGN_OR_RETURN(tmp_, NewTemp());
      if (impl_.use_direct_io.load(std::memory_order_relaxed)) {
        direct_on_ = direct_.Start(tmp_.Get());
        if (!direct_on_ && impl_.use_direct_io.exchange(false)) {
          impl_.log->info("no direct I/O for file objects here; writing them through the page cache");
        }
      }
    } else {
      buffer_.reserve(static_cast<std::size_t>(size));
    }
    return {};
  }

  Result<void> Append(std::span<const std::byte> data) override {
    hasher_.Update(data);
    if (direct_on_) {
      DIGESTD_RETURN_IF_ERROR(direct_.Append(data));
    } else if (tmp_) {
      DIGESTD_RETURN_IF_ERROR(PWriteAll(tmp_.Get(), data, at_));
      // Large files go to disk while the layer is read, not all at the final syncfs.
      pacer_.Advance(tmp_.Get(), at_ + data.size());
    } else {
      buffer_.insert(buffer_.end(), data.begin(), data.end());
    }
    at_ += data.size();
    return {};
  }

  Result<verify::Digest> End() override {
    verify::Digest d = hasher_.Finish();
    if (direct_on_) {
      direct_on_ = false;
      DIGESTD_RETURN_IF_ERROR(direct_.Finish());
    }
    // GC, quota and fsck (exclusive) wait while an object is published; the pin keeps it from
    // the sweep until the tree is committed or discarded.
    std::shared_lock maint(impl_.maint_mu);
    {
      std::lock_guard lock(impl_.files_mu);
      if (pinned_.insert(d).second) ++impl_.file_pins[d];
    }
    auto shard = OpenBeneath(impl_.files_fd.Get(), Store::Impl::ShardPath(d),
                             O_RDONLY | O_DIRECTORY);
    if (!shard) return shard.error();
    const std::string hex(d.hex());
    struct stat st {};
    if (::fstatat(shard->Get(), hex.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0) {
      // Stored once, however many layers hold it; but reused only once its bytes hash to its
      // name: a damaged or tampered object of the right size must not enter a new tree
      // (found by review: reuse was decided on size alone).
      if (S_ISREG(st.st_mode) && static_cast<std::uint64_t>(st.st_size) == size_ &&
          impl_.VerifyFile(shard->Get(), hex, d, size_)) {
        tmp_.Reset();
        return d;
      }
      // Not what its name says (damaged cache): replace it.
      impl_.log->warn("replacing damaged file object {}", d.ToString());
      (void)::unlinkat(shard->Get(), hex.c_str(), 0);
    }
    if (!tmp_) {
      DIGESTD_ASSIGN_OR_RETURN(tmp_, NewTemp());
      DIGESTD_RETURN_IF_ERROR(PWriteAll(tmp_.Get(), buffer_, 0));
    }
    if (::fchmod(tmp_.Get(), 0444) != 0) return SysError(Module::kStore, "chmod file object");
    const std::string proc = "/proc/self/fd/" + std::to_string(tmp_.Get());
    if (::linkat(AT_FDCWD, proc.c_str(), shard->Get(), hex.c_str(), AT_SYMLINK_FOLLOW) != 0) {
      const int err = errno;
      if (err != EEXIST) return SysError(Module::kStore, "link file object " + d.ToString(), err);
      // Another unpack published the same content just now.
    } else {
      created_.push_back(d);
      std::lock_guard lock(impl_.mu);
      impl_.usage.files += 1;
      impl_.usage.file_bytes += size_;
    }
    tmp_.Reset();
    return d;
  }

  const std::vector<verify::Digest>& created() const { return created_; }
  const std::unordered_set<verify::Digest>& used() const { return pinned_; }

  void Unpin() {
    std::lock_guard lock(impl_.files_mu);
    for (const auto& d : pinned_) {
      auto it = impl_.file_pins.find(d);
      DIGESTD_CHECK(it != impl_.file_pins.end() && it->second > 0);
      if (--it->second == 0) impl_.file_pins.erase(it);
    }
    pinned_.clear();
  }

 private:
  Result<UniqueFd> NewTemp() {
    return OpenBeneath(impl_.staging_fd.Get(), ".", O_TMPFILE | O_RDWR, 0600);
  }

  Store::Impl& impl_;
  verify::Hasher hasher_;
  std::uint64_t size_ = 0;
  std::uint64_t at_ = 0;
  std::vector<std::byte> buffer_;
  UniqueFd tmp_;
  WritebackPacer pacer_;
  // Large file objects are written with O_DIRECT where the filesystem allows it.
  DirectAppender direct_;
  bool direct_on_ = false;
  std::unordered_set<verify::Digest> pinned_;
  std::vector<verify::Digest> created_;
};

}  // namespace

bool Store::Impl::FileReferenced(const Digest& content) const {
  bool found = false;
  auto r = index->ScanPrefix(Cf::kFileRefs, content.ToString() + " ",
                             [&](std::string_view, std::string_view) {
                               found = true;
                               return false;
                             });
  // Unknown counts as referenced: never delete on an index error.
  return found || !r;
}

Result<std::uint64_t> Store::Impl::SweepFiles(const std::vector<Digest>* contents, bool wipe,
                                              std::uint64_t* bytes) {
  std::uint64_t removed = 0;
  auto consider = [&](const Digest& d) -> Result<void> {
    std::lock_guard lock(files_mu);
    if (file_pins.count(d) || FileReferenced(d)) return {};
    auto shard = OpenBeneath(files_fd.Get(), ShardPath(d), O_RDONLY | O_DIRECTORY);
    if (!shard) return shard.error();
    const std::string hex(d.hex());
    auto gone = [&](std::uint64_t size) {
      ++removed;
      if (bytes) *bytes += size;
      std::lock_guard usage_lock(mu);
      usage.files -= std::min<std::uint64_t>(usage.files, 1);
      usage.file_bytes -= std::min(usage.file_bytes, size);
    };
    if (wipe) {
      auto size = WipeFile(shard->Get(), hex);
      if (size) {
        gone(*size);
        return {};
      }
      if (size.error().sys_errno() == ENOENT) return {};
      return size.error();
    }
    struct stat st {};
    if (::fstatat(shard->Get(), hex.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) {
      if (errno == ENOENT) return {};
      return SysError(Module::kStore, "stat file object " + d.ToString());
    }
    if (::unlinkat(shard->Get(), hex.c_str(), 0) == 0) {
      gone(static_cast<std::uint64_t>(st.st_size));
    } else if (errno != ENOENT) {
      return SysError(Module::kStore, "unlink file object " + d.ToString());
    }
    return {};
  };
  if (contents) {
    for (const auto& d : *contents) DIGESTD_RETURN_IF_ERROR(consider(d));
    return removed;
  }
  std::vector<Digest> candidates;
  DIGESTD_RETURN_IF_ERROR(WalkBlobFiles(files_fd.Get(), [&](const FoundFile& f) -> Result<void> {
    if (!f.digest) {
      log->warn("removing {} from files/: {}", Quote(f.name), f.problem);
      ++removed;
      return RemoveEntry(f.shard_fd, f.name);
    }
    candidates.push_back(*f.digest);
    return {};
  }));
  for (const auto& d : candidates) DIGESTD_RETURN_IF_ERROR(consider(d));
  return removed;
}

Result<void> Store::Impl::AddTreeDeletes(Index::Batch& batch, const Digest& layer,
                                         std::vector<Digest>& contents) const {
  DIGESTD_ASSIGN_OR_RETURN(auto info, index->Get(Cf::kTrees, layer.ToString()));
  std::optional<Error> err;
  std::unordered_set<Digest> seen;
  const std::string prefix = EntryKeyPrefix(layer);
  DIGESTD_RETURN_IF_ERROR(
      index->ScanPrefix(Cf::kEntries, prefix, [&](std::string_view k, std::string_view v) {
        batch.Delete(Cf::kEntries, k);
        // A corrupt entry is still deleted; its content (if any) is left to the files sweep.
        if (auto e = DecodeEntry(k.substr(prefix.size()), v); e && e->content) {
          if (seen.insert(*e->content).second) contents.push_back(*e->content);
        }
        return true;
      }));
  if (!info && seen.empty() && batch.Count() == 0) return {};
  batch.Delete(Cf::kTrees, layer.ToString());
  for (const auto& c : contents) batch.Delete(Cf::kFileRefs, EdgeKey(c, layer));
  return {};
}

struct PendingTree::State {
  State(Store::Impl* i, TreeInfo inf) : impl(i), info(std::move(inf)) {}
  Store::Impl* impl;
  TreeInfo info;
  std::optional<LayerTree> tree;            // nullopt: the layer had a tree already
  std::unique_ptr<FileObjectSink> sink;
  bool committed = false;

  // Unpins and removes the file objects only this unpack created (best effort: GC sweeps what
  // is left). Nothing to do once committed.
  void Discard() {
    if (!sink || committed) return;
    sink->Unpin();
    if (auto swept = impl->SweepFiles(&sink->created()); !swept) {
      impl->log->warn("cleanup after failed unpack of {}: {}", info.layer.ToString(),
                      swept.error().ToString());
    }
    sink.reset();
  }

  static PendingTreePtr Make(std::unique_ptr<State> s) {
    return PendingTreePtr(new PendingTree(std::move(s)));
  }

  // Discards, logs and audits the refusal.
  Error Fail(Error e) {
    Discard();
    // An abandoned download (the blob writer aborted) is not a refusal of the layer.
    if (e.code() == Errc::kAborted) return e;
    impl->log->warn("unpack of {} refused: {}", info.layer.ToString(), e.ToString());
    impl->AuditInternal("store.unpack.refused", info.layer.ToString(), e.context());
    return std::move(e).Wrap("unpack layer " + info.layer.ToString());
  }
};

PendingTree::PendingTree(std::unique_ptr<State> state) : s_(std::move(state)) {}
PendingTree::~PendingTree() {
  if (s_) s_->Discard();
}
const TreeInfo& PendingTree::info() const { return s_->info; }

Result<PendingTreePtr> Store::PrepareTree(const Digest& layer, const Digest& diff_id,
                                          std::string_view media_type,
                                          const UnpackLimits& limits) {
  auto& impl = *impl_;
  if (IsDenied(layer)) {
    return StoreError(Errc::kPermission, "layer " + layer.ToString() + " is denied");
  }
  auto state =
      std::make_unique<PendingTree::State>(&impl, TreeInfo{.layer = layer, .diff_id = diff_id});
  DIGESTD_ASSIGN_OR_RETURN(auto existing, GetTreeInfo(layer));
  if (existing) {
    if (existing->diff_id != diff_id) {
      return StoreError(Errc::kDigestMismatch,
                        "layer " + layer.ToString() + " uncompresses to " +
                            existing->diff_id.ToString() + " but its diff_id is " +
                            diff_id.ToString());
    }
    state->info = *existing;
    return PendingTree::State::Make(std::move(state));
  }
  DIGESTD_ASSIGN_OR_RETURN(auto record, impl.GetBlobRecord(layer));
  if (!record) return StoreError(Errc::kNotFound, "layer " + layer.ToString() + " not in the store");
  const std::string type(media_type.empty() ? std::string_view(record->media_type) : media_type);
  DIGESTD_ASSIGN_OR_RETURN(auto kind, LayerDecoder::KindFor(type));
  DIGESTD_ASSIGN_OR_RETURN(UniqueFd blob, OpenBlob(layer));
  FdSource source(blob.Get());
  return ReadPendingTree(impl, layer, diff_id, kind, limits, source,
                         record->size >= impl.opts.pipeline_threshold);
}

Result<PendingTreePtr> ReadPendingTree(Store::Impl& impl, const Digest& layer,
                                       const Digest& diff_id, LayerDecoder::Kind kind,
                                       const UnpackLimits& limits, ByteSource& source,
                                       bool pipelined) {
  auto state =
      std::make_unique<PendingTree::State>(&impl, TreeInfo{.layer = layer, .diff_id = diff_id});
  DIGESTD_ASSIGN_OR_RETURN(auto hasher, verify::Hasher::Create(verify::DigestAlgorithm::kSha256));
  state->sink = std::make_unique<FileObjectSink>(impl, std::move(hasher));
  auto tree = ReadLayerTree(source, kind, limits, *state->sink, pipelined);
  if (!tree) return state->Fail(tree.error());
  if (tree->diff_id != diff_id) {
    impl.counters.digest_mismatches.fetch_add(1, std::memory_order_relaxed);
    return state->Fail(StoreError(Errc::kDigestMismatch,
                                  "layer " + layer.ToString() + " uncompresses to " +
                                      tree->diff_id.ToString() + " but its diff_id is " +
                                      diff_id.ToString()));
  }
  tree->layer = layer;
  state->info.entries = tree->entries.size();
  state->info.file_bytes = tree->file_bytes;
  state->tree = std::move(*tree);
  return PendingTree::State::Make(std::move(state));
}

bool TreeNeedsRecords(const PendingTree::State& s) { return s.tree && !s.committed; }

const TreeInfo& PendingTreeInfo(const PendingTree::State& s) { return s.info; }

Result<void> AddTreeRecords(Store::Impl& impl, Index::Batch& batch, PendingTree::State& s,
                            std::int64_t now) {
  (void)impl;
  s.info.created = now;
  const std::string prefix = EntryKeyPrefix(s.info.layer);
  batch.Put(Cf::kTrees, s.info.layer.ToString(), EncodeTreeInfo(s.info));
  for (const auto& e : s.tree->entries) batch.Put(Cf::kEntries, prefix + e.path, EncodeEntry(e));
  for (const auto& c : s.sink->used()) batch.Put(Cf::kFileRefs, EdgeKey(c, s.info.layer), "");
  return {};
}

void MarkTreeCommitted(Store::Impl& impl, PendingTree::State& s) {
  s.committed = true;
  s.sink->Unpin();
  impl.log->debug("unpacked layer={} entries={} file_bytes={} new_files={}",
                  s.info.layer.ToString(), s.info.entries, s.info.file_bytes,
                  s.sink->created().size());
  s.tree.reset();  // the entries are in the index now; free the memory
}

Result<void> Store::CommitTrees(std::span<const PendingTreePtr> trees) {
  auto& impl = *impl_;
  bool any = false;
  for (const auto& t : trees) any = any || (t && TreeNeedsRecords(*t->s_));
  if (!any) return {};
  std::shared_lock maint(impl.maint_mu);
  // One sync for every file object of every tree, before the records that make them reachable.
  if (::syncfs(impl.files_fd.Get()) != 0) return SysError(Module::kStore, "syncfs files");
  const auto now = impl.Now();
  Index::Batch batch;
  for (const auto& t : trees) {
    if (!t || !TreeNeedsRecords(*t->s_)) continue;
    if (!Contains(t->s_->info.layer)) {
      return StoreError(Errc::kNotFound, "layer " + t->s_->info.layer.ToString() +
                                             " was removed before its tree was committed");
    }
    DIGESTD_RETURN_IF_ERROR(AddTreeRecords(impl, batch, *t->s_, now));
  }
  DIGESTD_RETURN_IF_ERROR(impl.index->Write(batch));
  for (const auto& t : trees) {
    if (t && TreeNeedsRecords(*t->s_)) MarkTreeCommitted(impl, *t->s_);
  }
  impl.generation.fetch_add(1, std::memory_order_release);
  return {};
}

Result<TreeInfo> Store::UnpackLayer(const Digest& layer, const Digest& diff_id,
                                    std::string_view media_type, const UnpackLimits& limits) {
  DIGESTD_ASSIGN_OR_RETURN(auto pending, PrepareTree(layer, diff_id, media_type, limits));
  std::vector<PendingTreePtr> one;
  one.push_back(std::move(pending));
  if (auto r = CommitTrees(one); !r) return one.front()->s_->Fail(r.error());
  return one.front()->info();
}

Result<std::optional<TreeInfo>> Store::GetTreeInfo(const Digest& layer) const {
  DIGESTD_ASSIGN_OR_RETURN(auto value, impl_->index->Get(Cf::kTrees, layer.ToString()));
  if (!value) return std::optional<TreeInfo>();
  auto info = DecodeTreeInfo(layer.ToString(), *value);
  if (!info) {
    impl_->counters.corrupt_records.fetch_add(1, std::memory_order_relaxed);
    return info.error();
  }
  return std::optional<TreeInfo>(std::move(*info));
}

Result<std::vector<TreeInfo>> Store::ListTrees() const {
  return impl_->DecodeAll<TreeInfo>(Cf::kTrees, DecodeTreeInfo);
}

Result<LayerTree> Store::LoadTree(const Digest& layer) const {
  auto& impl = *impl_;
  DIGESTD_ASSIGN_OR_RETURN(auto info, GetTreeInfo(layer));
  if (!info) return StoreError(Errc::kNotFound, "layer " + layer.ToString() + " has no tree");
  LayerTree tree{.layer = layer, .diff_id = info->diff_id};
  std::unordered_set<std::string> dirs;
  std::unordered_map<std::uint32_t, Digest> groups;
  std::optional<Error> err;
  auto corrupt = [&](std::string_view path, std::string why) {
    impl.counters.corrupt_records.fetch_add(1, std::memory_order_relaxed);
    err = StoreError(Errc::kCorrupt, "corrupt tree of " + layer.ToString() + " at " +
                                         Quote(path) + ": " + std::move(why));
    return false;
  };
  const std::string prefix = EntryKeyPrefix(layer);
  DIGESTD_RETURN_IF_ERROR(
      impl.index->ScanPrefix(Cf::kEntries, prefix, [&](std::string_view k, std::string_view v) {
        const std::string_view path = k.substr(prefix.size());
        auto e = DecodeEntry(path, v);
        if (!e) return corrupt(path, e.error().context());
        if (tree.entries.size() >= info->entries) return corrupt(path, "more entries than recorded");
        if (path.empty() != tree.entries.empty()) return corrupt(path, "root is not first");
        if (!path.empty()) {
          const auto slash = path.rfind('/');
          const std::string parent(slash == std::string_view::npos ? std::string_view()
                                                                   : path.substr(0, slash));
          if (!dirs.count(parent)) return corrupt(path, "parent is not a directory of the tree");
        }
        if (e->type == EntryType::kDirectory) dirs.emplace(path);
        if (e->link_group != 0) {
          auto [it, fresh] = groups.emplace(e->link_group, *e->content);
          if (!fresh && it->second != *e->content) return corrupt(path, "hard links disagree");
        }
        if (e->type == EntryType::kRegular) tree.file_bytes += e->size;
        tree.entries.push_back(std::move(*e));
        return true;
      }));
  if (err) return *err;
  if (tree.entries.size() != info->entries) {
    impl.counters.corrupt_records.fetch_add(1, std::memory_order_relaxed);
    return StoreError(Errc::kCorrupt, "tree of " + layer.ToString() + " has " +
                                          std::to_string(tree.entries.size()) + " entries, " +
                                          std::to_string(info->entries) + " recorded");
  }
  tree.file_bytes = info->file_bytes;
  return tree;
}

Result<UniqueFd> Store::OpenFile(const Digest& content) const {
  auto fd = OpenBeneath(impl_->files_fd.Get(), Impl::RelPath(content), O_RDONLY | O_NOFOLLOW);
  if (!fd && fd.error().sys_errno() == ENOENT) {
    return StoreError(Errc::kNotFound, "file object " + content.ToString() + " not in the store");
  }
  return fd;
}

Result<Usage> Store::FileUsage() const {
  Usage u;
  DIGESTD_RETURN_IF_ERROR(
      WalkBlobFiles(impl_->files_fd.Get(), [&](const FoundFile& f) -> Result<void> {
        if (f.digest) {
          u.blobs += 1;
          u.bytes += f.size;
        }
        return {};
      }));
  return u;
}

}  // namespace digestd::store
