#pragma once

// Encoding and strict decoding of index records (internal to store/). Every value read back from
// the index goes through a Decode* function; anything unexpected is Errc::kCorrupt.
// Record values are JSON objects carrying "v" (the record schema); keys are canonical strings.

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>

#include "common/error.h"
#include "store/types.h"

namespace digestd::store {

inline constexpr int kRecordVersion = 1;

std::string EncodeBlob(const BlobInfo& info);
// `key` is the index key (a digest string); it is parsed too.
Result<BlobInfo> DecodeBlob(std::string_view key, std::string_view value);

std::string EncodeRef(const RefRecord& ref);
Result<RefRecord> DecodeRef(std::string_view key, std::string_view value);

std::string EncodeLease(const Lease& lease);
Result<Lease> DecodeLease(std::string_view key, std::string_view value);

std::string EncodeImage(const ImageRecord& image);
Result<ImageRecord> DecodeImage(std::string_view key, std::string_view value);

std::string EncodeDeny(const DenyRecord& deny);
Result<DenyRecord> DecodeDeny(std::string_view key, std::string_view value);

// "<a> <b>" keys of the edges/backrefs column families.
std::string EdgeKey(const Digest& a, const Digest& b);
Result<std::pair<Digest, Digest>> DecodeEdgeKey(std::string_view key);

// Audit keys: 8-byte big-endian sequence numbers, so that byte order is numeric order.
std::string AuditKey(std::uint64_t seq);
Result<std::uint64_t> DecodeAuditKey(std::string_view key);

// Validation shared with the public API.
Result<void> ValidateName(std::string_view what, std::string_view name);  // [A-Za-z0-9._-]{1,128}
Result<void> ValidateReferenceText(std::string_view reference);  // printable ASCII, 1..512 bytes
Result<void> ValidateMediaType(std::string_view media_type);     // printable ASCII, 0..255 bytes

}  // namespace digestd::store
