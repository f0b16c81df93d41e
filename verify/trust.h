#pragma once

// Trust roots: the keys an organisation trusts, each with a validity window and optional scopes,
// and revocations. Loaded strictly from a JSON file (format in docs/policy.md):
//
//   {"keys": [{"id": "team-a-2026", "pem": "-----BEGIN PUBLIC KEY-----...",   // or "pemPath"
//              "start": "2026-01-01T00:00:00Z", "end": "2027-01-01T00:00:00Z",  // end optional
//              "scopes": ["registry.example.com/team-a"]}],                    // optional
//    "revocations": [{"id": "team-a-2025", "reason": "laptop stolen"}]}       // id or fingerprint
//
// Rotation adds a key with a start; emergency revocation sets `end` to the compromise time, lists
// the key under revocations, or removes it. Immutable after loading; thread-safe.

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/error.h"
#include "verify/public_key.h"
#include "verify/reference.h"

namespace digestd::verify {

struct TrustedKey {
  std::string id;
  PublicKeyPtr key;
  std::int64_t start = 0;             // unix seconds, inclusive
  std::optional<std::int64_t> end;    // unix seconds, inclusive; none = open-ended
  std::vector<std::string> scopes;    // empty = may sign for anything
};

struct Revocation {
  std::string id;  // key id or "sha256:<fingerprint>"
  std::string reason;
};

class TrustRoot {
 public:
  // `source` names the file in error messages; relative pemPath values resolve against base_dir.
  static Result<TrustRoot> Parse(std::string_view json_text, std::string_view source,
                                 const std::filesystem::path& base_dir);
  static Result<TrustRoot> LoadFile(const std::filesystem::path& path);

  const std::vector<TrustedKey>& keys() const { return keys_; }
  const TrustedKey* FindById(std::string_view id) const;
  const TrustedKey* FindByFingerprint(std::string_view fingerprint) const;
  // The revocation of a key (by id or fingerprint), if any.
  const Revocation* RevocationFor(std::string_view id, std::string_view fingerprint) const;

  // Whether `key` may sign for `ref` at `now`. The error names the key id: revoked, not yet
  // valid, expired, or out of scope.
  Result<void> CheckUsable(const TrustedKey& key, std::int64_t now, const Reference& ref) const;

 private:
  std::vector<TrustedKey> keys_;
  std::vector<Revocation> revocations_;
};

// RFC 3339 UTC or with offset: "2026-01-01T00:00:00Z", "2026-01-01T02:00:00+02:00".
Result<std::int64_t> ParseRfc3339(std::string_view text);
std::string FormatRfc3339(std::int64_t unix_seconds);

}  // namespace digestd::verify
