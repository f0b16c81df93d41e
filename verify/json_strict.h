#pragma once

// Strict JSON parsing for hostile documents (internal to verify/). Refuses, with a message naming
// the problem: input over `max_bytes`, nesting deeper than `max_depth`, malformed JSON, and
// duplicate object keys (two parsers that pick different duplicates are a classic
// signature-bypass). Never throws.

#include <cstddef>
#include <string_view>

#include <nlohmann/json.hpp>

#include "common/error.h"

namespace digestd::verify {

struct JsonLimits {
  std::size_t max_bytes = 4u << 20;
  int max_depth = 64;
};

Result<nlohmann::json> ParseJsonStrict(std::string_view text, std::string_view what,
                                       JsonLimits limits = {});

// Typed accessors that never throw: kInvalidArgument naming `what` and the field.
Result<std::string> JsonString(const nlohmann::json& obj, std::string_view field,
                               std::string_view what, bool required = true);
// Refuses members of `obj` that are not in `allowed`.
Result<void> JsonOnlyKeys(const nlohmann::json& obj, std::initializer_list<std::string_view> allowed,
                          std::string_view what);

}  // namespace digestd::verify
