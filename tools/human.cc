#include "tools/human.h"

#include <sstream>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "verify/trust.h"

namespace digestd::tools {

std::string IsoUtc(std::int64_t unix_seconds) {
  return unix_seconds <= 0 ? "-" : verify::FormatRfc3339(unix_seconds);
}

std::string ShortDigest(std::string_view digest) {
  const auto colon = digest.find(':');
  if (colon == std::string_view::npos || digest.size() < colon + 1 + 12) return std::string(digest);
  return std::string(digest.substr(0, colon + 1 + 12));
}

std::string Printable(std::string s) {
  for (char& c : s) {
    const auto u = static_cast<unsigned char>(c);
    if (u < 0x20 || u == 0x7f) c = '?';
  }
  return s;
}

namespace {

std::string Str(const nlohmann::json& j, const char* key) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return "";
  return Printable(it->is_string() ? it->get<std::string>()
                                   : it->dump(-1, ' ', false, nlohmann::json::error_handler_t::replace));
}

std::int64_t Int(const nlohmann::json& j, const char* key) {
  auto it = j.find(key);
  return it != j.end() && it->is_number_integer() ? it->get<std::int64_t>() : 0;
}

}  // namespace

std::string AuditTable(std::string_view ndjson) {
  std::string out = fmt::format("{:<6} {:<20} {:<28} {:<8} {:<19} {}\n", "SEQ", "TIME (UTC)", "TYPE",
                                "ACTOR", "DIGEST", "WHAT");
  std::istringstream in{std::string(ndjson)};
  for (std::string line; std::getline(in, line);) {
    if (line.empty()) continue;
    const auto e = nlohmann::json::parse(line, nullptr, false);
    if (!e.is_object()) {
      out += Printable(line) + "\n";
      continue;
    }
    // What happened to what: the reference (when the event names one), then the reason.
    const std::string ref = Str(e, "reference"), reason = Str(e, "reason");
    std::string what = ref.empty() ? reason : reason.empty() ? ref : ref + ": " + reason;
    if (what.empty() && e.contains("lease")) what = "lease " + Str(e, "lease");
    const std::string digest = Str(e, "digest");
    out += fmt::format("{:<6} {:<20} {:<28} {:<8} {:<19} {}\n", Int(e, "seq"), IsoUtc(Int(e, "time")),
                       Str(e, "type"), Str(e, "actor"), digest.empty() ? "-" : ShortDigest(digest),
                       what.empty() ? "-" : what);
  }
  return out;
}

std::string DecisionLine(const nlohmann::json& d) {
  std::string rule = Str(d, "requirement");
  if (rule.empty()) rule = Str(d, "rule");
  const bool allowed = d.value("allowed", false);
  std::string line = std::string(allowed ? "allowed" : "denied") + " by rule " +
                     (rule.empty() ? "-" : rule) + " (scope " +
                     (Str(d, "scope").empty() ? "-" : Str(d, "scope")) + ")";
  if (allowed) {
    if (!Str(d, "signer").empty()) line += ", signed by " + Str(d, "signer");
  } else if (!Str(d, "reason").empty()) {
    line += ": " + Str(d, "reason");
  }
  return line;
}

std::string RefusalText(std::string_view reference, const nlohmann::json& decision) {
  const std::string ref = Printable(std::string(reference));
  return "digestctl: pull of " + ref + " refused: " + DecisionLine(decision) +
         "\nnext: digestctl explain " + ref + " (what the running policy requires of it)\n";
}

}  // namespace digestd::tools
