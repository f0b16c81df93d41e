#pragma once

// The policy and trust root in force, swapped atomically on reload. A reload that fails (either
// file) keeps both previous ones and returns the error. Thread-safe: readers take a snapshot.

#include <filesystem>
#include <memory>
#include <mutex>

#include "common/error.h"
#include "verify/policy.h"
#include "verify/trust.h"

namespace digestd::verify {

class PolicySet {
 public:
  struct Snapshot {
    std::shared_ptr<const Policy> policy;
    std::shared_ptr<const TrustRoot> trust;  // may be null when no trust file is configured
  };

  PolicySet(std::filesystem::path policy_path, std::filesystem::path trust_path)
      : policy_path_(std::move(policy_path)), trust_path_(std::move(trust_path)) {}

  // Loads both files; on success swaps them in, on failure keeps what was there.
  Result<void> Reload();
  Snapshot Current() const;

 private:
  std::filesystem::path policy_path_;
  std::filesystem::path trust_path_;  // empty: none
  mutable std::mutex mu_;
  Snapshot current_;
};

}  // namespace digestd::verify
