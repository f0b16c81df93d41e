#include "daemon/revalidate.h"

#include "verify/oci.h"

namespace digestd::daemon {
namespace {

// The layers of an image manifest in the store (empty if it cannot be read).
std::vector<verify::Digest> LayersOf(const store::Store& store, const verify::Digest& manifest) {
  auto info = store.Stat(manifest);
  if (!info) return {};
  auto bytes = store.ReadBlob(manifest, verify::kDefaultManifestCap);
  if (!bytes) return {};
  auto m = verify::ParseImageManifest(*bytes, info->media_type);
  if (!m) return {};
  std::vector<verify::Digest> out;
  for (const auto& l : m->layers) out.push_back(l.digest);
  return out;
}

}  // namespace

Result<RevalidateResult> Revalidate(const store::Store& store,
                                    const verify::PolicySet::Snapshot& policy, std::int64_t now) {
  DIGESTD_ASSIGN_OR_RETURN(auto records, store.ListImageRecords());
  RevalidateResult out;
  std::unordered_set<verify::Digest> kept_layers, withdrawn_layers;
  for (const auto& rec : records) {
    std::string why;
    auto ref = verify::Reference::Parse(rec.reference);
    if (!ref) {
      why = "recorded reference no longer parses";
    } else if (policy.policy) {
      const verify::Decision d = policy.policy->Explain(*ref);
      if (!d.allowed) why = d.reason;
    }
    // Keyless and PKI signers ("keyless <identity> (<issuer>)", "pki <subject>") are not keys of
    // the trust file: what can revoke them is digestd.denySigners.keyless.
    const bool keyless = rec.signer.starts_with("keyless ") || rec.signer.starts_with("pki ");
    if (why.empty() && keyless && policy.policy) {
      std::string identity, issuer = "pki";
      if (rec.signer.starts_with("keyless ")) {
        const std::size_t open = rec.signer.rfind(" (");
        if (open != std::string::npos && rec.signer.ends_with(")")) {
          identity = rec.signer.substr(8, open - 8);
          issuer = rec.signer.substr(open + 2, rec.signer.size() - open - 3);
        }
      } else {
        identity = rec.signer.substr(4);
      }
      for (const auto& d : policy.policy->org().deny_keyless_signers) {
        if (d.identity == identity && d.issuer == issuer) {
          why = "signer " + Quote(rec.signer) + " is denied by policy (digestd.denySigners)";
        }
      }
    } else if (why.empty() && !rec.signer.empty() && policy.trust) {
      const auto& trust = *policy.trust;
      const bool by_fingerprint = rec.signer.starts_with("sha256:");
      const verify::TrustedKey* key =
          by_fingerprint ? trust.FindByFingerprint(rec.signer) : trust.FindById(rec.signer);
      if (key != nullptr) {
        if (auto ok = trust.CheckUsable(*key, now, *ref); !ok) why = ok.error().context();
      } else if (const auto* r = trust.RevocationFor(rec.signer, rec.signer)) {
        why = "key " + Quote(rec.signer) + " is revoked" + (r->reason.empty() ? "" : ": " + r->reason);
      } else if (!by_fingerprint) {
        why = "key " + Quote(rec.signer) + " is no longer in the trust file";
      }
    }
    const auto layers = LayersOf(store, rec.image_manifest);
    if (why.empty()) {
      kept_layers.insert(layers.begin(), layers.end());
      continue;
    }
    out.withdrawn.push_back({rec.manifest, rec.reference, why});
    out.hidden.insert(rec.manifest);
    out.hidden.insert(rec.image_manifest);
    withdrawn_layers.insert(layers.begin(), layers.end());
  }
  for (const auto& l : withdrawn_layers) {
    if (!kept_layers.count(l)) out.hidden.insert(l);
  }
  return out;
}

}  // namespace digestd::daemon
