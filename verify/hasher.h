#pragma once

// Streaming hash over OpenSSL EVP (SHA-NI where the CPU has it; never a hand-written SHA).
// A Hasher is move-only and not thread-safe. Clone() copies the running state, which the registry
// client uses to resume a download after a dropped connection.

#include <cstddef>
#include <memory>
#include <span>
#include <string_view>

#include "common/error.h"
#include "verify/digest.h"

namespace digestd::verify {

class Hasher {
 public:
  static Result<Hasher> Create(DigestAlgorithm alg);
  ~Hasher();
  Hasher(Hasher&&) noexcept;
  Hasher& operator=(Hasher&&) noexcept;

  DigestAlgorithm algorithm() const { return alg_; }
  void Update(std::span<const std::byte> data);
  void Update(std::string_view data);
  // Finishes and returns the digest; the Hasher is reset and can be used again.
  Digest Finish();
  Result<Hasher> Clone() const;

  // One-shot convenience.
  static Digest Of(DigestAlgorithm alg, std::string_view data);

 private:
  struct Ctx;
  Hasher(DigestAlgorithm alg, std::unique_ptr<Ctx> ctx);
  DigestAlgorithm alg_;
  std::unique_ptr<Ctx> ctx_;
};

}  // namespace digestd::verify
