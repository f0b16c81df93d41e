#pragma once

// Puts an OCI image (gzip layers from tars, config with diff_ids, manifest) straight into a
// store and unpacks its layers, without a registry: for tests of what is served from the store.

#include <string>
#include <vector>

#include "store/store.h"
#include "testkit/tar_builder.h"
#include "verify/hasher.h"

namespace digestd::testing {

struct StoredImage {
  verify::Digest manifest;
  std::vector<verify::Digest> layers;  // bottom first
};

inline Result<StoredImage> PutImage(store::Store& store, const std::vector<std::string>& tars,
                                    const std::string& tenant = "") {
  using verify::DigestAlgorithm;
  using verify::Hasher;
  constexpr const char* kLayerType = "application/vnd.oci.image.layer.v1.tar+gzip";
  std::string diff_ids, layer_descs;
  std::vector<verify::Digest> layers;
  for (const auto& tar : tars) {
    const std::string blob = TarBuilder::Gzip(tar);
    const auto layer = Hasher::Of(DigestAlgorithm::kSha256, blob);
    const auto diff = Hasher::Of(DigestAlgorithm::kSha256, tar);
    DIGESTD_RETURN_IF_ERROR(store.PutBlob(layer, blob, {.media_type = kLayerType, .tenant = tenant}));
    DIGESTD_RETURN_IF_ERROR(store.UnpackLayer(layer, diff));
    if (!diff_ids.empty()) diff_ids += ",";
    diff_ids += "\"" + diff.ToString() + "\"";
    if (!layer_descs.empty()) layer_descs += ",";
    layer_descs += std::string("{\"mediaType\":\"") + kLayerType + "\",\"digest\":\"" +
                   layer.ToString() + "\",\"size\":" + std::to_string(blob.size()) + "}";
    layers.push_back(layer);
  }
  const std::string config =
      "{\"architecture\":\"amd64\",\"os\":\"linux\",\"rootfs\":{\"type\":\"layers\",\"diff_ids\":[" +
      diff_ids + "]}}";
  const auto config_digest = Hasher::Of(DigestAlgorithm::kSha256, config);
  DIGESTD_RETURN_IF_ERROR(store.PutBlob(
      config_digest, config,
      {.media_type = "application/vnd.oci.image.config.v1+json", .tenant = tenant}));
  const std::string manifest =
      "{\"schemaVersion\":2,\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\","
      "\"config\":{\"mediaType\":\"application/vnd.oci.image.config.v1+json\",\"digest\":\"" +
      config_digest.ToString() + "\",\"size\":" + std::to_string(config.size()) +
      "},\"layers\":[" + layer_descs + "]}";
  const auto manifest_digest = Hasher::Of(DigestAlgorithm::kSha256, manifest);
  std::vector<verify::Digest> children = {config_digest};
  children.insert(children.end(), layers.begin(), layers.end());
  DIGESTD_RETURN_IF_ERROR(
      store.PutBlob(manifest_digest, manifest,
                    {.media_type = "application/vnd.oci.image.manifest.v1+json",
                     .children = children,
                     .tenant = tenant}));
  return StoredImage{manifest_digest, layers};
}

}  // namespace digestd::testing
