#include "store/records.h"
#include "store/errors.h"

#include <nlohmann/json.hpp>

namespace digestd::store {
namespace {

using nlohmann::json;

Error Corrupt(std::string_view what, std::string_view key, std::string_view why) {
  return StoreError(Errc::kCorrupt,
                   "corrupt " + std::string(what) + " record " + Quote(key) + ": " +
                       std::string(why));
}

bool IsPrintable(std::string_view s) {
  for (char c : s) {
    if (c < 0x20 || c > 0x7e) return false;
  }
  return true;
}

// Parses a record value into an object with the expected version, or explains why not.
Result<json> ParseObject(std::string_view what, std::string_view key, std::string_view value) {
  if (value.size() > (1u << 20)) return Corrupt(what, key, "value over 1 MiB");
  json j = json::parse(value, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) return Corrupt(what, key, "not a JSON object");
  auto v = j.find("v");
  if (v == j.end() || !v->is_number_unsigned() || v->get<std::uint64_t>() != kRecordVersion) {
    return Corrupt(what, key, "missing or unknown record version");
  }
  return j;
}

Result<std::uint64_t> GetU64(const json& j, const char* field, std::string_view what,
                             std::string_view key) {
  auto it = j.find(field);
  if (it == j.end() || !it->is_number_unsigned()) {
    return Corrupt(what, key, std::string("field ") + field + " missing or not unsigned");
  }
  return it->get<std::uint64_t>();
}

Result<std::int64_t> GetTime(const json& j, const char* field, std::string_view what,
                             std::string_view key) {
  auto it = j.find(field);
  if (it == j.end() || !it->is_number_integer()) {
    return Corrupt(what, key, std::string("field ") + field + " missing or not an integer");
  }
  return it->get<std::int64_t>();
}

Result<std::string> GetString(const json& j, const char* field, std::string_view what,
                              std::string_view key, std::size_t max_len) {
  auto it = j.find(field);
  if (it == j.end() || !it->is_string()) {
    return Corrupt(what, key, std::string("field ") + field + " missing or not a string");
  }
  const auto& s = it->get_ref<const std::string&>();
  if (s.size() > max_len || !IsPrintable(s)) {
    return Corrupt(what, key, std::string("field ") + field + " too long or not printable");
  }
  return s;
}

Result<Digest> KeyDigest(std::string_view what, std::string_view key) {
  auto d = Digest::Parse(key);
  if (!d) return Corrupt(what, key, "key is not a digest");
  return d;
}

std::string Dump(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

}  // namespace

Result<void> ValidateName(std::string_view what, std::string_view name) {
  if (name.empty() || name.size() > 128) {
    return StoreError(Errc::kInvalidArgument,
                     std::string(what) + " " + Quote(name) + " must be 1..128 bytes");
  }
  for (char c : name) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '.' || c == '_' || c == '-';
    if (!ok) {
      return StoreError(Errc::kInvalidArgument,
                       std::string(what) + " " + Quote(name) + " may only hold [A-Za-z0-9._-]");
    }
  }
  return {};
}

Result<void> ValidateReferenceText(std::string_view reference) {
  if (reference.empty() || reference.size() > 512 || !IsPrintable(reference) ||
      reference.find(' ') != std::string_view::npos) {
    return StoreError(Errc::kInvalidArgument,
                     "reference " + Quote(reference) +
                         " must be 1..512 printable ASCII bytes without spaces");
  }
  return {};
}

Result<void> ValidateMediaType(std::string_view media_type) {
  if (media_type.size() > 255 || !IsPrintable(media_type)) {
    return StoreError(Errc::kInvalidArgument,
                     "media type " + Quote(media_type) + " must be at most 255 printable bytes");
  }
  return {};
}

std::string EncodeBlob(const BlobInfo& info) {
  json j = {{"v", kRecordVersion},         {"size", info.size},
            {"media_type", info.media_type}, {"created", info.created},
            {"last_used", info.last_used},   {"tenant", info.tenant}};
  return Dump(j);
}

Result<BlobInfo> DecodeBlob(std::string_view key, std::string_view value) {
  constexpr std::string_view kWhat = "blob";
  DIGESTD_ASSIGN_OR_RETURN(Digest digest, KeyDigest(kWhat, key));
  DIGESTD_ASSIGN_OR_RETURN(json j, ParseObject(kWhat, key, value));
  BlobInfo info{.digest = std::move(digest)};
  DIGESTD_ASSIGN_OR_RETURN(info.size, GetU64(j, "size", kWhat, key));
  DIGESTD_ASSIGN_OR_RETURN(info.media_type, GetString(j, "media_type", kWhat, key, 255));
  DIGESTD_ASSIGN_OR_RETURN(info.created, GetTime(j, "created", kWhat, key));
  DIGESTD_ASSIGN_OR_RETURN(info.last_used, GetTime(j, "last_used", kWhat, key));
  DIGESTD_ASSIGN_OR_RETURN(info.tenant, GetString(j, "tenant", kWhat, key, 128));
  if (!info.tenant.empty() && !ValidateName("tenant", info.tenant)) {
    return Corrupt(kWhat, key, "bad tenant name");
  }
  return info;
}

std::string EncodeRef(const RefRecord& ref) {
  json j = {{"v", kRecordVersion},
            {"digest", ref.digest.ToString()},
            {"resolved_at", ref.resolved_at}};
  return Dump(j);
}

Result<RefRecord> DecodeRef(std::string_view key, std::string_view value) {
  constexpr std::string_view kWhat = "ref";
  if (!ValidateReferenceText(key)) return Corrupt(kWhat, key, "bad reference key");
  DIGESTD_ASSIGN_OR_RETURN(json j, ParseObject(kWhat, key, value));
  DIGESTD_ASSIGN_OR_RETURN(std::string d, GetString(j, "digest", kWhat, key, 200));
  auto digest = Digest::Parse(d);
  if (!digest) return Corrupt(kWhat, key, "bad digest");
  RefRecord ref{.reference = std::string(key), .digest = std::move(*digest)};
  DIGESTD_ASSIGN_OR_RETURN(ref.resolved_at, GetTime(j, "resolved_at", kWhat, key));
  return ref;
}

std::string EncodeLease(const Lease& lease) {
  json digests = json::array();
  for (const auto& d : lease.digests) digests.push_back(d.ToString());
  json j = {{"v", kRecordVersion},
            {"tenant", lease.tenant},
            {"digests", std::move(digests)},
            {"created", lease.created}};
  if (!lease.container.empty()) j["container"] = lease.container;  // absent in older records
  if (lease.transient) j["transient"] = true;
  return Dump(j);
}

Result<Lease> DecodeLease(std::string_view key, std::string_view value) {
  constexpr std::string_view kWhat = "lease";
  if (!ValidateName("lease id", key)) return Corrupt(kWhat, key, "bad lease id");
  DIGESTD_ASSIGN_OR_RETURN(json j, ParseObject(kWhat, key, value));
  Lease lease{.id = std::string(key)};
  DIGESTD_ASSIGN_OR_RETURN(lease.tenant, GetString(j, "tenant", kWhat, key, 128));
  if (!ValidateName("tenant", lease.tenant)) return Corrupt(kWhat, key, "bad tenant");
  DIGESTD_ASSIGN_OR_RETURN(lease.created, GetTime(j, "created", kWhat, key));
  if (j.contains("container")) {
    DIGESTD_ASSIGN_OR_RETURN(lease.container, GetString(j, "container", kWhat, key, 128));
    if (!ValidateName("container id", lease.container)) return Corrupt(kWhat, key, "bad container id");
  }
  if (auto t = j.find("transient"); t != j.end()) {
    if (!t->is_boolean()) return Corrupt(kWhat, key, "transient is not a boolean");
    lease.transient = t->get<bool>();
  }
  auto it = j.find("digests");
  if (it == j.end() || !it->is_array() || it->size() > 100000) {
    return Corrupt(kWhat, key, "digests missing, not an array, or too long");
  }
  for (const auto& e : *it) {
    if (!e.is_string()) return Corrupt(kWhat, key, "digest entry not a string");
    auto d = Digest::Parse(e.get_ref<const std::string&>());
    if (!d) return Corrupt(kWhat, key, "bad digest entry");
    lease.digests.push_back(std::move(*d));
  }
  return lease;
}

std::string EncodeImage(const ImageRecord& image) {
  json j = {{"v", kRecordVersion},
            {"image_manifest", image.image_manifest.ToString()},
            {"reference", image.reference},
            {"scope", image.scope},
            {"requirement", image.requirement},
            {"signer", image.signer},
            {"reason", image.reason},
            {"tenant", image.tenant},
            {"actor_uid", image.actor_uid},
            {"pulled_at", image.pulled_at}};
  return Dump(j);
}

Result<ImageRecord> DecodeImage(std::string_view key, std::string_view value) {
  constexpr std::string_view kWhat = "image";
  DIGESTD_ASSIGN_OR_RETURN(Digest manifest, KeyDigest(kWhat, key));
  DIGESTD_ASSIGN_OR_RETURN(json j, ParseObject(kWhat, key, value));
  DIGESTD_ASSIGN_OR_RETURN(std::string image_manifest, GetString(j, "image_manifest", kWhat, key, 200));
  auto im = Digest::Parse(image_manifest);
  if (!im) return Corrupt(kWhat, key, "bad image_manifest");
  ImageRecord r{.manifest = std::move(manifest), .image_manifest = std::move(*im)};
  DIGESTD_ASSIGN_OR_RETURN(r.reference, GetString(j, "reference", kWhat, key, 512));
  DIGESTD_ASSIGN_OR_RETURN(r.scope, GetString(j, "scope", kWhat, key, 1024));
  DIGESTD_ASSIGN_OR_RETURN(r.requirement, GetString(j, "requirement", kWhat, key, 128));
  DIGESTD_ASSIGN_OR_RETURN(r.signer, GetString(j, "signer", kWhat, key, 1024));
  DIGESTD_ASSIGN_OR_RETURN(r.reason, GetString(j, "reason", kWhat, key, 4096));
  DIGESTD_ASSIGN_OR_RETURN(r.tenant, GetString(j, "tenant", kWhat, key, 128));
  DIGESTD_ASSIGN_OR_RETURN(r.pulled_at, GetTime(j, "pulled_at", kWhat, key));
  DIGESTD_ASSIGN_OR_RETURN(r.actor_uid, GetTime(j, "actor_uid", kWhat, key));
  return r;
}

std::string EncodeDeny(const DenyRecord& deny) {
  json j = {{"v", kRecordVersion}, {"reason", deny.reason}, {"created", deny.created}};
  return Dump(j);
}

Result<DenyRecord> DecodeDeny(std::string_view key, std::string_view value) {
  constexpr std::string_view kWhat = "deny";
  DIGESTD_ASSIGN_OR_RETURN(Digest digest, KeyDigest(kWhat, key));
  DIGESTD_ASSIGN_OR_RETURN(json j, ParseObject(kWhat, key, value));
  DenyRecord deny{.digest = std::move(digest)};
  DIGESTD_ASSIGN_OR_RETURN(deny.reason, GetString(j, "reason", kWhat, key, 1024));
  DIGESTD_ASSIGN_OR_RETURN(deny.created, GetTime(j, "created", kWhat, key));
  return deny;
}

std::string EdgeKey(const Digest& a, const Digest& b) {
  return a.ToString() + " " + b.ToString();
}

Result<std::pair<Digest, Digest>> DecodeEdgeKey(std::string_view key) {
  const auto sp = key.find(' ');
  if (sp == std::string_view::npos) return Corrupt("edge", key, "no separator");
  auto a = Digest::Parse(key.substr(0, sp));
  auto b = Digest::Parse(key.substr(sp + 1));
  if (!a || !b) return Corrupt("edge", key, "bad digest");
  return std::make_pair(std::move(*a), std::move(*b));
}

std::string AuditKey(std::uint64_t seq) {
  std::string key(8, '\0');
  for (int i = 7; i >= 0; --i) {
    key[static_cast<std::size_t>(i)] = static_cast<char>(seq & 0xff);
    seq >>= 8;
  }
  return key;
}

Result<std::uint64_t> DecodeAuditKey(std::string_view key) {
  if (key.size() != 8) return Corrupt("audit", key, "key is not 8 bytes");
  std::uint64_t seq = 0;
  for (char c : key) seq = (seq << 8) | static_cast<unsigned char>(c);
  return seq;
}

}  // namespace digestd::store
