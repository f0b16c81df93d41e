#pragma once

// Strict base64 (RFC 4648, standard alphabet, with padding): anything else is refused, so two
// parsers can never read one signature two ways.

#include <string>
#include <string_view>

#include "common/error.h"

namespace digestd::verify {

Result<std::string> Base64Decode(std::string_view text);
std::string Base64Encode(std::string_view bytes);

}  // namespace digestd::verify
