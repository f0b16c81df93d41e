#pragma once

// An image transaction: everything one pull stores, made durable and visible as one step.
//
// A pull stages each blob it fetches (checked for size, digest, diff_id and, for layers, the
// tree reader's verdict; published under its digest name with no sync and no record), holds
// blobs the store has already (pinned, so no remover takes them), and at Commit() writes its
// manifests, syncs the filesystem once (syncfs: staged blobs, file objects and their directory
// entries) and then records blobs, edges, trees, the reference and the image record in one synced
// index batch. Destroyed uncommitted, it rolls back what it alone staged; a kill before the batch
// leaves files without records, which the next Store::Open removes. So after any crash an image
// is either whole (with media types, tenant and edges) or absent.
//
// Sharing: a blob another transaction is still writing is kBusy (poll); one it has staged is held
// by both (fetched once); whichever commits first records it. No transaction waits on another's
// commit, so concurrent pulls of images sharing layers cannot deadlock.
//
// Thread safety: one transaction may be called from several threads (the pull's io thread and
// the blocking pool); its methods serialize on an internal mutex, except that Commit() must not
// run concurrently with other calls on the same transaction.

#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_set>
#include <vector>

#include "common/error.h"
#include "store/store.h"

namespace digestd::store {

struct ImageCommit {
  std::string reference;             // canonical reference recorded (empty: none)
  std::optional<ImageRecord> record;  // the image record (keyed by its manifest)
};

class ImageTxn {
 public:
  ~ImageTxn();  // rolls back unless committed
  ImageTxn(const ImageTxn&) = delete;
  ImageTxn& operator=(const ImageTxn&) = delete;

  // Starts fetching blob `digest` for this image. A writer: write it, then Stage() it. Null: the
  // blob is stored or staged already and now held by this transaction (nothing to fetch).
  // kBusy: another writer is writing it or maintenance holds the store (try again shortly);
  // kPermission: denied. Never blocks on other writers.
  Result<BlobWriterPtr> Ingest(const Digest& digest, std::uint64_t size, IngestOptions options);
  // Checks and publishes a written blob (no sync, no record) and holds it. On error nothing of it
  // stays and the writer is aborted. Blocking (hashing may still be finishing): call off the
  // event loop.
  Result<void> Stage(BlobWriter& writer);
  // A small blob (a manifest) written at Commit(), with the edges GC follows.
  Result<void> AddBlob(const Digest& digest, std::string bytes, std::string media_type,
                       std::vector<Digest> children);
  // Makes sure `layer` (held by this transaction) has a tree at Commit(): a staged layer brings
  // the one unpacked while it streamed; a stored one without a tree is unpacked now. The tree's
  // diff_id must be `diff_id` (kDigestMismatch). Blocking.
  Result<void> EnsureTree(const Digest& layer, const Digest& diff_id, std::string_view media_type,
                          const UnpackLimits& limits);
  // A held blob's bytes (a config): staged or stored. kTooLarge over `cap`.
  Result<std::string> ReadBlob(const Digest& digest, std::uint64_t cap) const;
  // One syncfs, then one synced index batch. On error nothing is recorded (or, when the index
  // write's outcome is unknown, files it may name are kept for the next start to sort out), and
  // the transaction can only be rolled back. Blocking.
  Result<void> Commit(const ImageCommit& commit);

  bool committed() const { return committed_; }
  const std::string& tenant() const { return tenant_; }

 private:
  friend class Store;
  ImageTxn(Store& store, std::string tenant);
  void Rollback();

  struct Small {
    Digest digest;
    std::string bytes;
    std::string media_type;
    std::vector<Digest> children;
  };

  Store& store_;
  Store::Impl& impl_;
  const std::string tenant_;
  mutable std::mutex mu_;
  std::unordered_set<Digest> staged_;  // held entries of Impl::staged
  std::unordered_set<Digest> pinned_;  // held entries of Impl::txn_pins
  std::vector<Small> small_;
  std::vector<PendingTreePtr> trees_;  // unpacked here for layers stored without a tree
  bool committed_ = false;
};

}  // namespace digestd::store
