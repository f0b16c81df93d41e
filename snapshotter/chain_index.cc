#include "snapshotter/chain_index.h"

#include <algorithm>

#include "verify/hasher.h"
#include "verify/oci.h"

namespace digestd::snapshotter {

std::string ChainIdOf(const std::vector<verify::Digest>& diff_ids) {
  std::string chain;
  for (const auto& d : diff_ids) {
    chain = chain.empty()
                ? d.ToString()
                : verify::Hasher::Of(verify::DigestAlgorithm::kSha256, chain + " " + d.ToString())
                      .ToString();
  }
  return chain;
}

Result<ChainIndex> ChainIndex::Build(const store::Store& store) {
  ChainIndex index;
  index.generation_ = store.generation();
  DIGESTD_ASSIGN_OR_RETURN(auto images, store.ListImageRecords());
  for (const auto& image : images) {
    auto bytes = store.ReadBlob(image.image_manifest, verify::kDefaultManifestCap);
    if (!bytes) continue;  // removed meanwhile, or not ours to judge: no chain from it
    auto info = store.Stat(image.image_manifest);
    if (!info) continue;
    auto manifest = verify::ParseImageManifest(*bytes, info->media_type);
    if (!manifest) continue;
    std::vector<verify::Digest> diff_ids;
    std::string parent;
    for (const auto& l : manifest->layers) {
      auto tree = store.GetTreeInfo(l.digest);
      if (!tree || !*tree) break;  // a layer without a tree: nothing above it is complete
      diff_ids.push_back((*tree)->diff_id);
      const std::string chain = ChainIdOf(diff_ids);
      auto [it, inserted] = index.links_.try_emplace(
          chain, ChainLink{chain, parent, l.digest, (*tree)->diff_id, {},
                           static_cast<int>(diff_ids.size())});
      auto& imgs = it->second.images;
      if (std::find(imgs.begin(), imgs.end(), image.image_manifest) == imgs.end()) {
        imgs.push_back(image.image_manifest);
      }
      parent = chain;
    }
  }
  return index;
}

const ChainLink* ChainIndex::Find(std::string_view chain_id) const {
  auto it = links_.find(chain_id);
  return it == links_.end() ? nullptr : &it->second;
}

std::vector<verify::Digest> ChainIndex::Layers(std::string_view chain_id) const {
  std::vector<verify::Digest> out;
  for (const ChainLink* l = Find(chain_id); l != nullptr; l = Find(l->parent)) {
    out.push_back(l->layer);
    if (l->parent.empty()) break;
  }
  std::reverse(out.begin(), out.end());
  return out;
}

}  // namespace digestd::snapshotter
