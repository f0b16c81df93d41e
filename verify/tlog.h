#pragma once

// Rekor transparency-log evidence in sigstore bundles (internal to verify/): the signed entry
// timestamp (SET), RFC 6962 inclusion proofs and the signed-note checkpoint that commits to their
// root. Parsing is strict; every check names what failed.

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "common/error.h"
#include "verify/sigstore_root.h"

namespace digestd::verify {

struct InclusionProof {
  std::int64_t log_index = 0;
  std::int64_t tree_size = 0;
  std::string root_hash;             // 32 raw bytes
  std::vector<std::string> hashes;   // 32 raw bytes each
  std::optional<std::string> checkpoint;  // the signed note, verbatim
};

struct TlogEntry {
  std::int64_t log_index = 0;
  std::string log_id;  // raw bytes
  std::string kind;
  std::string version;
  std::optional<std::int64_t> integrated_time;  // absent (0) in Rekor v2 entries
  std::optional<std::string> set;               // inclusionPromise.signedEntryTimestamp, raw
  std::optional<InclusionProof> proof;
  std::string body_b64;  // canonicalizedBody as written
  std::string body;      // its decoded bytes
};

// One element of a bundle's verificationMaterial.tlogEntries.
Result<TlogEntry> ParseTlogEntry(const nlohmann::json& j);

// The SET: the log key's signature over the canonical JSON of body, integratedTime, logID (hex)
// and logIndex.
Result<void> VerifySignedEntryTimestamp(const TlogEntry& e, const LogKey& log);

// The entry's leaf hash reproduces the proof's root, and a checkpoint signature line whose key
// hint is the log's (other lines, such as witness cosignatures, are ignored) verifies with the
// log key over a note whose size and root are the proof's.
Result<void> VerifyInclusion(const TlogEntry& e, const LogKey& log);

// RFC 6962 hashing, exposed for tests.
std::string MerkleLeafHash(std::string_view leaf);
Result<std::string> RootFromInclusionProof(std::int64_t index, std::int64_t size,
                                           std::string_view leaf_hash,
                                           const std::vector<std::string>& proof);

}  // namespace digestd::verify
