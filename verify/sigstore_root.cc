#include "verify/sigstore_root.h"

#include <fstream>
#include <sstream>

#include "verify/base64.h"
#include "verify/json_strict.h"
#include "verify/trust.h"

namespace digestd::verify {
namespace {

using nlohmann::json;

Error Bad(std::string_view source, const std::string& why) {
  return MakeError(Module::kVerify, Errc::kInvalidArgument,
                   "trusted root " + std::string(source) + ": " + why);
}

Result<std::string> B64(const json& obj, std::string_view field, std::string_view source,
                        const std::string& where) {
  auto it = obj.find(field);
  if (it == obj.end() || !it->is_string()) {
    return Bad(source, where + ": \"" + std::string(field) + "\" missing or not a string");
  }
  auto raw = Base64Decode(it->get<std::string>());
  if (!raw) return Bad(source, where + ": \"" + std::string(field) + "\" is not base64");
  return *raw;
}

Result<ValidFor> ParseValidFor(const json& obj, std::string_view source, const std::string& where) {
  auto it = obj.find("validFor");
  if (it == obj.end() || !it->is_object()) return Bad(source, where + ": validFor missing");
  auto start = it->find("start");
  if (start == it->end() || !start->is_string()) {
    return Bad(source, where + ": validFor.start missing (a window without a start is refused, "
                               "not read as unbounded)");
  }
  ValidFor v;
  auto s = ParseRfc3339(start->get<std::string>());
  if (!s) return Bad(source, where + ": validFor.start: " + s.error().context());
  v.start = *s;
  if (auto end = it->find("end"); end != it->end() && !end->is_null()) {
    if (!end->is_string()) return Bad(source, where + ": validFor.end not a string");
    auto e = ParseRfc3339(end->get<std::string>());
    if (!e) return Bad(source, where + ": validFor.end: " + e.error().context());
    if (*e < v.start) return Bad(source, where + ": validFor ends before it starts");
    v.end = *e;
  }
  return v;
}

Result<LogKey> ParseLog(const json& j, std::string_view source, const std::string& where) {
  if (!j.is_object()) return Bad(source, where + ": not an object");
  LogKey log;
  if (auto u = j.find("baseUrl"); u != j.end() && u->is_string()) log.base_url = *u;
  if (auto h = j.find("hashAlgorithm"); h != j.end() && (!h->is_string() || *h != "SHA2_256")) {
    return Bad(source, where + ": hashAlgorithm must be SHA2_256");
  }
  auto lid = j.find("logId");
  if (lid == j.end() || !lid->is_object()) return Bad(source, where + ": logId missing");
  DIGESTD_ASSIGN_OR_RETURN(log.log_id, B64(*lid, "keyId", source, where + ".logId"));
  if (log.log_id.size() != 32) return Bad(source, where + ": logId.keyId is not 32 bytes");
  auto pk = j.find("publicKey");
  if (pk == j.end() || !pk->is_object()) return Bad(source, where + ": publicKey missing");
  DIGESTD_ASSIGN_OR_RETURN(std::string raw, B64(*pk, "rawBytes", source, where + ".publicKey"));
  auto details = pk->find("keyDetails");
  if (details == pk->end() || !details->is_string()) {
    return Bad(source, where + ": publicKey.keyDetails missing");
  }
  const std::string kd = *details;
  Result<PublicKeyPtr> key = kd == "PKCS1_RSA_PKCS1V5" ? PublicKey::FromRsaPkcs1Der(raw)
                                                        : PublicKey::FromDer(raw);
  if (!key) return Bad(source, where + ": publicKey: " + key.error().context());
  const KeyType t = (*key)->type();
  const bool matches =
      (kd == "PKIX_ECDSA_P256_SHA_256" && t == KeyType::kEcdsaP256) ||
      (kd == "PKIX_ECDSA_P384_SHA_384" && t == KeyType::kEcdsaP384) ||
      (kd == "PKIX_ED25519" && t == KeyType::kEd25519) ||
      ((kd == "PKCS1_RSA_PKCS1V5" || kd.starts_with("PKIX_RSA_PKCS1V15_")) && t == KeyType::kRsa);
  if (!matches) {
    return Bad(source, where + ": keyDetails " + Quote(kd) + " does not describe its " +
                           std::string(ToString(t)) + " key");
  }
  log.key = *key;
  DIGESTD_ASSIGN_OR_RETURN(log.valid, ParseValidFor(*pk, source, where + ".publicKey"));
  return log;
}

Result<Authority> ParseAuthority(const json& j, std::string_view source, const std::string& where) {
  if (!j.is_object()) return Bad(source, where + ": not an object");
  Authority a;
  if (auto u = j.find("uri"); u != j.end() && u->is_string()) a.uri = *u;
  auto chain = j.find("certChain");
  if (chain == j.end() || !chain->is_object()) return Bad(source, where + ": certChain missing");
  auto certs = chain->find("certificates");
  if (certs == chain->end() || !certs->is_array() || certs->empty()) {
    return Bad(source, where + ": certChain.certificates missing or empty");
  }
  for (std::size_t i = 0; i < certs->size(); ++i) {
    DIGESTD_ASSIGN_OR_RETURN(
        std::string der,
        B64((*certs)[i], "rawBytes", source, where + ".certificates[" + std::to_string(i) + "]"));
    a.chain_der.push_back(std::move(der));
  }
  DIGESTD_ASSIGN_OR_RETURN(a.valid, ParseValidFor(j, source, where));
  return a;
}

}  // namespace

Result<SigstoreTrustedRoot> SigstoreTrustedRoot::Parse(std::string_view json_text,
                                                       std::string_view source) {
  auto parsed = ParseJsonStrict(json_text, "trusted root", {.max_bytes = 1u << 20});
  if (!parsed) return Bad(source, parsed.error().context());
  const json& j = *parsed;
  if (!j.is_object()) return Bad(source, "not a JSON object");
  auto mt = j.find("mediaType");
  if (mt == j.end() || !mt->is_string() ||
      *mt != "application/vnd.dev.sigstore.trustedroot+json;version=0.1") {
    return Bad(source, "mediaType is not application/vnd.dev.sigstore.trustedroot+json;version=0.1");
  }
  SigstoreTrustedRoot root;
  auto list = [&](std::string_view field) -> Result<const json*> {
    auto it = j.find(field);
    if (it == j.end()) return nullptr;
    if (!it->is_array()) return Bad(source, "\"" + std::string(field) + "\" is not an array");
    return &*it;
  };
  for (auto [field, out] : {std::pair{std::string_view("tlogs"), &root.tlogs_},
                            std::pair{std::string_view("ctlogs"), &root.ctlogs_}}) {
    DIGESTD_ASSIGN_OR_RETURN(const json* arr, list(field));
    if (arr == nullptr) continue;
    for (std::size_t i = 0; i < arr->size(); ++i) {
      DIGESTD_ASSIGN_OR_RETURN(
          LogKey k, ParseLog((*arr)[i], source, std::string(field) + "[" + std::to_string(i) + "]"));
      out->push_back(std::move(k));
    }
  }
  for (auto [field, out] :
       {std::pair{std::string_view("certificateAuthorities"), &root.cas_},
        std::pair{std::string_view("timestampAuthorities"), &root.tsas_}}) {
    DIGESTD_ASSIGN_OR_RETURN(const json* arr, list(field));
    if (arr == nullptr) continue;
    for (std::size_t i = 0; i < arr->size(); ++i) {
      DIGESTD_ASSIGN_OR_RETURN(
          Authority a,
          ParseAuthority((*arr)[i], source, std::string(field) + "[" + std::to_string(i) + "]"));
      out->push_back(std::move(a));
    }
  }
  if (root.tlogs_.empty() && root.tsas_.empty()) {
    return Bad(source, "neither a transparency log nor a timestamp authority: nothing could "
                       "establish when a signature was made");
  }
  return root;
}

Result<SigstoreTrustedRoot> SigstoreTrustedRoot::LoadFile(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return SysError(Module::kVerify, "open trusted root " + path.string());
  std::ostringstream ss;
  ss << in.rdbuf();
  return Parse(ss.str(), path.string());
}

SigstoreTrustedRoot SigstoreTrustedRoot::FromParts(std::vector<Authority> cas,
                                                   std::vector<LogKey> tlogs,
                                                   std::vector<LogKey> ctlogs,
                                                   std::vector<Authority> tsas) {
  SigstoreTrustedRoot r;
  r.cas_ = std::move(cas);
  r.tlogs_ = std::move(tlogs);
  r.ctlogs_ = std::move(ctlogs);
  r.tsas_ = std::move(tsas);
  return r;
}

const LogKey* SigstoreTrustedRoot::FindTlog(std::string_view log_id) const {
  for (const auto& l : tlogs_) {
    if (l.log_id == log_id) return &l;
  }
  return nullptr;
}

}  // namespace digestd::verify
