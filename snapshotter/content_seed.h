#pragma once

// Hands an image's verified blobs to containerd's content store, so that containerd finds them
// present and fetches nothing from the registry: `ctr image pull` (which downloads every blob into
// the content store before it unpacks, whatever the snapshotter) and any other client that does
// not go through CRI. The bytes come from digestd's store, where they were verified; containerd
// checks each digest again when it commits.
//
// The blobs are written under a containerd lease that expires after `hold` (label
// containerd.io/gc.expire): containerd's GC keeps them that long without an image referencing
// them; an image pulled meanwhile references them and keeps them after that.

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "common/error.h"
#include "common/names.h"
#include "store/store.h"
#include "verify/digest.h"

namespace digestd::snapshotter {

struct SeedOptions {
  std::filesystem::path containerd_socket;  // containerd's gRPC socket
  std::string ns;                           // containerd namespace ("default", "k8s.io", ...)
  std::chrono::seconds hold{3600};          // lease expiry
  std::chrono::seconds timeout{300};        // for the whole image
};

struct SeedReport {
  std::size_t written = 0;  // blobs copied
  std::size_t present = 0;  // blobs containerd had already
  std::uint64_t bytes = 0;  // bytes copied
};

// Copies `blobs` (manifests, config, layers; each must be in `store`) into containerd's content
// store in `opts.ns`. Blobs containerd already has are skipped.
Result<SeedReport> SeedContainerdContent(const store::Store& store,
                                         const std::vector<verify::Digest>& blobs,
                                         const SeedOptions& opts);

// A committed pull, as the hand-off needs it.
struct PulledImage {
  verify::Digest manifest;        // what the reference resolved to (an index or a manifest)
  verify::Digest image_manifest;  // the platform's manifest (== manifest without an index)
  verify::Digest config;
  std::vector<verify::Digest> layers;
  std::string tenant;  // "" for a pull without a tenant
};

struct HandOffOptions {
  std::filesystem::path containerd_socket;
  std::vector<std::string> namespaces;  // [snapshotter] seed_namespaces
  std::chrono::seconds hold{3600};
};

// The daemon's after-pull hook: hands `image` to containerd's content store in every namespace
// (manifest(s), config, layers). A tenant's pull is not handed over (`*skipped` says so):
// containerd's content store is shared by every client of containerd and a lease wipe cannot
// reach (or overwrite) its copies. The first namespace that fails ends it with its error.
Result<void> HandOffToContainerd(const store::Store& store, const PulledImage& image,
                                 const HandOffOptions& opts, bool* skipped = nullptr);

// containerd's namespace rule: alphanumeric words joined by '.', '_' or '-', at most 76 bytes.
// (Defined in common/names.h, where the daemon's config validation finds it too.)
using digestd::ValidContainerdNamespace;

}  // namespace digestd::snapshotter
