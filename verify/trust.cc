#include "verify/trust.h"

#include <ctime>

#include "common/file.h"
#include "verify/json_strict.h"
#include "verify/scope.h"

namespace digestd::verify {
namespace {

using nlohmann::json;

Error Bad(std::string_view source, std::string where, std::string why) {
  return MakeError(Module::kVerify, Errc::kInvalidArgument,
                   std::string(source) + ": " + where + ": " + why);
}

bool AllDigits(std::string_view s) {
  return !s.empty() && s.find_first_not_of("0123456789") == std::string_view::npos;
}

}  // namespace

Result<std::int64_t> ParseRfc3339(std::string_view t) {
  auto bad = [&] {
    return MakeError(Module::kVerify, Errc::kInvalidArgument,
                     "invalid time " + Quote(t) + " (want RFC 3339, e.g. 2026-01-01T00:00:00Z)");
  };
  // YYYY-MM-DDTHH:MM:SS[.frac](Z|+HH:MM|-HH:MM)
  if (t.size() < 20 || t[4] != '-' || t[7] != '-' || (t[10] != 'T' && t[10] != 't') ||
      t[13] != ':' || t[16] != ':') {
    return bad();
  }
  for (std::size_t i : {0u, 1u, 2u, 3u, 5u, 6u, 8u, 9u, 11u, 12u, 14u, 15u, 17u, 18u}) {
    if (t[i] < '0' || t[i] > '9') return bad();
  }
  auto num = [&](std::size_t pos, std::size_t len) {
    return std::stoi(std::string(t.substr(pos, len)));
  };
  std::tm tm{};
  tm.tm_year = num(0, 4) - 1900;
  tm.tm_mon = num(5, 2) - 1;
  tm.tm_mday = num(8, 2);
  tm.tm_hour = num(11, 2);
  tm.tm_min = num(14, 2);
  tm.tm_sec = num(17, 2);
  if (tm.tm_mon > 11 || tm.tm_mday < 1 || tm.tm_mday > 31 || tm.tm_hour > 23 || tm.tm_min > 59 ||
      tm.tm_sec > 60) {
    return bad();
  }
  std::size_t pos = 19;
  if (pos < t.size() && t[pos] == '.') {
    ++pos;
    const auto start = pos;
    while (pos < t.size() && t[pos] >= '0' && t[pos] <= '9') ++pos;
    if (pos == start) return bad();
  }
  std::int64_t offset = 0;
  const auto zone = t.substr(pos);
  if (zone == "Z" || zone == "z") {
    offset = 0;
  } else if (zone.size() == 6 && (zone[0] == '+' || zone[0] == '-') && zone[3] == ':' &&
             AllDigits(zone.substr(1, 2)) && AllDigits(zone.substr(4, 2))) {
    offset = (std::stoi(std::string(zone.substr(1, 2))) * 60 +
              std::stoi(std::string(zone.substr(4, 2)))) * 60;
    if (zone[0] == '-') offset = -offset;
  } else {
    return bad();
  }
  const std::time_t secs = timegm(&tm);
  if (secs == static_cast<std::time_t>(-1)) return bad();
  return static_cast<std::int64_t>(secs) - offset;
}

std::string FormatRfc3339(std::int64_t unix_seconds) {
  const std::time_t t = static_cast<std::time_t>(unix_seconds);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

Result<TrustRoot> TrustRoot::Parse(std::string_view text, std::string_view source,
                                   const std::filesystem::path& base_dir) {
  DIGESTD_ASSIGN_OR_RETURN(json j, ParseJsonStrict(text, source, {.max_bytes = 4u << 20}));
  if (!j.is_object()) return Bad(source, "top level", "not a JSON object");
  DIGESTD_RETURN_IF_ERROR(JsonOnlyKeys(j, {"keys", "revocations"}, std::string(source)));
  TrustRoot root;
  auto keys = j.find("keys");
  if (keys == j.end() || !keys->is_array()) return Bad(source, "keys", "missing or not an array");
  for (std::size_t i = 0; i < keys->size(); ++i) {
    const json& k = (*keys)[i];
    const std::string where = "keys[" + std::to_string(i) + "]";
    if (!k.is_object()) return Bad(source, where, "not an object");
    if (auto r = JsonOnlyKeys(k, {"id", "pem", "pemPath", "start", "end", "scopes"}, where); !r) {
      return MakeError(Module::kVerify, Errc::kInvalidArgument,
                       std::string(source) + ": " + r.error().context());
    }
    TrustedKey key;
    auto id = JsonString(k, "id", where);
    if (!id || id->empty() || id->size() > 128) return Bad(source, where + ".id", "missing or bad");
    key.id = *id;
    if (root.FindById(key.id)) return Bad(source, where + ".id", "duplicate id " + Quote(key.id));
    const bool has_pem = k.contains("pem"), has_path = k.contains("pemPath");
    if (has_pem == has_path) return Bad(source, where, "exactly one of pem and pemPath is required");
    std::string pem;
    if (has_pem) {
      auto p = JsonString(k, "pem", where);
      if (!p) return Bad(source, where + ".pem", p.error().context());
      pem = *p;
    } else {
      auto p = JsonString(k, "pemPath", where);
      if (!p) return Bad(source, where + ".pemPath", p.error().context());
      std::filesystem::path path(*p);
      if (path.is_relative()) path = base_dir / path;
      auto file = ReadFileCapped(path, 64u << 10);
      if (!file) {
        return Bad(source, where + ".pemPath",
                   "cannot read key file " + Quote(path.string()) + " (" + file.error().context() +
                       ")");
      }
      pem = std::move(*file);
    }
    auto pk = PublicKey::FromPem(pem);
    if (!pk) return Bad(source, where, "key " + Quote(key.id) + ": " + pk.error().context());
    key.key = std::move(*pk);
    auto start = JsonString(k, "start", where);
    if (!start) return Bad(source, where + ".start", "required (RFC 3339 time)");
    auto s = ParseRfc3339(*start);
    if (!s) return Bad(source, where + ".start", s.error().context());
    key.start = *s;
    if (k.contains("end") && !k["end"].is_null()) {
      auto end = JsonString(k, "end", where);
      if (!end) return Bad(source, where + ".end", end.error().context());
      auto e = ParseRfc3339(*end);
      if (!e) return Bad(source, where + ".end", e.error().context());
      if (*e < key.start) return Bad(source, where + ".end", "is before start");
      key.end = *e;
    }
    if (auto sc = k.find("scopes"); sc != k.end()) {
      if (!sc->is_array()) return Bad(source, where + ".scopes", "not an array");
      for (const auto& scope : *sc) {
        if (!scope.is_string()) return Bad(source, where + ".scopes", "entries must be strings");
        if (auto r = ValidateScope(scope.get<std::string>()); !r) {
          return Bad(source, where + ".scopes", r.error().context());
        }
        key.scopes.push_back(scope.get<std::string>());
      }
    }
    root.keys_.push_back(std::move(key));
  }
  if (auto rv = j.find("revocations"); rv != j.end()) {
    if (!rv->is_array()) return Bad(source, "revocations", "not an array");
    for (std::size_t i = 0; i < rv->size(); ++i) {
      const json& r = (*rv)[i];
      const std::string where = "revocations[" + std::to_string(i) + "]";
      if (!r.is_object()) return Bad(source, where, "not an object");
      if (auto ok = JsonOnlyKeys(r, {"id", "reason"}, where); !ok) {
        return MakeError(Module::kVerify, Errc::kInvalidArgument,
                         std::string(source) + ": " + ok.error().context());
      }
      auto id = JsonString(r, "id", where);
      if (!id || id->empty()) return Bad(source, where + ".id", "missing");
      auto reason = JsonString(r, "reason", where, false);
      if (!reason) return Bad(source, where + ".reason", reason.error().context());
      root.revocations_.push_back({*id, *reason});
    }
  }
  return root;
}

Result<TrustRoot> TrustRoot::LoadFile(const std::filesystem::path& path) {
  auto text = ReadFileCapped(path, 4u << 20);
  if (!text) return std::move(text).error().Wrap("trust file");
  return Parse(*text, path.string(), path.parent_path());
}

const TrustedKey* TrustRoot::FindById(std::string_view id) const {
  for (const auto& k : keys_) {
    if (k.id == id) return &k;
  }
  return nullptr;
}

const TrustedKey* TrustRoot::FindByFingerprint(std::string_view fingerprint) const {
  for (const auto& k : keys_) {
    if (k.key->fingerprint() == fingerprint) return &k;
  }
  return nullptr;
}

const Revocation* TrustRoot::RevocationFor(std::string_view id,
                                           std::string_view fingerprint) const {
  for (const auto& r : revocations_) {
    if (r.id == id || r.id == fingerprint) return &r;
  }
  return nullptr;
}

Result<void> TrustRoot::CheckUsable(const TrustedKey& key, std::int64_t now,
                                    const Reference& ref) const {
  auto deny = [&](std::string why) {
    return MakeError(Module::kVerify, Errc::kPermission, "key " + Quote(key.id) + " " + why);
  };
  if (const auto* r = RevocationFor(key.id, key.key->fingerprint())) {
    return deny("is revoked" + (r->reason.empty() ? std::string() : ": " + r->reason));
  }
  if (now < key.start) return deny("is not valid before " + FormatRfc3339(key.start));
  if (key.end && now > *key.end) return deny("expired at " + FormatRfc3339(*key.end));
  if (!key.scopes.empty()) {
    bool ok = false;
    for (const auto& s : key.scopes) ok = ok || ScopeMatches(s, ref);
    if (!ok) return deny("may not sign for " + ref.Name() + " (outside its scopes)");
  }
  return {};
}

}  // namespace digestd::verify
