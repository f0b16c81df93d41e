#pragma once

// The inode namespace the mount serves, without FUSE: lookups, attributes, directory listings,
// link targets, xattrs and the backing content of every path below the mount. fuse_mount.cc is
// thin glue over this class; tests drive it directly.
//
// Layout (docs/architecture.md, "The mount"):
//   /blobs/sha256/<hex>                       verified blobs, 0440 root:blobs_gid under 0750
//                                             directories (admins only: docs/operations.md)
//   /layers/sha256/<hex>/...                  one layer's tree; whiteouts are 0:0 character
//                                             devices, opaque directories carry
//                                             trusted.overlay.opaque=y (for overlayfs lowerdirs)
//   /images/sha256/<manifest hex>/rootfs/     all layers merged, whiteouts applied
//   /images/sha256/<manifest hex>/lowerdir    "<mnt>/layers/sha256/<top>:...:<bottom>"
//
// Inode numbers are a function of the store's index, never of lookup order: a layer's tree, an
// image (its directory, lowerdir file and merged tree) and a blob each own a range recorded by
// Store::InodesFor (at the image's commit, or when first served), and a node's number is the
// range's first plus its position in the view (TreeBuilder's order: kInodeLayout). So a later
// process on the same store, adopting the kernel's FUSE connection, resolves every number the
// kernel holds (Resolve builds the view from the index) to the same object. Generations are
// always 1: numbers are never reused. Hard links of one layer share an inode with nlink set.
// Denied digests (and images using a denied layer) are ENOENT, at once.
//
// Thread safety: every method may be called from many threads. Trees are loaded once and then
// immutable; a mutex guards only the maps from names and numbers to them.
//
// Errors carry an errno (Error::sys_errno()) for the FUSE reply: ENOENT, ENOTDIR, EISDIR,
// EINVAL, ENODATA, EIO.

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

#include "common/error.h"
#include "common/unique_fd.h"
#include "store/store.h"

namespace digestd::fusefs {

using Ino = std::uint64_t;
inline constexpr Ino kRootIno = 1;

struct Attr {
  Ino ino = 0;
  std::uint32_t mode = 0;  // st_mode: type and permission bits
  std::uint32_t nlink = 1;
  std::uint32_t uid = 0;
  std::uint32_t gid = 0;
  std::uint64_t size = 0;
  std::int64_t mtime = 0;
  std::uint32_t mtime_nsec = 0;
  std::uint32_t rdev_major = 0;
  std::uint32_t rdev_minor = 0;
};

struct DirEntry {
  std::string name;
  Attr attr;
};

// Where reads of a regular file go: a backing file, or (for generated files) bytes.
struct Content {
  UniqueFd fd;
  std::string bytes;  // used when fd is empty
};

struct NamespaceOptions {
  // Absolute path the namespace is mounted at; used in the lowerdir files.
  std::string mountpoint;
  // Digests hidden besides the store's deny list (images withdrawn by a policy or trust
  // change); null: none. Called on every lookup and open: must be cheap and thread-safe.
  std::function<bool(const verify::Digest&)> hidden;
  // Group of blobs/ and its files (see MountOptions::blobs_gid).
  std::uint32_t blobs_gid = 0;
};

// Inode ranges of views that Drop() removed: [first, first + count).
struct DroppedRange {
  std::uint64_t first = 0;
  std::uint64_t count = 0;
};

class Namespace {
 public:
  Namespace(store::Store& store, NamespaceOptions options);
  ~Namespace();
  Namespace(const Namespace&) = delete;
  Namespace& operator=(const Namespace&) = delete;

  Result<Attr> Lookup(Ino parent, std::string_view name);
  Result<Attr> GetAttr(Ino ino);
  // The whole listing including "." and ".." (first), in a stable order.
  Result<std::vector<DirEntry>> ReadDir(Ino ino);
  // The listing from position `offset` (0 = "."); fn gets each entry and the offset of the next
  // one, and returns false to stop. Trees are walked in place (no copy of a large directory).
  Result<void> ReadDirFrom(Ino ino, std::uint64_t offset,
                           const std::function<bool(const DirEntry&, std::uint64_t)>& fn);
  // Whether entries below `ino` can change (the top directories listing the store) or never
  // will (trees); the glue picks cache timeouts by this.
  bool IsDynamic(Ino ino) const;
  Result<std::string> ReadLink(Ino ino);
  Result<Content> Open(Ino ino);
  // Sorted by name.
  Result<std::vector<std::pair<std::string, std::string>>> Xattrs(Ino ino);

