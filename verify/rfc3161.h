#pragma once

// RFC 3161 timestamps as sigstore bundles carry them (internal to verify/): a DER
// TimeStampResp whose token covers the signature bytes, signed by a timestamp authority of the
// trusted root. The TSA's chain is checked at the token's own time (a TSA certificate that has
// expired since still vouches for the past) and that time must lie in the authority's validFor.

#include <cstdint>
#include <string_view>
#include <vector>

#include "common/error.h"
#include "verify/sigstore_root.h"

namespace digestd::verify {

// Returns the token's genTime (unix seconds).
Result<std::int64_t> VerifyRfc3161Timestamp(std::string_view response_der,
                                            std::string_view signed_bytes,
                                            const std::vector<Authority>& tsas);

}  // namespace digestd::verify
