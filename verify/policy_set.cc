#include "verify/policy_set.h"

namespace digestd::verify {

Result<void> PolicySet::Reload() {
  DIGESTD_ASSIGN_OR_RETURN(Policy policy, Policy::LoadFile(policy_path_));
  std::shared_ptr<const TrustRoot> trust;
  if (!trust_path_.empty()) {
    DIGESTD_ASSIGN_OR_RETURN(TrustRoot t, TrustRoot::LoadFile(trust_path_));
    trust = std::make_shared<const TrustRoot>(std::move(t));
  }
  std::lock_guard lock(mu_);
  current_ = Snapshot{std::make_shared<const Policy>(std::move(policy)), std::move(trust)};
  return {};
}

PolicySet::Snapshot PolicySet::Current() const {
  std::lock_guard lock(mu_);
  return current_;
}

}  // namespace digestd::verify