  // The digests whose views were built so far: image manifests, then layers.
  std::vector<verify::Digest> Built() const;
  // Builds the view of `digest` (an image's merged tree, or a layer's) before any request needs
  // it: a hand-over's successor builds what its predecessor served before it serves too, so no
  // reader waits on a cold view. Errors (not in the store, not unpacked) are ignored.
  void Warm(const verify::Digest& digest);

  // Manifests of the image views built so far that use `digest` (as manifest or layer).
  std::vector<verify::Digest> ImagesUsing(const verify::Digest& digest) const;
  // Forgets every view built on `digest` (its layer view, the image views using it, its blob
  // and image inodes): their inode numbers answer ENOENT from now on and are never reused.
  // Returns the inode ranges dropped (for the caller's fd cache and the kernel).
  std::vector<DroppedRange> Drop(const verify::Digest& digest);
  // The inode ranges of the views built on `digest` so far (what Drop would remove).
  std::vector<DroppedRange> Ranges(const verify::Digest& digest) const;
  static constexpr Ino kBlobsDirIno = 3;   // blobs/sha256
  static constexpr Ino kLayersDirIno = 5;  // layers/sha256
  static constexpr Ino kImagesDirIno = 7;  // images/sha256

  // Kernel lookup counts: Ref after every entry reply, Forget when the kernel drops them. A
  // successor adopting a session starts from zero and learns counts lazily: forgets of more than
  // it counted (lookups its predecessor answered) are accepted and counted.
  void Ref(Ino ino);
  void Forget(Ino ino, std::uint64_t n);
  std::uint64_t LookupCount(Ino ino) const;
  std::uint64_t unmatched_forgets() const;

  struct TreeView;
  struct Synthetic;

 private:
  struct Found;
  Result<Found> Resolve(Ino ino);
  Result<std::shared_ptr<TreeView>> LayerView(const verify::Digest& layer);
  Result<std::shared_ptr<TreeView>> ImageView(const verify::Digest& manifest);
  Result<std::vector<verify::Digest>> ImageLayers(const verify::Digest& manifest);
  // Gives a freshly built view its inode range and records it under `digest` (or returns the
  // one another thread recorded first).
  std::shared_ptr<TreeView> Publish(
      std::unordered_map<std::string, std::shared_ptr<TreeView>>& by_digest,
      const verify::Digest& digest, std::shared_ptr<TreeView> view);
  Result<Ino> SyntheticIno(int kind, const verify::Digest& digest);
  // The recorded range (or, when the index refuses writes, one of this process only).
  Result<store::InodeRange> Range(store::InodeKind kind, const verify::Digest& digest,
                                  std::uint64_t count);
  Result<store::InodeRange> ImageRange(const verify::Digest& manifest);
  bool FindLocked(Ino ino, Found& f) const;
  std::vector<DroppedRange> RangesLocked(const verify::Digest& digest) const;
  Result<Attr> SyntheticAttr(Ino ino, const Synthetic& s);
  Result<std::string> LowerdirText(const verify::Digest& manifest);
  bool Denied(const TreeView& view) const;
  bool Gone(const verify::Digest& d) const;  // denied or hidden

  store::Store& store_;
  NamespaceOptions options_;
  std::int64_t started_;  // mtime of the top directories

  // Lock order: mu_, lookup_mu_ and damaged_mu_ are leaves. No other lock is taken while one of
  // them is held: not another of these, not the mount's (fuse_mount.cc: backing_mu, the
  // TableLock, the content cache's), not the store's (store calls run before or after, never
  // under them: the store may call back into the mount through its removal listener). A view
  // dropped under mu_ only releases memory and the fds it owns.
  mutable std::mutex mu_;  // views, synthetic inodes, volatile inode numbers
  Ino next_volatile_ = Ino{1} << 62;  // see Range()
  bool volatile_warned_ = false;
  std::map<Ino, std::shared_ptr<TreeView>> views_;  // by first inode
  std::unordered_map<std::string, std::shared_ptr<TreeView>> layer_views_;  // layer digest
  std::unordered_map<std::string, std::shared_ptr<TreeView>> image_views_;  // manifest digest
  std::unordered_map<std::string, Ino> synthetic_by_key_;
  std::unordered_map<Ino, std::unique_ptr<Synthetic>> synthetic_;

  mutable std::mutex lookup_mu_;  // lookups_, unmatched_forgets_ (leaf: see mu_)
  // File objects found not the size their tree records (damage under a running mount): refused
  // with EIO and audited once each.
  std::mutex damaged_mu_;  // damaged_ (leaf: see mu_; the audit write runs after it is released)
  std::unordered_set<verify::Digest> damaged_;
  std::unordered_map<Ino, std::uint64_t> lookups_;
  std::uint64_t unmatched_forgets_ = 0;
};

}  // namespace digestd::fusefs
