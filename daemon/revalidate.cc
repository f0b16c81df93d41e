#include "daemon/revalidate.h"


namespace digestd::daemon {

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
    // Keyless and PKI signers are not keys of the trust file: what can revoke them is
    // digestd.denySigners.keyless.
    const std::optional<bool> keyless_denied =
        policy.policy ? policy.policy->DeniesKeylessSigner(rec.signer) : std::nullopt;
    if (why.empty() && keyless_denied) {
      if (*keyless_denied) {
        why = "signer " + Quote(rec.signer) + " is denied by policy (digestd.denySigners)";
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
    const auto layers =
        store.ImageLayers(rec.image_manifest, /*even_if_denied=*/true)
            .value_or(std::vector<verify::Digest>());
    if (store.IsDenied(rec.manifest) || store.IsDenied(rec.image_manifest)) {
      // A denied image is gone from the mount already (the deny list); what is withdrawn here
      // is what only it uses: its layers, which a runtime holding a lowerdir string could
      // otherwise still mount. They come back when it is undenied.
      out.hidden.insert(rec.manifest);
      out.hidden.insert(rec.image_manifest);
      withdrawn_layers.insert(layers.begin(), layers.end());
      continue;
    }
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
