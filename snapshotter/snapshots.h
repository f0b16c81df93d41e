#pragma once

// containerd's snapshotter contract over digestd's verified layers, without gRPC (grpc_server.h
// is the transport). Snapshots are named by containerd ("<namespace>/<n>/<key>"):
//
//  - committed snapshots are always verified layer stacks that digestd holds, named by chain ID
//    (or by containerd's name for a stack that replaced an extraction, see Commit); their
//    "lowerdirs" are the FUSE mount's layers/sha256/<hex> directories;
//  - active snapshots (a container's rootfs) get a writable upper and work directory under
//    `root`, overlaid on their parent's layers; views are read-only.
//
// Remote layers: Prepare with label containerd.io/snapshot.ref = <chain ID> for a chain digestd
// holds records a committed snapshot for it and answers AlreadyExists, so containerd neither
// fetches nor unpacks the layer. An extraction prepared without that label (`ctr image pull`'s
// unpack) for a chain digestd holds gets a scratch directory; at Commit the extraction is
// discarded (wiped) and the committed snapshot serves digestd's verified tree. A chain digestd
// does not hold is refused, naming it: `digestctl pull` the image first. Committing any other
// active snapshot is refused: nothing unverified becomes a layer.
//
// Every record is persistent in the store (snapshots column family) and survives restarts;
// upper directories are wiped (overwritten, then removed) on Remove and Cleanup. Each active
// snapshot over verified layers holds a store lease on the images that carry them, so GC cannot
// take the layers from under a running container. Thread-safe.

#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "common/error.h"
#include "snapshotter/chain_index.h"
#include "store/store.h"

namespace digestd::snapshotter {

inline constexpr std::string_view kLabelSnapshotRef = "containerd.io/snapshot.ref";
inline constexpr std::string_view kLabelCriImageRef = "containerd.io/snapshot/cri.image-ref";

enum class Kind { kUnknown = 0, kView = 1, kActive = 2, kCommitted = 3 };

struct Info {
  std::string name;
  std::string parent;
  Kind kind = Kind::kUnknown;
  std::int64_t created_ns = 0;
  std::int64_t updated_ns = 0;
  std::map<std::string, std::string> labels;
};

struct Mount {
  std::string type;
  std::string source;
  std::vector<std::string> options;
};

struct Usage {
  std::int64_t size = 0;
  std::int64_t inodes = 0;
};

struct SnapshotsOptions {
  std::filesystem::path root;        // upper and work directories (created 0700)
  std::filesystem::path mountpoint;  // digestd's FUSE mount
  bool wipe = true;                  // overwrite upper-dir files before removing them
  // Digests that must not be served (denied, or withdrawn by a trust change).
  std::function<bool(const verify::Digest&)> hidden;
  // Pull on demand: when containerd (CRI) asks for a layer chain digestd does not hold and names
  // the image (label containerd.io/snapshot/cri.image-ref), pull it through digestd's verified
  // pipeline, under its policy, then answer. Unset: refuse and name the image to pull.
  std::function<Result<void>(const std::string& image_ref)> pull;
};

class Snapshots {
 public:
  static Result<std::unique_ptr<Snapshots>> Open(store::Store& store, SnapshotsOptions options);
  ~Snapshots();

  Result<std::vector<Mount>> Prepare(const std::string& key, const std::string& parent,
                                     const std::map<std::string, std::string>& labels);
  Result<std::vector<Mount>> View(const std::string& key, const std::string& parent,
                                  const std::map<std::string, std::string>& labels);
  Result<std::vector<Mount>> Mounts(const std::string& key);
  Result<void> Commit(const std::string& name, const std::string& key,
                      const std::map<std::string, std::string>& labels);
  Result<void> Remove(const std::string& key);
  Result<Info> Stat(const std::string& key);
  // Only labels can change: `paths` empty (all labels replaced) or "labels" / "labels.<key>".
  Result<Info> Update(const Info& info, const std::vector<std::string>& paths);
  Result<std::vector<Info>> List();
  Result<Usage> DiskUsage(const std::string& key);
  // Removes (and wipes) directories under root that no snapshot owns.
  Result<void> Cleanup();

 private:
  struct Impl;
  explicit Snapshots(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace digestd::snapshotter
