#pragma once

// Re-evaluation of cached images when policy or trust change (SIGHUP, /v1/policy/reload).
// An image stays visible only while what admitted it still holds: the policy still allows its
// reference (Policy::Explain), and the key that signed it is still trusted (not revoked, inside
// its validity window and scopes, still present if it was named by id). Images that fail are
// withdrawn: hidden from the mount like denied digests (with the layers no still-admitted image
// uses), until a later reload admits them again. The signatures themselves are not re-verified:
// a withdrawn image signed by several keys comes back by pulling it again. Denied images are
// not "withdrawn" (the deny list hides them and says why), but the layers only they use are
// hidden here too, until they are undenied.

#include <cstdint>
#include <mutex>
#include <string>
#include <unordered_set>
#include <vector>

#include <functional>

#include "common/error.h"
#include "common/metrics.h"
#include "daemon/auditor.h"
#include "store/store.h"
#include "verify/policy_set.h"

namespace digestd::daemon {

struct Withdrawn {
  verify::Digest manifest;
  std::string reference;
  std::string reason;
};

struct RevalidateResult {
  std::vector<Withdrawn> withdrawn;
  std::unordered_set<verify::Digest> hidden;  // manifests and their layers no admitted image uses
};

Result<RevalidateResult> Revalidate(const store::Store& store,
                                    const verify::PolicySet::Snapshot& policy, std::int64_t now);

// Thread-safe set of hidden digests, consulted by the mount on every lookup and open.
class HiddenSet {
 public:
  void Replace(std::unordered_set<verify::Digest> digests) {
    std::lock_guard lock(mu_);
    set_ = std::move(digests);
  }
  bool Contains(const verify::Digest& d) const {
    std::lock_guard lock(mu_);
    return set_.count(d) != 0;
  }
  std::size_t size() const {
    std::lock_guard lock(mu_);
    return set_.size();
  }

 private:
  mutable std::mutex mu_;
  std::unordered_set<verify::Digest> set_;
};

// What the mount hides because its admission no longer holds (or because it is denied), kept
// current. The daemon evaluates once before the mount serves its first request (so nothing that
// should be withdrawn is ever visible), then after every policy or trust reload, deny-list change
// and pull. Each newly withdrawn image is logged and audited once (`image.withdrawn`); each newly
// hidden digest is dropped from the kernel's caches through the mount's invalidation.
//
// Thread safety: Revalidate and Attach run on one thread at a time (the io thread, and main
// before it runs); hidden() may be read from any thread (the mount's workers, the snapshotter).
class Visibility {
 public:
  using Invalidate = std::function<void(const verify::Digest&)>;

  // `now`: null reads the store's clock (trust windows are judged by it).
  Visibility(const store::Store& store, verify::PolicySet& policies, Auditor& auditor,
             Clock now = nullptr);

  // Reloads policy and trust (SIGHUP, /v1/policy/reload), then re-evaluates. An error keeps the
  // old ones (logged and returned); the caller audits the reload with its actor.
  Result<void> ReloadPolicy();
  // Re-evaluates every cached image against the current policy and trust. A failure leaves the
  // visibility as it was (logged).
  void Revalidate();
  // From now on newly hidden digests are invalidated through `invalidate` (the mount's). Every
  // digest hidden now is invalidated at once; with `adopted` (the kernel kept a predecessor's
  // caches) every denied digest too.
  void Attach(Invalidate invalidate, bool adopted);

  const HiddenSet& hidden() const { return hidden_; }
  bool Hidden(const verify::Digest& d) const { return hidden_.Contains(d); }
  // digestd_hidden_digests.
  void RegisterMetrics(metrics::Registry& registry) const;

 private:
  const store::Store& store_;
  verify::PolicySet& policies_;
  Auditor& auditor_;
  Clock now_;
  Invalidate invalidate_;
  HiddenSet hidden_;
  std::unordered_set<verify::Digest> withdrawn_;  // by the last evaluation (audited)
  std::unordered_set<verify::Digest> hidden_before_;
};

}  // namespace digestd::daemon
