#include "snapshotter/chain_index.h"

#include <algorithm>

#include "verify/hasher.h"
#include "verify/reference.h"

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
    if (auto ref = verify::Reference::Parse(image.reference)) {
      index.references_[ref->String()].push_back(image.manifest);
    }
    auto layers = store.ImageLayers(image.image_manifest);
    if (!layers) continue;  // removed or denied meanwhile: no chain from it
    std::vector<verify::Digest> diff_ids;
    std::string parent;
    for (const auto& layer : *layers) {
      auto tree = store.GetTreeInfo(layer);
      if (!tree || !*tree) break;  // a layer without a tree: nothing above it is complete
      diff_ids.push_back((*tree)->diff_id);
      const std::string chain = ChainIdOf(diff_ids);
      auto [it, inserted] = index.links_.try_emplace(
          chain, ChainLink{chain, parent, layer, (*tree)->diff_id, {},
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

std::vector<verify::Digest> ChainIndex::ImagesNamed(std::string_view reference) const {
  auto ref = verify::Reference::Parse(reference);
  if (!ref) return {};
  auto it = references_.find(ref->String());
  return it == references_.end() ? std::vector<verify::Digest>() : it->second;
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
