// Image transactions: see image_txn.h for the contract and docs/architecture.md ("Image
// transactions") for the crash states.

#include "store/image_txn.h"
#include "store/errors.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "store/fs_util.h"
#include "store/records.h"
#include "store/store_impl.h"

namespace digestd::store {
namespace {

// The mount's inode ranges (Store::InodesFor) of an image and its layers, into a commit's batch:
// `children` are the image manifest's, `entries` the tree sizes of layers this commit records.
// Caller holds impl.inode_mu until the batch is written.
Result<void> AddImageInodes(Store::Impl& impl, const Store& store, const Digest& image_manifest,
                            const std::vector<Digest>& children,
                            const std::unordered_map<Digest, std::uint64_t>& entries,
                            Index::Batch& batch) {
  std::unordered_set<Digest> seen;
  std::uint64_t total = 2;  // images/<m>/ and its lowerdir file
  for (const auto& child : children) {
    if (!seen.insert(child).second) continue;
    std::uint64_t n = 0;
    if (auto it = entries.find(child); it != entries.end()) {
      n = it->second;
    } else {
      DIGESTD_ASSIGN_OR_RETURN(auto info, store.GetTreeInfo(child));
      if (!info) continue;  // the config (or a layer not unpacked: numbered when served)
      n = info->entries;
    }
    DIGESTD_RETURN_IF_ERROR(AddInodeRange(impl, batch, InodeKind::kLayer, child, n));
    total += n;
  }
  DIGESTD_RETURN_IF_ERROR(AddInodeRange(impl, batch, InodeKind::kImage, image_manifest, total));
  // blobs/sha256/<hex> of the manifest, the config and the layers: numbered now too, so that
  // serving never writes (a hand-over's old process serves from a sealed index).
  seen.insert(image_manifest);
  for (const auto& d : seen) DIGESTD_RETURN_IF_ERROR(AddInodeRange(impl, batch, InodeKind::kBlob, d, 1));
  return {};
}


}  // namespace

Result<std::unique_ptr<ImageTxn>> Store::BeginImage(std::string_view tenant) {
  if (!tenant.empty()) DIGESTD_RETURN_IF_ERROR(ValidateName("tenant", tenant));
  return std::unique_ptr<ImageTxn>(new ImageTxn(*this, std::string(tenant)));
}

ImageTxn::ImageTxn(Store& store, std::string tenant)
    : store_(store), impl_(*store.impl_), tenant_(std::move(tenant)) {}

ImageTxn::~ImageTxn() { Rollback(); }

Result<BlobWriterPtr> ImageTxn::Ingest(const Digest& digest, std::uint64_t size,
                                       IngestOptions options) {
  DIGESTD_RETURN_IF_ERROR(ValidateMediaType(options.media_type));
  if (store_.IsDenied(digest)) {
    return StoreError(Errc::kPermission, digest.ToString() + " is on the deny list");
  }
  std::lock_guard txn_lock(mu_);
  if (committed_) return StoreError(Errc::kAborted, "image transaction already committed");
  if (staged_.count(digest) || pinned_.count(digest)) return BlobWriterPtr();
  // A remover (GC, quota, wipe: maint_mu exclusive) decides what is live from the pins; a pin
  // taken while it runs could name a blob it is about to remove. Never wait for it here (this
  // runs on the event loop): the caller polls.
  std::shared_lock maint(impl_.maint_mu, std::try_to_lock);
  if (!maint.owns_lock()) {
    return StoreError(Errc::kBusy, "store maintenance in progress");
  }
  std::lock_guard lock(impl_.mu);
  if (auto it = impl_.staged.find(digest); it != impl_.staged.end()) {
    ++it->second.holders;
    staged_.insert(digest);
    return BlobWriterPtr();
  }
  if (impl_.in_flight.count(digest)) {
    return StoreError(Errc::kBusy, digest.ToString() + " is being written by another pull");
  }
  if (store_.Contains(digest)) {
    ++impl_.txn_pins[digest];
    pinned_.insert(digest);
    return BlobWriterPtr();
  }
  impl_.in_flight.insert(digest);
  options.wait_if_in_flight = false;
  if (options.tenant.empty()) options.tenant = tenant_;
  // StartWriter releases the claim itself when it fails.
  return store_.StartWriter(digest, size, std::move(options));
}

Result<void> ImageTxn::Stage(BlobWriter& writer) {
  const Digest digest = writer.expected_digest();
  const std::uint64_t size = writer.expected_size();
  const std::string media_type = writer.options().media_type;
  const std::string tenant = writer.options().tenant;
  DIGESTD_RETURN_IF_ERROR(writer.Stage());
  std::shared_ptr<PendingTree> tree(writer.TakeTree().release());
  std::lock_guard txn_lock(mu_);
  std::lock_guard lock(impl_.mu);
  auto& entry = impl_.staged[digest];
  entry.size = size;
  entry.media_type = media_type;
  entry.tenant = tenant;
  entry.holders = 1;
  entry.tree = std::move(tree);
  staged_.insert(digest);
  // Staged bytes count towards the quota from the moment they are on disk.
  impl_.usage.blobs += 1;
  impl_.usage.bytes += size;
  return {};
}

Result<void> ImageTxn::AddBlob(const Digest& digest, std::string bytes, std::string media_type,
                               std::vector<Digest> children) {
  DIGESTD_RETURN_IF_ERROR(ValidateMediaType(media_type));
  if (const Digest actual = verify::Hasher::Of(digest.algorithm(), bytes); actual != digest) {
    return StoreError(Errc::kDigestMismatch,
                    "digest mismatch for " + digest.ToString() + ": got " + actual.ToString());
  }
  std::lock_guard txn_lock(mu_);
  small_.push_back(Small{digest, std::move(bytes), std::move(media_type), std::move(children)});
  return {};
}

Result<void> ImageTxn::EnsureTree(const Digest& layer, const Digest& diff_id,
                                  std::string_view media_type, const UnpackLimits& limits) {
  std::shared_ptr<PendingTree> staged_tree;
  bool is_staged = false;
  std::string staged_type;
  {
    std::lock_guard txn_lock(mu_);
    if (!staged_.count(layer) && !pinned_.count(layer)) {
      return StoreError(Errc::kInvalidArgument,
                      "layer " + layer.ToString() + " is not held by this image transaction");
    }
    std::lock_guard lock(impl_.mu);
    if (auto it = impl_.staged.find(layer); it != impl_.staged.end() && staged_.count(layer)) {
      is_staged = true;
      staged_tree = it->second.tree;
      staged_type = it->second.media_type;
    }
  }
  auto mismatch = [&](const Digest& got) {
    return StoreError(Errc::kDigestMismatch, "layer " + layer.ToString() + " uncompresses to " +
                                               got.ToString() + " but its diff_id is " +
                                               diff_id.ToString());
  };
  if (staged_tree) {
    const TreeInfo& info = PendingTreeInfo(*staged_tree->s_);
    if (info.diff_id != diff_id) return mismatch(info.diff_id);
    return {};
  }
  // A tree recorded already (a stored layer, or a staged one another pull committed meanwhile).
  DIGESTD_ASSIGN_OR_RETURN(auto existing, store_.GetTreeInfo(layer));
  if (existing) {
    if (existing->diff_id != diff_id) return mismatch(existing->diff_id);
    return {};
  }
  PendingTreePtr tree;
  if (is_staged) {
    // Staged without a tree (it came as another image's non-layer blob): unpack the staged file.
    const std::string type(media_type.empty() ? std::string_view(staged_type) : media_type);
    DIGESTD_ASSIGN_OR_RETURN(auto kind, LayerDecoder::KindFor(type));
    DIGESTD_ASSIGN_OR_RETURN(
        UniqueFd fd, OpenBeneath(impl_.blobs_fd.Get(), Store::Impl::RelPath(layer),
                                 O_RDONLY | O_NOFOLLOW));
    struct stat st {};
    const bool big = ::fstat(fd.Get(), &st) == 0 &&
                     static_cast<std::uint64_t>(st.st_size) >= impl_.opts.pipeline_threshold;
    FdSource source(fd.Get());
    DIGESTD_ASSIGN_OR_RETURN(tree, ReadPendingTree(impl_, layer, diff_id, kind, limits, source, big));
  } else {
    DIGESTD_ASSIGN_OR_RETURN(tree, store_.PrepareTree(layer, diff_id, media_type, limits));
  }
  std::lock_guard txn_lock(mu_);
  trees_.push_back(std::move(tree));
  return {};
}

Result<std::string> ImageTxn::ReadBlob(const Digest& digest, std::uint64_t cap) const {
  std::optional<std::uint64_t> staged_size;
  {
    std::lock_guard txn_lock(mu_);
    for (const auto& s : small_) {
      if (s.digest == digest) {
        if (s.bytes.size() > cap) break;
        return s.bytes;
      }
    }
    if (staged_.count(digest)) {
      std::lock_guard lock(impl_.mu);
      if (auto it = impl_.staged.find(digest); it != impl_.staged.end()) {
        staged_size = it->second.size;
      }
    }
  }
  if (!staged_size) return store_.ReadBlob(digest, cap);
  if (*staged_size > cap) {
    return StoreError(Errc::kTooLarge, digest.ToString() + " is " + std::to_string(*staged_size) +
                                         " bytes, more than " + std::to_string(cap));
  }
  return impl_.ReadWhole(digest, *staged_size);
}

Result<void> ImageTxn::Commit(const ImageCommit& commit) {
  if (committed_) return StoreError(Errc::kAborted, "image transaction already committed");
  if (!commit.reference.empty()) DIGESTD_RETURN_IF_ERROR(ValidateReferenceText(commit.reference));
  std::shared_lock maint(impl_.maint_mu);
  std::lock_guard commit_lock(impl_.commit_mu);
  std::lock_guard txn_lock(mu_);

  // Manifests: written now (no sync yet), as files named by their digest.
  struct Written {
    const Small* blob;
    bool linked;  // this commit created the file (unlinked again if the commit fails)
  };
  std::vector<Written> written;
  auto unlink_written = [&] {
    for (const auto& w : written) {
      if (!w.linked) continue;
      if (auto shard = OpenBeneath(impl_.blobs_fd.Get(), Store::Impl::ShardPath(w.blob->digest),
                                   O_RDONLY | O_DIRECTORY)) {
        (void)::unlinkat(shard->Get(), std::string(w.blob->digest.hex()).c_str(), 0);
      }
    }
  };
  for (const auto& s : small_) {
    if (store_.Contains(s.digest)) {
      written.push_back({&s, false});
      continue;
    }
    {
      std::lock_guard lock(impl_.mu);
      if (impl_.in_flight.count(s.digest) || impl_.staged.count(s.digest)) {
        // Another writer has it; this image's record below still names it, and the edges are
        // this commit's to write. Rare (two pulls of one manifest): let the caller retry.
        unlink_written();
        return StoreError(Errc::kBusy, s.digest.ToString() + " is being written by another pull");
      }
    }
    auto shard = OpenBeneath(impl_.blobs_fd.Get(), Store::Impl::ShardPath(s.digest),
                             O_RDONLY | O_DIRECTORY);
    if (!shard) {
      unlink_written();
      return shard.error();
    }
    auto tmp = OpenBeneath(impl_.staging_fd.Get(), ".", O_TMPFILE | O_RDWR, 0600);
    if (!tmp) {
      unlink_written();
      return tmp.error();
    }
    const std::string hex(s.digest.hex());
    Result<void> ok = PWriteAll(tmp->Get(), std::as_bytes(std::span(s.bytes)), 0);
    if (ok && ::fchmod(tmp->Get(), 0444) != 0) ok = SysError(Module::kStore, "chmod manifest");
    bool linked = false;
    if (ok) {
      const std::string proc = "/proc/self/fd/" + std::to_string(tmp->Get());
      if (::linkat(AT_FDCWD, proc.c_str(), shard->Get(), hex.c_str(), AT_SYMLINK_FOLLOW) == 0) {
        linked = true;
      } else if (errno == EEXIST) {
        // A leftover nobody recorded: keep it if it is these bytes, else replace it.
        if (!impl_.VerifyFile(shard->Get(), hex, s.digest, s.bytes.size())) {
          (void)::unlinkat(shard->Get(), hex.c_str(), 0);
          if (::linkat(AT_FDCWD, proc.c_str(), shard->Get(), hex.c_str(), AT_SYMLINK_FOLLOW) == 0) {
            linked = true;
          } else {
            ok = SysError(Module::kStore, "link manifest " + s.digest.ToString());
          }
        }
      } else {
        ok = SysError(Module::kStore, "link manifest " + s.digest.ToString());
      }
    }
    if (!ok) {
      unlink_written();
      return ok.error();
    }
    written.push_back({&s, linked});
  }

  // Everything this image needs is on disk under its name: one sync makes it durable (blob data,
  // file objects and the directory entries naming them) before any record names it.
  if (::syncfs(impl_.root_fd.Get()) != 0) {
    auto e = SysError(Module::kStore, "syncfs store");
    unlink_written();
    return e;
  }

  const auto now = impl_.Now();
  Index::Batch batch;
  std::vector<Digest> newly_recorded;
  std::vector<PendingTree::State*> tree_states;
  {
    std::lock_guard lock(impl_.mu);
    for (const auto& d : staged_) {
      auto it = impl_.staged.find(d);
      if (it == impl_.staged.end()) continue;
      auto& entry = it->second;
      if (!entry.recorded) {
        batch.Put(Cf::kBlobs, d.ToString(),
                  EncodeBlob(BlobInfo{.digest = d,
                                      .size = entry.size,
                                      .media_type = entry.media_type,
                                      .created = now,
                                      .last_used = now,
                                      .tenant = entry.tenant}));
        newly_recorded.push_back(d);
      }
      if (entry.tree && TreeNeedsRecords(*entry.tree->s_)) tree_states.push_back(entry.tree->s_.get());
    }
  }
  for (const auto& t : trees_) {
    if (t && TreeNeedsRecords(*t->s_)) tree_states.push_back(t->s_.get());
  }
  std::vector<PendingTree::State*> added;
  for (auto* st : tree_states) {
    // A layer recorded meanwhile through another path keeps its tree; ours would only repeat it
    // (and is discarded with the transaction).
    DIGESTD_ASSIGN_OR_RETURN(auto existing, store_.GetTreeInfo(PendingTreeInfo(*st).layer));
    if (existing) continue;
    DIGESTD_RETURN_IF_ERROR(AddTreeRecords(impl_, batch, *st, now));
    added.push_back(st);
  }
  for (const auto& w : written) {
    const Small& s = *w.blob;
    if (w.linked || !store_.Contains(s.digest)) {
      batch.Put(Cf::kBlobs, s.digest.ToString(),
                EncodeBlob(BlobInfo{.digest = s.digest,
                                    .size = s.bytes.size(),
                                    .media_type = s.media_type,
                                    .created = now,
                                    .last_used = now,
                                    .tenant = tenant_}));
    }
    for (const auto& child : s.children) {
      batch.Put(Cf::kEdges, EdgeKey(s.digest, child), "");
      batch.Put(Cf::kBackrefs, EdgeKey(child, s.digest), "");
    }
  }
  if (!commit.reference.empty() && commit.record) {
    batch.Put(Cf::kRefs, commit.reference,
              EncodeRef(RefRecord{.reference = commit.reference,
                                  .digest = commit.record->manifest,
                                  .resolved_at = now}));
  }
  if (commit.record) batch.Put(Cf::kImages, commit.record->manifest.ToString(), EncodeImage(*commit.record));

  // The mount's inode numbers for the image and its layers, in the same batch (no sync of their
  // own at first use). Best effort: whatever is not recorded here gets its range when served.
  std::unique_lock inode_lock(impl_.inode_mu);
  if (commit.record) {
    std::unordered_map<Digest, std::uint64_t> entries;
    for (auto* st : tree_states) entries[PendingTreeInfo(*st).layer] = PendingTreeInfo(*st).entries;
    const Digest& image = commit.record->image_manifest;
    Result<std::vector<Digest>> children = std::vector<Digest>();
    bool found = false;
    for (const auto& s : small_) {
      if (s.digest == image) {
        children = s.children;
        found = true;
      }
    }
    if (!found) children = store_.Children(image);
    Result<void> r = children ? AddImageInodes(impl_, store_, image, *children, entries, batch)
                              : Result<void>(children.error());
    if (r && commit.record->manifest != image) {
      r = AddInodeRange(impl_, batch, InodeKind::kBlob, commit.record->manifest, 1);  // the index
    }
    if (!r) {
      impl_.log->warn("inode ranges for {} left to first use: {}",
                      commit.record->image_manifest.ToString(), r.error().ToString());
    }
  }
  if (auto r = impl_.index->Write(batch); !r) {
    // The write may have reached the WAL (an I/O error after it): the files it names stay, and
    // the next start removes those that have no record after all.
    if (r.error().code() == Errc::kIo) {
      // Trees too: their file objects stay (a tree discarded here would take the file objects
      // its records, replayed from the WAL, still name: an image whole in the index whose files
      // are gone). Unreferenced ones are swept like any orphan.
      for (auto* st : added) MarkTreeCommitted(impl_, *st);
      std::lock_guard lock(impl_.mu);
      for (const auto& d : staged_) {
        if (auto it = impl_.staged.find(d); it != impl_.staged.end()) it->second.keep = true;
      }
    } else {
      unlink_written();
    }
    Error e = r.error();
    return std::move(e).Wrap("record image");
  }
  for (auto* st : added) MarkTreeCommitted(impl_, *st);
  {
    std::lock_guard lock(impl_.mu);
    for (const auto& d : newly_recorded) {
      if (auto it = impl_.staged.find(d); it != impl_.staged.end()) it->second.recorded = true;
    }
    for (const auto& w : written) {
      // Held until the transaction ends, like everything else it holds: the pull's own quota
      // enforcement after the commit must never evict the image it just committed.
      if (pinned_.insert(w.blob->digest).second) ++impl_.txn_pins[w.blob->digest];
      if (!w.linked) continue;
      impl_.usage.blobs += 1;
      impl_.usage.bytes += w.blob->bytes.size();
    }
  }
  impl_.counters.commits.fetch_add(1, std::memory_order_relaxed);
  impl_.generation.fetch_add(1, std::memory_order_release);
  committed_ = true;
  return {};
}

void ImageTxn::Rollback() {
  std::vector<Digest> release;
  std::vector<std::shared_ptr<PendingTree>> dying_trees;
  std::vector<Digest> unlink;
  {
    std::lock_guard txn_lock(mu_);
    std::lock_guard lock(impl_.mu);
    for (const auto& d : pinned_) {
      auto it = impl_.txn_pins.find(d);
      if (it != impl_.txn_pins.end() && --it->second <= 0) impl_.txn_pins.erase(it);
    }
    pinned_.clear();
    for (const auto& d : staged_) {
      auto it = impl_.staged.find(d);
      if (it == impl_.staged.end()) continue;
      auto& entry = it->second;
      if (--entry.holders > 0) continue;
      if (!entry.recorded) {
        // Never recorded by anyone: it goes, with the file objects only its tree created. The
        // quota's count of it goes too.
        impl_.usage.blobs -= std::min<std::uint64_t>(impl_.usage.blobs, 1);
        impl_.usage.bytes -= std::min(impl_.usage.bytes, entry.size);
        if (!entry.keep) unlink.push_back(d);
      }
      // Destroyed below, without `mu` held: discarding a tree sweeps file objects, which takes
      // `mu` for the usage counts.
      dying_trees.push_back(std::move(entry.tree));
      impl_.staged.erase(it);
      release.push_back(d);
    }
    staged_.clear();
  }
  for (const auto& d : unlink) {
    if (auto shard = OpenBeneath(impl_.blobs_fd.Get(), Store::Impl::ShardPath(d),
                                 O_RDONLY | O_DIRECTORY)) {
      (void)::unlinkat(shard->Get(), std::string(d.hex()).c_str(), 0);
    }
    impl_.counters.aborts.fetch_add(1, std::memory_order_relaxed);
  }
  dying_trees.clear();  // discards uncommitted trees: their new file objects are swept
  trees_.clear();
  for (const auto& d : release) impl_.FinishInFlight(d);
}

}  // namespace digestd::store
