#pragma once

// OCI image manifests and indexes, Docker schema2 manifests and manifest lists, and image configs.
// Parsing is strict and bounded: the size cap is checked before parsing, descriptor digests are
// parsed strictly, sizes are non-negative and bounded, duplicate JSON keys are refused, and the
// document's mediaType (when present) must agree with the media type it was served as.

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/error.h"
#include "verify/digest.h"

namespace digestd::verify {

namespace media {
inline constexpr std::string_view kOciManifest = "application/vnd.oci.image.manifest.v1+json";
inline constexpr std::string_view kOciIndex = "application/vnd.oci.image.index.v1+json";
inline constexpr std::string_view kOciConfig = "application/vnd.oci.image.config.v1+json";
inline constexpr std::string_view kOciLayerTar = "application/vnd.oci.image.layer.v1.tar";
inline constexpr std::string_view kOciLayerGzip = "application/vnd.oci.image.layer.v1.tar+gzip";
inline constexpr std::string_view kOciLayerZstd = "application/vnd.oci.image.layer.v1.tar+zstd";
inline constexpr std::string_view kOciEmpty = "application/vnd.oci.empty.v1+json";
inline constexpr std::string_view kDockerManifest =
    "application/vnd.docker.distribution.manifest.v2+json";
inline constexpr std::string_view kDockerList =
    "application/vnd.docker.distribution.manifest.list.v2+json";
inline constexpr std::string_view kDockerConfig = "application/vnd.docker.container.image.v1+json";
inline constexpr std::string_view kDockerLayerGzip =
    "application/vnd.docker.image.rootfs.diff.tar.gzip";
inline constexpr std::string_view kCosignSimpleSigning =
    "application/vnd.dev.cosign.simplesigning.v1+json";
inline constexpr std::string_view kSigstoreBundleV03 = "application/vnd.dev.sigstore.bundle.v0.3+json";
inline constexpr std::string_view kDsseEnvelope = "application/vnd.dsse.envelope.v1+json";
// The Accept header a registry client sends for manifests.
inline constexpr std::string_view kManifestAccept =
    "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, "
    "application/vnd.docker.distribution.manifest.v2+json, "
    "application/vnd.docker.distribution.manifest.list.v2+json";
}  // namespace media

inline constexpr std::size_t kDefaultManifestCap = 4u << 20;
// Largest descriptor size accepted by default (1 TiB): anything bigger is a hostile document.
inline constexpr std::int64_t kDefaultMaxBlobSize = std::int64_t{1} << 40;

struct ManifestLimits {
  std::size_t max_bytes = kDefaultManifestCap;
  std::int64_t max_blob_size = kDefaultMaxBlobSize;
  std::size_t max_layers = 1000;
  std::size_t max_index_entries = 1000;
};

struct Platform {
  std::string os;            // "linux"
  std::string architecture;  // "amd64", "arm64", ...
  std::string variant;       // "v8", "v7", empty
  std::string os_version;
  friend bool operator==(const Platform&, const Platform&) = default;
  std::string String() const;  // "linux/arm64/v8"
};

struct Descriptor {
  std::string media_type;
  Digest digest;
  std::int64_t size = 0;
  std::map<std::string, std::string> annotations;
  std::optional<Platform> platform;
  std::string artifact_type;
};

enum class ManifestKind { kOciManifest, kOciIndex, kDockerManifest, kDockerList };

struct ImageManifest {
  ManifestKind kind = ManifestKind::kOciManifest;
  Descriptor config;
  std::string media_type;
  std::vector<Descriptor> layers;
  std::optional<Descriptor> subject;
  std::string artifact_type;
  std::map<std::string, std::string> annotations;
};

struct ImageIndex {
  ManifestKind kind = ManifestKind::kOciIndex;
  std::string media_type;
  std::vector<Descriptor> manifests;
  std::optional<Descriptor> subject;
  std::map<std::string, std::string> annotations;
};

struct ImageConfig {
  Platform platform;
  std::vector<Digest> diff_ids;  // rootfs.diff_ids, in layer order
};

// Returns the kind for a manifest media type; kUnsupported for anything else (including Docker
// schema1, which has no content digest we can trust).
Result<ManifestKind> ManifestKindOf(std::string_view media_type);
bool IsIndexKind(ManifestKind kind);

// Media type of a manifest document: `served_as` (Content-Type, may be empty) and the document's
// own mediaType must agree when both exist; one of them must exist.
Result<ManifestKind> DetectManifestKind(std::string_view bytes, std::string_view served_as,
                                        const ManifestLimits& limits = {});

Result<ImageManifest> ParseImageManifest(std::string_view bytes, std::string_view served_as,
                                         const ManifestLimits& limits = {});
Result<ImageIndex> ParseImageIndex(std::string_view bytes, std::string_view served_as,
                                   const ManifestLimits& limits = {});
Result<ImageConfig> ParseImageConfig(std::string_view bytes, const ManifestLimits& limits = {});

// Picks the manifest for `want` from an index: os and architecture must match; a variant is
// matched when given (with arm64 defaulting to v8 and arm to v7 on both sides); entries without a
// platform are skipped. kNotFound lists the platforms the index offers.
Result<Descriptor> SelectPlatform(const ImageIndex& index, const Platform& want);

// The platform of this host ("linux/amd64", ...).
Platform HostPlatform();

}  // namespace digestd::verify
