#include "verify/oci.h"

#include "verify/json_strict.h"

namespace digestd::verify {
namespace {

using nlohmann::json;

Error Bad(std::string_view what, std::string why) {
  return MakeError(Module::kVerify, Errc::kInvalidArgument, std::string(what) + ": " + why);
}

bool IsPrintable(std::string_view s) {
  for (char c : s) {
    if (c < 0x20 || c > 0x7e) return false;
  }
  return true;
}

Result<std::string> BoundedString(const json& obj, std::string_view field, std::string_view what,
                                  bool required, std::size_t max = 255) {
  DIGESTD_ASSIGN_OR_RETURN(std::string s, JsonString(obj, field, what, required));
  if (s.size() > max || !IsPrintable(s)) {
    return Bad(what, "field \"" + std::string(field) + "\" too long or not printable");
  }
  return s;
}

Result<std::map<std::string, std::string>> ParseAnnotations(const json& obj,
                                                             std::string_view what) {
  std::map<std::string, std::string> out;
  auto it = obj.find("annotations");
  if (it == obj.end() || it->is_null()) return out;
  if (!it->is_object()) return Bad(what, "annotations must be an object");
  if (it->size() > 1024) return Bad(what, "too many annotations");
  for (auto a = it->begin(); a != it->end(); ++a) {
    if (!a->is_string()) return Bad(what, "annotation " + Quote(a.key()) + " is not a string");
    out.emplace(a.key(), a->get<std::string>());
  }
  return out;
}

Result<Platform> ParsePlatform(const json& p, std::string_view what) {
  if (!p.is_object()) return Bad(what, "platform must be an object");
  Platform out;
  DIGESTD_ASSIGN_OR_RETURN(out.os, BoundedString(p, "os", what, true, 64));
  DIGESTD_ASSIGN_OR_RETURN(out.architecture, BoundedString(p, "architecture", what, true, 64));
  DIGESTD_ASSIGN_OR_RETURN(out.variant, BoundedString(p, "variant", what, false, 64));
  DIGESTD_ASSIGN_OR_RETURN(out.os_version, BoundedString(p, "os.version", what, false, 128));
  return out;
}

Result<Descriptor> ParseDescriptor(const json& d, std::string_view what,
                                   const ManifestLimits& limits) {
  if (!d.is_object()) return Bad(what, "descriptor must be an object");
  DIGESTD_ASSIGN_OR_RETURN(std::string digest, JsonString(d, "digest", what));
  auto parsed = Digest::Parse(digest);
  if (!parsed) return Bad(what, parsed.error().context());
  Descriptor out{.digest = std::move(*parsed)};
  DIGESTD_ASSIGN_OR_RETURN(out.media_type, BoundedString(d, "mediaType", what, true));
  auto size = d.find("size");
  if (size == d.end() || !size->is_number_integer()) {
    return Bad(what, "descriptor size missing or not an integer");
  }
  out.size = size->get<std::int64_t>();
  if (out.size < 0) return Bad(what, "descriptor size is negative");
  if (out.size > limits.max_blob_size) {
    return Bad(what, "descriptor size " + std::to_string(out.size) + " over the limit of " +
                         std::to_string(limits.max_blob_size));
  }
  DIGESTD_ASSIGN_OR_RETURN(out.annotations, ParseAnnotations(d, what));
  DIGESTD_ASSIGN_OR_RETURN(out.artifact_type, BoundedString(d, "artifactType", what, false));
  if (auto p = d.find("platform"); p != d.end() && !p->is_null()) {
    DIGESTD_ASSIGN_OR_RETURN(out.platform, ParsePlatform(*p, what));
  }
  return out;
}

Result<json> ParseDocument(std::string_view bytes, std::string_view what,
                           const ManifestLimits& limits) {
  if (bytes.size() > limits.max_bytes) {
    return MakeError(Module::kVerify, Errc::kTooLarge,
                     std::string(what) + " is " + std::to_string(bytes.size()) +
                         " bytes, over the cap of " + std::to_string(limits.max_bytes));
  }
  DIGESTD_ASSIGN_OR_RETURN(json j, ParseJsonStrict(bytes, what, {.max_bytes = limits.max_bytes}));
  if (!j.is_object()) return Bad(what, "not a JSON object");
  return j;
}

Result<ManifestKind> KindOfDocument(const json& j, std::string_view served_as,
                                    std::string_view what) {
  DIGESTD_ASSIGN_OR_RETURN(std::string own, JsonString(j, "mediaType", what, false));
  if (own.empty() && served_as.empty()) {
    return Bad(what, "no mediaType in the document and none served");
  }
  if (!own.empty() && !served_as.empty() && own != served_as) {
    return Bad(what, "served as " + Quote(served_as) + " but the document says " + Quote(own));
  }
  return ManifestKindOf(own.empty() ? served_as : std::string_view(own));
}

Result<void> CheckSchemaVersion(const json& j, std::string_view what) {
  auto v = j.find("schemaVersion");
  if (v == j.end() || !v->is_number_integer() || v->get<std::int64_t>() != 2) {
    return Bad(what, "schemaVersion must be 2");
  }
  return {};
}

}  // namespace

std::string Platform::String() const {
  std::string s = os + "/" + architecture;
  if (!variant.empty()) s += "/" + variant;
  return s;
}

Result<ManifestKind> ManifestKindOf(std::string_view media_type) {
  if (media_type == media::kOciManifest) return ManifestKind::kOciManifest;
  if (media_type == media::kOciIndex) return ManifestKind::kOciIndex;
  if (media_type == media::kDockerManifest) return ManifestKind::kDockerManifest;
  if (media_type == media::kDockerList) return ManifestKind::kDockerList;
  return MakeError(Module::kVerify, Errc::kUnsupported,
                   "unsupported manifest media type " + Quote(media_type));
}

bool IsIndexKind(ManifestKind kind) {
  return kind == ManifestKind::kOciIndex || kind == ManifestKind::kDockerList;
}

Result<ManifestKind> DetectManifestKind(std::string_view bytes, std::string_view served_as,
                                        const ManifestLimits& limits) {
  DIGESTD_ASSIGN_OR_RETURN(json j, ParseDocument(bytes, "manifest", limits));
  return KindOfDocument(j, served_as, "manifest");
}

Result<ImageManifest> ParseImageManifest(std::string_view bytes, std::string_view served_as,
                                         const ManifestLimits& limits) {
  constexpr std::string_view kWhat = "image manifest";
  DIGESTD_ASSIGN_OR_RETURN(json j, ParseDocument(bytes, kWhat, limits));
  DIGESTD_ASSIGN_OR_RETURN(ManifestKind kind, KindOfDocument(j, served_as, kWhat));
  if (IsIndexKind(kind)) return Bad(kWhat, "document is an index, not an image manifest");
  DIGESTD_RETURN_IF_ERROR(CheckSchemaVersion(j, kWhat));
  auto config_json = j.find("config");
  if (config_json == j.end()) return Bad(kWhat, "missing config");
  DIGESTD_ASSIGN_OR_RETURN(Descriptor config,
                           ParseDescriptor(*config_json, "manifest config", limits));
  ImageManifest m{.kind = kind, .config = std::move(config)};
  m.media_type = kind == ManifestKind::kOciManifest ? std::string(media::kOciManifest)
                                                    : std::string(media::kDockerManifest);
  auto layers = j.find("layers");
  if (layers == j.end() || !layers->is_array()) return Bad(kWhat, "layers missing or not an array");
  if (layers->size() > limits.max_layers) {
    return Bad(kWhat, std::to_string(layers->size()) + " layers is over the limit of " +
                          std::to_string(limits.max_layers));
  }
  for (const auto& l : *layers) {
    DIGESTD_ASSIGN_OR_RETURN(auto d, ParseDescriptor(l, "manifest layer", limits));
    m.layers.push_back(std::move(d));
  }
  if (auto s = j.find("subject"); s != j.end() && !s->is_null()) {
    DIGESTD_ASSIGN_OR_RETURN(m.subject, ParseDescriptor(*s, "manifest subject", limits));
  }
  DIGESTD_ASSIGN_OR_RETURN(m.artifact_type, BoundedString(j, "artifactType", kWhat, false));
  DIGESTD_ASSIGN_OR_RETURN(m.annotations, ParseAnnotations(j, kWhat));
  return m;
}

Result<ImageIndex> ParseImageIndex(std::string_view bytes, std::string_view served_as,
                                   const ManifestLimits& limits) {
  constexpr std::string_view kWhat = "image index";
  DIGESTD_ASSIGN_OR_RETURN(json j, ParseDocument(bytes, kWhat, limits));
  DIGESTD_ASSIGN_OR_RETURN(ManifestKind kind, KindOfDocument(j, served_as, kWhat));
  if (!IsIndexKind(kind)) return Bad(kWhat, "document is an image manifest, not an index");
  DIGESTD_RETURN_IF_ERROR(CheckSchemaVersion(j, kWhat));
  ImageIndex idx{.kind = kind};
  idx.media_type = kind == ManifestKind::kOciIndex ? std::string(media::kOciIndex)
                                                   : std::string(media::kDockerList);
  auto manifests = j.find("manifests");
  if (manifests == j.end() || !manifests->is_array()) {
    return Bad(kWhat, "manifests missing or not an array");
  }
  if (manifests->size() > limits.max_index_entries) {
    return Bad(kWhat, std::to_string(manifests->size()) + " entries is over the limit of " +
                          std::to_string(limits.max_index_entries));
  }
  for (const auto& m : *manifests) {
    DIGESTD_ASSIGN_OR_RETURN(auto d, ParseDescriptor(m, "index entry", limits));
    idx.manifests.push_back(std::move(d));
  }
  if (auto s = j.find("subject"); s != j.end() && !s->is_null()) {
    DIGESTD_ASSIGN_OR_RETURN(idx.subject, ParseDescriptor(*s, "index subject", limits));
  }
  DIGESTD_ASSIGN_OR_RETURN(idx.annotations, ParseAnnotations(j, kWhat));
  return idx;
}

Result<ImageConfig> ParseImageConfig(std::string_view bytes, const ManifestLimits& limits) {
  constexpr std::string_view kWhat = "image config";
  DIGESTD_ASSIGN_OR_RETURN(json j, ParseDocument(bytes, kWhat, limits));
  ImageConfig c;
  DIGESTD_ASSIGN_OR_RETURN(c.platform.os, BoundedString(j, "os", kWhat, true, 64));
  DIGESTD_ASSIGN_OR_RETURN(c.platform.architecture,
                           BoundedString(j, "architecture", kWhat, true, 64));
  DIGESTD_ASSIGN_OR_RETURN(c.platform.variant, BoundedString(j, "variant", kWhat, false, 64));
  auto rootfs = j.find("rootfs");
  if (rootfs == j.end() || !rootfs->is_object()) return Bad(kWhat, "rootfs missing");
  DIGESTD_ASSIGN_OR_RETURN(std::string type, JsonString(*rootfs, "type", kWhat));
  if (type != "layers") return Bad(kWhat, "rootfs.type must be \"layers\"");
  auto ids = rootfs->find("diff_ids");
  if (ids == rootfs->end() || !ids->is_array()) return Bad(kWhat, "rootfs.diff_ids missing");
  if (ids->size() > limits.max_layers) return Bad(kWhat, "too many diff_ids");
  for (const auto& id : *ids) {
    if (!id.is_string()) return Bad(kWhat, "diff_id is not a string");
    auto d = Digest::Parse(id.get<std::string>());
    if (!d) return Bad(kWhat, d.error().context());
    c.diff_ids.push_back(std::move(*d));
  }
  return c;
}

namespace {
std::string NormVariant(const Platform& p) {
  if (!p.variant.empty()) return p.variant;
  if (p.architecture == "arm64") return "v8";
  if (p.architecture == "arm") return "v7";
  return "";
}
}  // namespace

Result<Descriptor> SelectPlatform(const ImageIndex& index, const Platform& want) {
  std::string offered;
  for (const auto& d : index.manifests) {
    if (!d.platform) continue;
    const auto& p = *d.platform;
    if (!offered.empty()) offered += ", ";
    offered += p.String();
    if (p.os != want.os || p.architecture != want.architecture) continue;
    if (!want.variant.empty() || !p.variant.empty()) {
      if (NormVariant(p) != NormVariant(want)) continue;
    }
    return d;
  }
  return MakeError(Module::kVerify, Errc::kNotFound,
                   "no manifest for platform " + want.String() + " in the index (it offers: " +
                       (offered.empty() ? std::string("none") : offered) + ")");
}

Platform HostPlatform() {
#if defined(__x86_64__)
  return {.os = "linux", .architecture = "amd64"};
#elif defined(__aarch64__)
  return {.os = "linux", .architecture = "arm64", .variant = "v8"};
#elif defined(__arm__)
  return {.os = "linux", .architecture = "arm", .variant = "v7"};
#else
  return {.os = "linux", .architecture = "unknown"};
#endif
}

}  // namespace digestd::verify
