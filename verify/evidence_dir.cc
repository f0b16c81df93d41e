#include "verify/evidence_dir.h"

#include <algorithm>
#include <fstream>

#include "verify/hasher.h"
#include "verify/oci.h"

namespace digestd::verify {

namespace fs = std::filesystem;

Result<LoadedEvidence> LoadEvidenceDir(const fs::path& dir) {
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) {
    return MakeError(Module::kVerify, Errc::kNotFound,
                     "signature directory " + Quote(dir.string()) + " does not exist");
  }
  LoadedEvidence out;
  std::vector<fs::path> files;
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    if (e.is_regular_file()) files.push_back(e.path());
  }
  std::sort(files.begin(), files.end());
  for (const auto& path : files) {
    const std::string name = path.filename().string();
    if (name.ends_with(".manifest.json")) {
      DIGESTD_ASSIGN_OR_RETURN(std::string text, ReadFileCapped(path, kDefaultManifestCap));
      DIGESTD_ASSIGN_OR_RETURN(ImageManifest m, ParseImageManifest(text, ""));
      for (const auto& layer : m.layers) {
        const fs::path blob = dir / "blobs" / std::string(ToString(layer.digest.algorithm())) /
                              std::string(layer.digest.hex());
        auto bytes = ReadFileCapped(blob, kMaxBundle);
        if (!bytes) {
          out.notes.push_back("layer " + layer.digest.ToString() + ": " + bytes.error().context());
          continue;
        }
        if (static_cast<std::int64_t>(bytes->size()) != layer.size ||
            Hasher::Of(layer.digest.algorithm(), *bytes) != layer.digest) {
          out.notes.push_back("layer " + layer.digest.ToString() +
                              ": bytes do not match the descriptor; ignored");
          continue;
        }
        if (layer.media_type == media::kSigstoreBundleV03) {
          out.evidence.bundles.push_back(std::move(*bytes));
        } else if (layer.media_type == media::kDsseEnvelope) {
          out.evidence.attestations.push_back(std::move(*bytes));
        } else {
          out.evidence.signatures.push_back(SimpleSignature{
              .media_type = layer.media_type, .payload = std::move(*bytes),
              .annotations = layer.annotations});
        }
      }
    } else if (name.starts_with("signature-")) {
      DIGESTD_ASSIGN_OR_RETURN(std::string text, ReadFileCapped(path, kMaxBundle));
      auto sig = ParseContainersSigstoreSignature(text);
      if (!sig) {
        out.notes.push_back(name + ": " + sig.error().context());
        continue;
      }
      out.evidence.signatures.push_back(std::move(*sig));
    } else if (name.ends_with(".sigstore.json") || name.ends_with(".bundle.json")) {
      DIGESTD_ASSIGN_OR_RETURN(std::string text, ReadFileCapped(path, kMaxBundle));
      out.evidence.bundles.push_back(std::move(text));
    } else if (name.ends_with(".dsse.json") || name.ends_with(".att.json")) {
      DIGESTD_ASSIGN_OR_RETURN(std::string text, ReadFileCapped(path, kMaxBundle));
      out.evidence.attestations.push_back(std::move(text));
    }
  }
  return out;
}

}  // namespace digestd::verify
