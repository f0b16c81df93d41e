#include "daemon/revalidate.h"

#include <ctime>

#include "common/log.h"


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

Visibility::Visibility(const store::Store& store, verify::PolicySet& policies,
                       Auditor& auditor, Clock now)
    : store_(store), policies_(policies), auditor_(auditor), now_(std::move(now)) {
  if (!now_) now_ = [s = &store] { return s->Now(); };  // the store's clock (common/clock.h)
}

Result<void> Visibility::ReloadPolicy() {
  auto r = policies_.Reload();
  if (!r) {
    Logger(Module::kDaemon)->error("reload refused, keeping the previous policy: {}", r.error().ToString());
    return r;
  }
  Revalidate();
  return r;
}

void Visibility::Revalidate() {
  auto log = Logger(Module::kDaemon);
  auto r = daemon::Revalidate(store_, policies_.Current(), now_());
  if (!r) {
    log->error("re-evaluating cached images failed (visibility unchanged): {}", r.error().ToString());
    return;
  }
  std::unordered_set<verify::Digest> withdrawn;
  for (const auto& w : r->withdrawn) {
    withdrawn.insert(w.manifest);
    if (withdrawn_.count(w.manifest)) continue;
    log->warn("withdrawn from the mount: {} ({}): {}", w.reference, w.manifest.ToString(), w.reason);
    auditor_.Record({.type = "image.withdrawn",
                     .reference = w.reference,
                     .digest = w.manifest.ToString(),
                     .reason = w.reason});
  }
  withdrawn_ = std::move(withdrawn);
  log->info("re-evaluated cached images: {} withdrawn, {} digests hidden", r->withdrawn.size(),
            r->hidden.size());
  hidden_.Replace(r->hidden);
  // Newly hidden digests: the kernel may hold their attributes. (Newly visible ones need
  // nothing: the mount never lets the kernel cache a withheld name.)
  if (invalidate_) {
    for (const auto& d : r->hidden) {
      if (!hidden_before_.count(d)) invalidate_(d);
    }
  }
  hidden_before_ = std::move(r->hidden);
}

void Visibility::Attach(Invalidate invalidate, bool adopted) {
  invalidate_ = std::move(invalidate);
  for (const auto& d : hidden_before_) invalidate_(d);
  if (adopted) {
    // The kernel kept the predecessor's caches: names of digests denied meanwhile go now.
    if (auto denied = store_.ListDenied()) {
      for (const auto& d : *denied) invalidate_(d.digest);
    }
  }
}

void Visibility::RegisterMetrics(metrics::Registry& registry) const {
  registry.Add({"digestd_hidden_digests",
                "Digests withdrawn from the mount by the last policy/trust re-evaluation.",
                metrics::Kind::kGauge},
               [this] { return static_cast<std::uint64_t>(hidden_.size()); });
}

}  // namespace digestd::daemon
