#pragma once

// Which layer stacks digestd holds verified, by containerd's chain ID:
//   chain(L1) = diff_id(L1); chain(L1..Ln) = sha256(chain(L1..Ln-1) + " " + diff_id(Ln)).
// Built from the store's image records (each image's manifest layers and the diff_id the store
// recorded when it unpacked and checked them against the verified config). A chain is present only
// if every layer below it has an unpacked tree. Immutable; rebuilt when the store changes.

#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "common/error.h"
#include "store/store.h"
#include "verify/digest.h"

namespace digestd::snapshotter {

struct ChainLink {
  std::string chain_id;         // "sha256:<hex>"
  std::string parent;           // the chain below, "" for a bottom layer
  verify::Digest layer;         // the layer blob digest (the mount's layers/sha256/<hex>)
  verify::Digest diff_id;
  std::vector<verify::Digest> images;  // manifests whose stacks contain this chain
  int depth = 1;                // number of layers
};

std::string ChainIdOf(const std::vector<verify::Digest>& diff_ids);

class ChainIndex {
 public:
  static Result<ChainIndex> Build(const store::Store& store);

  const ChainLink* Find(std::string_view chain_id) const;
  // The layer blobs of a chain, bottom first.
  std::vector<verify::Digest> Layers(std::string_view chain_id) const;
  // Images recorded under `reference` (canonical form, e.g. "docker.io/library/app:v1").
  std::vector<verify::Digest> ImagesNamed(std::string_view reference) const;
  std::size_t size() const { return links_.size(); }
  std::uint64_t generation() const { return generation_; }

 private:
  std::map<std::string, ChainLink, std::less<>> links_;
  std::map<std::string, std::vector<verify::Digest>, std::less<>> references_;
  std::uint64_t generation_ = 0;
};

}  // namespace digestd::snapshotter
