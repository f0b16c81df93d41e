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

#include "common/error.h"
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

}  // namespace digestd::daemon
