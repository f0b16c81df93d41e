#pragma once

// Images built in memory (gzip layers from tars, a config with diff_ids, a manifest) and stored
// the way the puller stores them: through one store::ImageTxn. For tests of the image
// transaction, the liveness rule and recovery without a registry.

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <string>
#include <vector>

#include "store/image_txn.h"
#include "store/store.h"
#include "testkit/tar_builder.h"
#include "verify/hasher.h"

namespace digestd::testing {

inline constexpr const char* kTxnLayerType = "application/vnd.oci.image.layer.v1.tar+gzip";
inline constexpr const char* kTxnConfigType = "application/vnd.oci.image.config.v1+json";
inline constexpr const char* kTxnManifestType = "application/vnd.oci.image.manifest.v1+json";

struct BuiltImage {
  std::string reference;
  std::vector<std::string> tars;
  std::vector<std::string> blobs;  // gzip layers
  std::vector<verify::Digest> layers;
  std::vector<verify::Digest> diff_ids;
  std::string config;
  verify::Digest config_digest = verify::Hasher::Of(verify::DigestAlgorithm::kSha256, "");
  std::string manifest_bytes;
  verify::Digest manifest = verify::Hasher::Of(verify::DigestAlgorithm::kSha256, "");
};

inline BuiltImage BuildImage(const std::string& reference, const std::vector<std::string>& tars) {
  using verify::DigestAlgorithm;
  using verify::Hasher;
  BuiltImage img{.reference = reference, .tars = tars};
  std::string diff_ids, layer_descs;
  for (const auto& tar : tars) {
    img.blobs.push_back(TarBuilder::Gzip(tar));
    img.layers.push_back(Hasher::Of(DigestAlgorithm::kSha256, img.blobs.back()));
    img.diff_ids.push_back(Hasher::Of(DigestAlgorithm::kSha256, tar));
    if (!diff_ids.empty()) diff_ids += ",";
    diff_ids += "\"" + img.diff_ids.back().ToString() + "\"";
    if (!layer_descs.empty()) layer_descs += ",";
    layer_descs += std::string("{\"mediaType\":\"") + kTxnLayerType + "\",\"digest\":\"" +
                   img.layers.back().ToString() + "\",\"size\":" +
                   std::to_string(img.blobs.back().size()) + "}";
  }
  img.config = "{\"architecture\":\"amd64\",\"os\":\"linux\",\"rootfs\":{\"type\":\"layers\","
               "\"diff_ids\":[" + diff_ids + "]},\"ref\":\"" + reference + "\"}";
  img.config_digest = Hasher::Of(DigestAlgorithm::kSha256, img.config);
  img.manifest_bytes =
      std::string("{\"schemaVersion\":2,\"mediaType\":\"") + kTxnManifestType +
      "\",\"config\":{\"mediaType\":\"" + kTxnConfigType + "\",\"digest\":\"" +
      img.config_digest.ToString() + "\",\"size\":" + std::to_string(img.config.size()) +
      "},\"layers\":[" + layer_descs + "]}";
  img.manifest = Hasher::Of(DigestAlgorithm::kSha256, img.manifest_bytes);
  return img;
}

// A tar of one directory holding `files` (path -> content).
inline std::string MakeTar(const std::vector<std::pair<std::string, std::string>>& files) {
  TarBuilder t;
  for (const auto& [path, content] : files) t.File(path, content);
  return t.Finish();
}

// Writes one blob into the transaction as a pull does. `corrupt_diff_id` makes a layer's
// expected diff_id wrong (the unpack refuses it at Stage()).
inline Result<void> TxnFetch(store::ImageTxn& txn, const verify::Digest& digest,
                             const std::string& bytes, const std::string& media_type,
                             std::optional<verify::Digest> diff_id) {
  store::IngestOptions opts{.media_type = media_type};
  if (diff_id) {
    opts.diff_id = diff_id;
    opts.unpack = store::UnpackLimits{};
  }
  DIGESTD_ASSIGN_OR_RETURN(auto writer, txn.Ingest(digest, bytes.size(), opts));
  if (!writer) return {};
  DIGESTD_RETURN_IF_ERROR(writer->Write(bytes));
  return txn.Stage(*writer);
}

// Stages the whole image into `txn` without committing it. `bad_layer` (an index) gets a wrong
// diff_id: the call fails there, as a pull of a hostile image does.
inline Result<void> StageImage(store::ImageTxn& txn, const BuiltImage& img, int bad_layer = -1) {
  DIGESTD_RETURN_IF_ERROR(TxnFetch(txn, img.config_digest, img.config, kTxnConfigType, {}));
  for (std::size_t i = 0; i < img.layers.size(); ++i) {
    verify::Digest want = img.diff_ids[i];
    if (static_cast<int>(i) == bad_layer) {
      want = verify::Hasher::Of(verify::DigestAlgorithm::kSha256, "not this layer");
    }
    DIGESTD_RETURN_IF_ERROR(TxnFetch(txn, img.layers[i], img.blobs[i], kTxnLayerType, want));
    DIGESTD_RETURN_IF_ERROR(txn.EnsureTree(img.layers[i], want, kTxnLayerType, {}));
  }
  std::vector<verify::Digest> children = {img.config_digest};
  children.insert(children.end(), img.layers.begin(), img.layers.end());
  return txn.AddBlob(img.manifest, img.manifest_bytes, kTxnManifestType, children);
}

inline store::ImageCommit CommitOf(const BuiltImage& img, const std::string& tenant) {
  return store::ImageCommit{.reference = img.reference,
                            .record = store::ImageRecord{.manifest = img.manifest,
                                                         .image_manifest = img.manifest,
                                                         .reference = img.reference,
                                                         .scope = "test",
                                                         .tenant = tenant,
                                                         .pulled_at = 1}};
}

// Stores the image through one transaction, as the puller does.
inline Result<void> PullImage(store::Store& store, const BuiltImage& img,
                              const std::string& tenant = "", int bad_layer = -1) {
  DIGESTD_ASSIGN_OR_RETURN(auto txn, store.BeginImage(tenant));
  DIGESTD_RETURN_IF_ERROR(StageImage(*txn, img, bad_layer));
  return txn->Commit(CommitOf(img, tenant));
}

// Whether the image reads back whole: reference, record, manifest with its media type and
// edges, config, each layer with a tree whose every file object holds the bytes the tar had.
inline Result<void> CheckWhole(const store::Store& store, const BuiltImage& img) {
  auto fail = [&](std::string why) {
    return MakeError(Module::kStore, Errc::kCorrupt, img.reference + ": " + why);
  };
  auto ref = store.GetRef(img.reference);
  if (!ref || ref->digest != img.manifest) return fail("reference missing or wrong");
  auto rec = store.GetImageRecord(img.manifest);
  if (!rec || !*rec) return fail("image record missing");
  auto info = store.Stat(img.manifest);
  if (!info) return fail("manifest missing: " + info.error().ToString());
  if (info->media_type != kTxnManifestType) return fail("manifest media type " + info->media_type);
  auto children = store.Children(img.manifest);
  if (!children || children->size() != img.layers.size() + 1) return fail("manifest edges");
  auto config = store.ReadBlob(img.config_digest, 1 << 20);
  if (!config || *config != img.config) return fail("config missing");
  for (std::size_t i = 0; i < img.layers.size(); ++i) {
    if (!store.Contains(img.layers[i])) return fail("layer " + std::to_string(i) + " missing");
    auto tree = store.LoadTree(img.layers[i]);
    if (!tree) return fail("tree of layer " + std::to_string(i) + ": " + tree.error().ToString());
    for (const auto& e : tree->entries) {
      if (!e.content) continue;
      auto fd = store.OpenFile(*e.content);
      if (!fd) return fail("file object of " + e.path + ": " + fd.error().ToString());
      struct stat st {};
      if (::fstat(fd->Get(), &st) != 0 || static_cast<std::uint64_t>(st.st_size) != e.size) {
        return fail("file object of " + e.path + " has the wrong size");
      }
      std::string bytes(e.size, '\0');
      if (e.size > 0 && ::pread(fd->Get(), bytes.data(), bytes.size(), 0) !=
                            static_cast<ssize_t>(bytes.size())) {
        return fail("cannot read " + e.path);
      }
      if (verify::Hasher::Of(verify::DigestAlgorithm::kSha256, bytes) != *e.content) {
        return fail("file object of " + e.path + " does not hash to its name");
      }
    }
  }
  return {};
}

}  // namespace digestd::testing
