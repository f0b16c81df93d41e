#include "verify/json_strict.h"

#include <set>
#include <string>
#include <vector>

namespace digestd::verify {
namespace {

Error Bad(std::string_view what, std::string why) {
  return MakeError(Module::kVerify, Errc::kInvalidArgument, std::string(what) + ": " + why);
}

// Nesting depth outside strings; -1 when unbalanced in a way the parser will report anyway.
int MaxDepth(std::string_view text) {
  int depth = 0, max = 0;
  bool in_string = false, escape = false;
  for (char c : text) {
    if (in_string) {
      if (escape) {
        escape = false;
      } else if (c == '\\') {
        escape = true;
      } else if (c == '"') {
        in_string = false;
      }
      continue;
    }
    if (c == '"') {
      in_string = true;
    } else if (c == '{' || c == '[') {
      max = std::max(max, ++depth);
    } else if (c == '}' || c == ']') {
      --depth;
    }
  }
  return max;
}

}  // namespace

Result<nlohmann::json> ParseJsonStrict(std::string_view text, std::string_view what,
                                       JsonLimits limits) {
  if (text.size() > limits.max_bytes) {
    return MakeError(Module::kVerify, Errc::kTooLarge,
                     std::string(what) + ": " + std::to_string(text.size()) +
                         " bytes is over the limit of " + std::to_string(limits.max_bytes));
  }
  if (MaxDepth(text) > limits.max_depth) {
    return Bad(what, "JSON nested deeper than " + std::to_string(limits.max_depth));
  }
  std::vector<std::set<std::string>> keys;
  std::string duplicate;
  auto cb = [&](int, nlohmann::json::parse_event_t event, nlohmann::json& parsed) {
    using E = nlohmann::json::parse_event_t;
    switch (event) {
      case E::object_start:
        keys.emplace_back();
        break;
      case E::object_end:
        if (!keys.empty()) keys.pop_back();
        break;
      case E::key:
        if (!keys.empty() && parsed.is_string() &&
            !keys.back().insert(parsed.get<std::string>()).second && duplicate.empty()) {
          duplicate = parsed.get<std::string>();
        }
        break;
      default:
        break;
    }
    return true;
  };
  nlohmann::json j = nlohmann::json::parse(text, cb, /*allow_exceptions=*/false);
  if (j.is_discarded()) return Bad(what, "malformed JSON");
  if (!duplicate.empty()) return Bad(what, "duplicate key " + Quote(duplicate));
  return j;
}

Result<std::string> JsonString(const nlohmann::json& obj, std::string_view field,
                               std::string_view what, bool required) {
  auto it = obj.find(field);
  if (it == obj.end() || (it->is_null() && !required)) {
    if (required) return Bad(what, "missing field \"" + std::string(field) + "\"");
    return std::string();
  }
  if (!it->is_string()) {
    return Bad(what, "field \"" + std::string(field) + "\" must be a string");
  }
  return it->get<std::string>();
}

Result<void> JsonOnlyKeys(const nlohmann::json& obj,
                          std::initializer_list<std::string_view> allowed, std::string_view what) {
  for (auto it = obj.begin(); it != obj.end(); ++it) {
    bool ok = false;
    for (auto a : allowed) ok = ok || it.key() == a;
    if (!ok) return Bad(what, "unknown field " + Quote(it.key()));
  }
  return {};
}

}  // namespace digestd::verify
