#pragma once

// A content digest in its one canonical form: "sha256:" + 64 lowercase hex digits, or
// "sha512:" + 128 lowercase hex digits. Parsing is strict: anything else (uppercase hex, other
// algorithms, whitespace, separators, NUL bytes) is refused. Because a Digest can only hold the
// canonical form, code may build file paths from hex() without further checks.

#include <compare>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>

#include "common/error.h"

namespace digestd::verify {

enum class DigestAlgorithm : std::uint8_t { kSha256, kSha512 };

std::string_view ToString(DigestAlgorithm alg);  // "sha256", "sha512"
// Number of hex digits in a digest of `alg`.
std::size_t HexLength(DigestAlgorithm alg);

// Lowercase hex of raw bytes, and back (nullopt unless even-length lowercase hex).
std::string HexEncode(std::string_view raw);
std::optional<std::string> HexDecode(std::string_view hex);

// The raw bytes of a digest.
std::string DigestBytes(const class Digest& d);
Result<DigestAlgorithm> ParseDigestAlgorithm(std::string_view name);

class Digest {
 public:
  // Parses "alg:hex". The error quotes the input safely.
  static Result<Digest> Parse(std::string_view text);
  // Builds from an algorithm and a hex string (validated as in Parse).
  static Result<Digest> FromParts(DigestAlgorithm alg, std::string_view hex);
  // Builds from raw digest bytes (must be the algorithm's length).
  static Digest FromBytes(DigestAlgorithm alg, const unsigned char* bytes, std::size_t len);

  DigestAlgorithm algorithm() const { return alg_; }
  std::string_view hex() const { return hex_; }
  // "sha256:<hex>"
  std::string ToString() const;
  // "sha256:abcdef012345" — the first 12 hex digits, for log lines.
  std::string Short() const;

  friend bool operator==(const Digest&, const Digest&) = default;
  friend auto operator<=>(const Digest&, const Digest&) = default;

 private:
  Digest(DigestAlgorithm alg, std::string hex) : alg_(alg), hex_(std::move(hex)) {}
  DigestAlgorithm alg_;
  std::string hex_;
};

}  // namespace digestd::verify

template <>
struct std::hash<digestd::verify::Digest> {
  std::size_t operator()(const digestd::verify::Digest& d) const noexcept {
    return std::hash<std::string_view>{}(d.hex());
  }
};
