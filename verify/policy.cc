#include "verify/policy.h"

#include <fnmatch.h>

#include <algorithm>
#include <set>

#include "common/file.h"
#include "verify/base64.h"
#include "verify/hasher.h"
#include "verify/json_strict.h"
#include "verify/keyless.h"
#include "verify/oci.h"
#include "verify/x509.h"
#include "verify/scope.h"

namespace digestd::verify {
namespace {

using nlohmann::json;

// Load-time errors name the file and the field.
struct Loader {
  std::string_view source;
  const std::filesystem::path& base_dir;

  Error Bad(const std::string& where, const std::string& why) const {
    return MakeError(Module::kVerify, Errc::kInvalidArgument,
                     std::string(source) + ": " + where + ": " + why);
  }

  Result<std::string> String(const json& obj, const char* field, const std::string& where,
                             bool required = true) const {
    auto it = obj.find(field);
    if (it == obj.end()) {
      if (required) return Bad(where, std::string("missing \"") + field + "\"");
      return std::string();
    }
    if (!it->is_string()) return Bad(where + "." + field, "must be a string");
    return it->get<std::string>();
  }

  Result<std::vector<std::string>> Strings(const json& obj, const char* field,
                                           const std::string& where) const {
    std::vector<std::string> out;
    auto it = obj.find(field);
    if (it == obj.end()) return out;
    if (!it->is_array()) return Bad(where + "." + field, "must be an array of strings");
    for (const auto& e : *it) {
      if (!e.is_string()) return Bad(where + "." + field, "must be an array of strings");
      out.push_back(e.get<std::string>());
    }
    return out;
  }

  Result<void> OnlyKeys(const json& obj, std::initializer_list<std::string_view> allowed,
                        const std::string& where) const {
    if (!obj.is_object()) return Bad(where, "must be an object");
    // JsonOnlyKeys already prefixes `where`.
    if (auto r = JsonOnlyKeys(obj, allowed, where); !r) {
      return MakeError(Module::kVerify, Errc::kInvalidArgument,
                       std::string(source) + ": " + r.error().context());
    }
    return {};
  }

  Result<PolicyKey> KeyFromFile(const std::string& path_text, const std::string& where) const {
    std::filesystem::path path(path_text);
    if (path.is_relative()) path = base_dir / path;
    auto text = ReadFileCapped(path, 64u << 10);
    if (!text) {
      return Bad(where, "cannot read key file " + Quote(path.string()) + " (" +
                            text.error().context() + ")");
    }
    auto key = PublicKey::FromPem(*text);
    if (!key) return Bad(where, "key file " + Quote(path.string()) + ": " + key.error().context());
    return PolicyKey{path_text, std::move(*key)};
  }

  // keyPath | keyPaths | keyData | keyIds: exactly one.
  Result<void> Keys(const json& obj, const std::string& where, std::vector<PolicyKey>& keys,
                    std::vector<std::string>& ids) const {
    const int n = obj.contains("keyPath") + obj.contains("keyPaths") + obj.contains("keyData") +
                  obj.contains("keyIds");
    if (n != 1) return Bad(where, "exactly one of keyPath, keyPaths, keyData, keyIds is required");
    if (obj.contains("keyPath")) {
      DIGESTD_ASSIGN_OR_RETURN(std::string p, String(obj, "keyPath", where));
      DIGESTD_ASSIGN_OR_RETURN(auto k, KeyFromFile(p, where + ".keyPath"));
      keys.push_back(std::move(k));
    } else if (obj.contains("keyPaths")) {
      DIGESTD_ASSIGN_OR_RETURN(auto paths, Strings(obj, "keyPaths", where));
      if (paths.empty()) return Bad(where + ".keyPaths", "must not be empty");
      for (const auto& p : paths) {
        DIGESTD_ASSIGN_OR_RETURN(auto k, KeyFromFile(p, where + ".keyPaths"));
        keys.push_back(std::move(k));
      }
    } else if (obj.contains("keyData")) {
      DIGESTD_ASSIGN_OR_RETURN(std::string data, String(obj, "keyData", where));
      auto pem = Base64Decode(data);
      if (!pem) return Bad(where + ".keyData", "must be base64 of a PEM key: " + pem.error().context());
      auto key = PublicKey::FromPem(*pem);
      if (!key) return Bad(where + ".keyData", key.error().context());
      keys.push_back(PolicyKey{"keyData", std::move(*key)});
    } else {
      DIGESTD_ASSIGN_OR_RETURN(ids, Strings(obj, "keyIds", where));
      if (ids.empty()) return Bad(where + ".keyIds", "must not be empty");
    }
    return {};
  }

  static bool HasKeyless(const json& obj) {
    for (const char* k :
         {"fulcio", "rekorPublicKeyPath", "rekorPublicKeyData", "trustedRootPath", "pki"}) {
      if (obj.contains(k)) return true;
    }
    return false;
  }

  Result<std::string> ReadRelative(const std::string& path_text, const std::string& where,
                                   std::size_t cap) const {
    std::filesystem::path path(path_text);
    if (path.is_relative()) path = base_dir / path;
    auto text = ReadFileCapped(path, cap);
    if (!text) {
      return Bad(where, "cannot read " + Quote(path.string()) + " (" + text.error().context() + ")");
    }
    return *text;
  }

  // fulcio {caPath|caData, oidcIssuer, subjectEmail|subject} with rekorPublicKeyPath|Data, or
  // fulcio {oidcIssuer, subjectEmail|subject} with trustedRootPath.
  // The PEM text of a `...Path` / `...Data` field pair: a file (relative to the policy, at most
  // `cap` bytes) or base64 of `what`. `label` says where it came from: the path, or the data
  // field's name.
  Result<std::string> PemFrom(const json& obj, const char* path_field, const char* data_field,
                              const std::string& where, std::size_t cap, const char* what,
                              std::string& label) const {
    if (obj.contains(path_field)) {
      DIGESTD_ASSIGN_OR_RETURN(std::string p, String(obj, path_field, where));
      DIGESTD_ASSIGN_OR_RETURN(std::string pem, ReadRelative(p, where + "." + path_field, cap));
      label = p;
      return pem;
    }
    DIGESTD_ASSIGN_OR_RETURN(std::string data, String(obj, data_field, where));
    auto raw = Base64Decode(data);
    if (!raw) return Bad(where + "." + data_field, std::string("must be base64 of ") + what);
    label = data_field;
    return *raw;
  }

  // Certificates from a path or base64 data field pair.
  Result<std::vector<CertificatePtr>> CertsFrom(const json& obj, const char* path_field,
                                                const char* data_field, const std::string& where,
                                                std::string& label) const {
    DIGESTD_ASSIGN_OR_RETURN(std::string pem, PemFrom(obj, path_field, data_field, where,
                                                      256u << 10, "PEM certificates", label));
    auto certs = Certificate::ChainFromPem(pem);
    if (!certs) return Bad(where, "certificates: " + certs.error().context());
    return *certs;
  }

  // pki {caRootsPath|caRootsData, [caIntermediatesPath|caIntermediatesData],
  //      subjectEmail and/or subjectHostname}
  Result<KeylessRule> Pki(const json& obj, const std::string& where) const {
    const std::string w = where + ".pki";
    for (const char* other : {"fulcio", "rekorPublicKeyPath", "rekorPublicKeyData", "trustedRootPath"}) {
      if (obj.contains(other)) {
        return Bad(where, std::string("pki signatures are verified without a transparency log; \"") +
                              other + "\" does not go with pki");
      }
    }
    const json& p = obj["pki"];
    DIGESTD_RETURN_IF_ERROR(OnlyKeys(p, {"caRootsPath", "caRootsData", "caIntermediatesPath",
                                         "caIntermediatesData", "subjectEmail", "subjectHostname"},
                                     w));
    if (p.contains("caRootsPath") == p.contains("caRootsData")) {
      return Bad(w, "exactly one of caRootsPath and caRootsData is required");
    }
    if (p.contains("caIntermediatesPath") && p.contains("caIntermediatesData")) {
      return Bad(w, "at most one of caIntermediatesPath and caIntermediatesData");
    }
    auto pki = std::make_shared<PkiTrust>();
    DIGESTD_ASSIGN_OR_RETURN(pki->subject_email, String(p, "subjectEmail", w, false));
    DIGESTD_ASSIGN_OR_RETURN(pki->subject_hostname, String(p, "subjectHostname", w, false));
    if (pki->subject_email.empty() && pki->subject_hostname.empty()) {
      return Bad(w, "subjectEmail or subjectHostname is required");
    }
    std::string label;
    DIGESTD_ASSIGN_OR_RETURN(auto roots, CertsFrom(p, "caRootsPath", "caRootsData", w, label));
    for (const auto& c : roots) pki->roots.push_back(Authority{label, {c->der()}, {}});
    if (p.contains("caIntermediatesPath") || p.contains("caIntermediatesData")) {
      std::string ilabel;
      DIGESTD_ASSIGN_OR_RETURN(auto inter, CertsFrom(p, "caIntermediatesPath",
                                                     "caIntermediatesData", w, ilabel));
      for (const auto& c : inter) pki->intermediates_der.push_back(c->der());
    }
    KeylessRule rule;
    rule.root_label = "pki " + label;
    rule.subject = !pki->subject_email.empty() ? pki->subject_email : pki->subject_hostname;
    rule.issuer = "pki";
    rule.pki = std::move(pki);
    return rule;
  }

  Result<KeylessRule> Keyless(const json& obj, const std::string& where) const {
    if (obj.contains("pki")) return Pki(obj, where);
    KeylessRule rule;
    auto f = obj.find("fulcio");
    if (f == obj.end()) {
      return Bad(where, "keyless verification needs \"fulcio\" (oidcIssuer and subjectEmail)");
    }
    const std::string fw = where + ".fulcio";
    DIGESTD_RETURN_IF_ERROR(OnlyKeys(*f, {"caPath", "caData", "oidcIssuer", "subjectEmail", "subject"}, fw));
    DIGESTD_ASSIGN_OR_RETURN(rule.issuer, String(*f, "oidcIssuer", fw));
    if (rule.issuer.empty()) return Bad(fw + ".oidcIssuer", "must not be empty");
    if (f->contains("subjectEmail") == f->contains("subject")) {
      return Bad(fw, "exactly one of subjectEmail and subject (digestd: any SAN) is required");
    }
    DIGESTD_ASSIGN_OR_RETURN(rule.subject,
                             String(*f, f->contains("subject") ? "subject" : "subjectEmail", fw));
    if (rule.subject.empty()) return Bad(fw, "the required subject must not be empty");
    const bool has_ca = f->contains("caPath") || f->contains("caData");
    const int rekor = obj.contains("rekorPublicKeyPath") + obj.contains("rekorPublicKeyData");
    if (obj.contains("trustedRootPath")) {
      if (has_ca || rekor != 0) {
        return Bad(where, "trustedRootPath holds the CAs and logs; fulcio.caPath/caData and "
                          "rekorPublicKey* must not be given with it");
      }
      DIGESTD_ASSIGN_OR_RETURN(std::string p, String(obj, "trustedRootPath", where));
      DIGESTD_ASSIGN_OR_RETURN(std::string text, ReadRelative(p, where + ".trustedRootPath", 1u << 20));
      auto root = SigstoreTrustedRoot::Parse(text, p);
      if (!root) return Bad(where + ".trustedRootPath", root.error().context());
      rule.root = std::make_shared<SigstoreTrustedRoot>(std::move(*root));
      rule.root_label = "trustedRootPath " + p;
      return rule;
    }
    if (f->contains("caPath") == f->contains("caData")) {
      return Bad(fw, "exactly one of caPath and caData is required (or use trustedRootPath)");
    }
    if (rekor != 1) {
      return Bad(where, "exactly one of rekorPublicKeyPath and rekorPublicKeyData is required: "
                        "without a Rekor signed entry timestamp there is no trusted signing time");
    }
    std::string ca_label;
    DIGESTD_ASSIGN_OR_RETURN(std::string ca_pem, PemFrom(*f, "caPath", "caData", fw, 256u << 10,
                                                         "PEM certificates", ca_label));
    rule.root_label = "fulcio " + ca_label;
    auto certs = Certificate::ChainFromPem(ca_pem);
    if (!certs) return Bad(fw, "CA certificates: " + certs.error().context());
    std::vector<Authority> cas;
    for (const auto& c : *certs) {
      if (!c->SelfSigned()) {
        return Bad(fw, "the CA file may hold only root certificates; intermediates come with "
                       "each signature");
      }
      cas.push_back(Authority{rule.root_label, {c->der()}, {}});
    }
    std::string rekor_label;
    DIGESTD_ASSIGN_OR_RETURN(std::string rekor_pem,
                             PemFrom(obj, "rekorPublicKeyPath", "rekorPublicKeyData", where,
                                     64u << 10, "a PEM key", rekor_label));
    auto key = PublicKey::FromPem(rekor_pem);
    if (!key) return Bad(where + ".rekorPublicKey", key.error().context());
    if ((*key)->type() != KeyType::kEcdsaP256 && (*key)->type() != KeyType::kEcdsaP384) {
      return Bad(where + ".rekorPublicKey", "a Rekor key must be ECDSA");
    }
    LogKey log{"rekor", DigestBytes(Hasher::Of(DigestAlgorithm::kSha256, (*key)->spki_der())),
               *key, {}};
    rule.root = std::make_shared<SigstoreTrustedRoot>(
        SigstoreTrustedRoot::FromParts(std::move(cas), {std::move(log)}));
    return rule;
  }

  // Keys, or keyless: one kind per requirement.
  Result<void> KeysOrKeyless(const json& obj, const std::string& where,
                             std::vector<PolicyKey>& keys, std::vector<std::string>& ids,
                             std::optional<KeylessRule>& keyless) const {
    const bool has_keys = obj.contains("keyPath") || obj.contains("keyPaths") ||
                          obj.contains("keyData") || obj.contains("keyIds");
    if (!HasKeyless(obj)) return Keys(obj, where, keys, ids);
    if (has_keys) return Bad(where, "keys and keyless (fulcio, trustedRootPath, pki) do not mix");
    DIGESTD_ASSIGN_OR_RETURN(keyless, Keyless(obj, where));
    return {};
  }

  Result<SignedIdentity> Identity(const json& obj, const std::string& where) const {
    SignedIdentity id;
    auto it = obj.find("signedIdentity");
    if (it == obj.end()) return id;  // default matchRepoDigestOrExact
    const std::string w = where + ".signedIdentity";
    if (!it->is_object()) return Bad(w, "must be an object");
    DIGESTD_ASSIGN_OR_RETURN(std::string type, String(*it, "type", w));
    if (type == "matchExact" || type == "matchRepoDigestOrExact" || type == "matchRepository") {
      DIGESTD_RETURN_IF_ERROR(OnlyKeys(*it, {"type"}, w));
      id.type = type == "matchExact"               ? IdentityMatch::kMatchExact
                : type == "matchRepoDigestOrExact" ? IdentityMatch::kMatchRepoDigestOrExact
                                                   : IdentityMatch::kMatchRepository;
    } else if (type == "exactReference") {
      DIGESTD_RETURN_IF_ERROR(OnlyKeys(*it, {"type", "dockerReference"}, w));
      id.type = IdentityMatch::kExactReference;
      DIGESTD_ASSIGN_OR_RETURN(id.docker_reference, String(*it, "dockerReference", w));
      auto ref = Reference::Parse(id.docker_reference);
      if (!ref) return Bad(w + ".dockerReference", ref.error().context());
      if (!ref->has_tag() && !ref->has_digest()) {
        return Bad(w + ".dockerReference", "must carry a tag or a digest");
      }
    } else if (type == "exactRepository") {
      DIGESTD_RETURN_IF_ERROR(OnlyKeys(*it, {"type", "dockerRepository"}, w));
      id.type = IdentityMatch::kExactRepository;
      DIGESTD_ASSIGN_OR_RETURN(id.docker_repository, String(*it, "dockerRepository", w));
      auto ref = Reference::Parse(id.docker_repository);
      if (!ref || ref->has_tag() || ref->has_digest()) {
        return Bad(w + ".dockerRepository", "must be a repository name without tag or digest");
      }
    } else if (type == "remapIdentity") {
      DIGESTD_RETURN_IF_ERROR(OnlyKeys(*it, {"type", "prefix", "signedPrefix"}, w));
      id.type = IdentityMatch::kRemapIdentity;
      DIGESTD_ASSIGN_OR_RETURN(id.prefix, String(*it, "prefix", w));
      DIGESTD_ASSIGN_OR_RETURN(id.signed_prefix, String(*it, "signedPrefix", w));
      for (auto* p : {&id.prefix, &id.signed_prefix}) {
        if (p->starts_with("*.") || !ValidateScope(*p)) {
          return Bad(w, "prefix " + Quote(*p) + " must be a host, namespace or repository");
        }
        *p = NormalizeHostPart(*p);
      }
    } else {
      return Bad(w + ".type", "unknown identity type " + Quote(type));
    }
    return id;
  }

  Result<Requirement> OneRequirement(const json& r, const std::string& where) const {
    if (!r.is_object()) return Bad(where, "must be an object");
    DIGESTD_ASSIGN_OR_RETURN(std::string type, String(r, "type", where));
    Requirement req;
    if (type == "insecureAcceptAnything" || type == "reject") {
      DIGESTD_RETURN_IF_ERROR(OnlyKeys(r, {"type"}, where));
      req.type = type == "reject" ? RequirementType::kReject
                                  : RequirementType::kInsecureAcceptAnything;
      return req;
    }
    if (type == "sigstoreSigned") {
      for (const char* unsupported : {"rekorPublicKeyPaths"}) {
        if (r.contains(unsupported)) {
          return Bad(where + "." + unsupported, "not supported by digestd; use fulcio with "
                                                "rekorPublicKeyPath, trustedRootPath or pki");
        }
      }
      DIGESTD_RETURN_IF_ERROR(
          OnlyKeys(r, {"type", "keyPath", "keyPaths", "keyData", "keyIds", "signedIdentity",
                       "fulcio", "rekorPublicKeyPath", "rekorPublicKeyData", "trustedRootPath",
                       "pki"},
                   where));
      req.type = RequirementType::kSigstoreSigned;
      DIGESTD_RETURN_IF_ERROR(KeysOrKeyless(r, where, req.keys, req.key_ids, req.keyless));
      DIGESTD_ASSIGN_OR_RETURN(req.identity, Identity(r, where));
      return req;
    }
    if (type == "signedBy") {
      return Bad(where + ".type", "GPG \"signedBy\" is not supported; use sigstoreSigned");
    }
    return Bad(where + ".type", "unknown requirement type " + Quote(type));
  }

  Result<std::vector<Requirement>> Requirements(const json& list, const std::string& where) const {
    if (!list.is_array()) return Bad(where, "must be an array of requirements");
    if (list.empty()) return Bad(where, "must not be empty (use [{\"type\":\"reject\"}])");
    std::vector<Requirement> out;
    for (std::size_t i = 0; i < list.size(); ++i) {
      DIGESTD_ASSIGN_OR_RETURN(auto r,
                               OneRequirement(list[i], where + "[" + std::to_string(i) + "]"));
      out.push_back(std::move(r));
    }
    return out;
  }

  Result<OrgRules> Org(const json& o) const {
    const std::string w = "digestd";
    DIGESTD_RETURN_IF_ERROR(OnlyKeys(o,
                                     {"allowedRegistries", "allowedNamespaces", "denyMutableTags",
                                      "deniedDigests", "denyReferences", "denySigners",
                                      "requiredAttestations"},
                                     w));
    OrgRules org;
    DIGESTD_ASSIGN_OR_RETURN(org.allowed_registries, Strings(o, "allowedRegistries", w));
    for (auto& r : org.allowed_registries) {
      auto host = NormalizeRegistryHost(r);
      if (r.find('/') != std::string::npos || !host) {
        return Bad(w + ".allowedRegistries", Quote(r) + " is not a registry host[:port]");
      }
      r = std::move(*host);
    }
    DIGESTD_ASSIGN_OR_RETURN(org.allowed_namespaces, Strings(o, "allowedNamespaces", w));
    for (auto& n : org.allowed_namespaces) {
      if (n.find('/') == std::string::npos || n.starts_with("*.") || !ValidateScope(n)) {
        return Bad(w + ".allowedNamespaces", Quote(n) + " is not a \"host/namespace\" prefix");
      }
      // A prefix of names, so only its host is normalised (no "library/" for docker.io).
      const auto slash = n.find('/');
      if (auto host = NormalizeRegistryHost(n.substr(0, slash))) n = *host + n.substr(slash);
    }
    if (auto t = o.find("denyMutableTags"); t != o.end()) {
      if (!t->is_boolean()) return Bad(w + ".denyMutableTags", "must be true or false");
      org.deny_mutable_tags = t->get<bool>();
    }
    DIGESTD_ASSIGN_OR_RETURN(auto digests, Strings(o, "deniedDigests", w));
    for (const auto& d : digests) {
      auto parsed = Digest::Parse(d);
      if (!parsed) return Bad(w + ".deniedDigests", parsed.error().context());
      org.denied_digests.push_back(std::move(*parsed));
    }
    DIGESTD_ASSIGN_OR_RETURN(org.deny_references, Strings(o, "denyReferences", w));
    for (auto& p : org.deny_references) {
      if (p.empty() || p.size() > 512) return Bad(w + ".denyReferences", "empty or too long");
      // Matched against normalised references: the pattern's host part is lowercased too.
      p = NormalizeHostPart(p);
    }
    if (auto s = o.find("denySigners"); s != o.end()) {
      DIGESTD_RETURN_IF_ERROR(OnlyKeys(*s, {"keyIds", "keyless"}, w + ".denySigners"));
      DIGESTD_ASSIGN_OR_RETURN(org.deny_signer_key_ids, Strings(*s, "keyIds", w + ".denySigners"));
      if (auto k = s->find("keyless"); k != s->end()) {
        if (!k->is_array()) return Bad(w + ".denySigners.keyless", "must be an array");
        for (const auto& e : *k) {
          DIGESTD_RETURN_IF_ERROR(
              OnlyKeys(e, {"issuer", "identity"}, w + ".denySigners.keyless[]"));
          OrgRules::KeylessSigner ks;
          DIGESTD_ASSIGN_OR_RETURN(ks.issuer, String(e, "issuer", w + ".denySigners.keyless[]"));
          DIGESTD_ASSIGN_OR_RETURN(ks.identity,
                                   String(e, "identity", w + ".denySigners.keyless[]"));
          org.deny_keyless_signers.push_back(std::move(ks));
        }
      }
    }
    if (auto ra = o.find("requiredAttestations"); ra != o.end()) {
      if (!ra->is_array()) return Bad(w + ".requiredAttestations", "must be an array");
      for (std::size_t i = 0; i < ra->size(); ++i) {
        const std::string where = w + ".requiredAttestations[" + std::to_string(i) + "]";
        const json& e = (*ra)[i];
        DIGESTD_RETURN_IF_ERROR(
            OnlyKeys(e, {"predicateType", "keyPath", "keyPaths", "keyData", "keyIds", "fulcio",
                         "rekorPublicKeyPath", "rekorPublicKeyData", "trustedRootPath"},
                     where));
        RequiredAttestation att;
        DIGESTD_ASSIGN_OR_RETURN(att.predicate_type, String(e, "predicateType", where));
        if (att.predicate_type.empty()) return Bad(where + ".predicateType", "must not be empty");
        DIGESTD_RETURN_IF_ERROR(KeysOrKeyless(e, where, att.keys, att.key_ids, att.keyless));
        org.required_attestations.push_back(std::move(att));
      }
    }
    return org;
  }
};

// Transports containers-policy.json knows; their sections are accepted and ignored (digestd pulls
// only from registries), so one policy file can serve both tools. Anything else is a typo.
constexpr std::string_view kOtherTransports[] = {
    "atomic", "containers-storage", "dir", "docker-archive", "docker-daemon",
    "oci",    "oci-archive",        "sif", "tarball"};

Decision Deny(std::string scope, std::string requirement, std::string reason) {
  return Decision{.allowed = false, .scope = std::move(scope),
                  .requirement = std::move(requirement), .reason = std::move(reason)};
}

bool IsDeniedSigner(const OrgRules& org, const std::string& id, const std::string& fingerprint) {
  for (const auto& d : org.deny_signer_key_ids) {
    if (d == id || d == fingerprint) return true;
  }
  return false;
}

// A key ready to check a signature: its display id and, when the trust file knows it, the entry
// whose window, scopes and revocations apply.
struct Candidate {
  std::string id;
  PublicKeyPtr key;
  const TrustedKey* trusted = nullptr;
};

std::vector<Candidate> Candidates(const std::vector<PolicyKey>& keys,
                                  const std::vector<std::string>& key_ids, const TrustRoot* trust,
                                  std::vector<std::string>& notes) {
  std::vector<Candidate> out;
  for (const auto& k : keys) {
    const TrustedKey* t = trust ? trust->FindByFingerprint(k.key->fingerprint()) : nullptr;
    out.push_back({t ? t->id : k.key->fingerprint(), k.key, t});
  }
  for (const auto& id : key_ids) {
    const TrustedKey* t = trust ? trust->FindById(id) : nullptr;
    if (t == nullptr) {
      notes.push_back("key id " + Quote(id) + " is not in the trust file");
      continue;
    }
    out.push_back({t->id, t->key, t});
  }
  return out;
}

// Checks the key may be used now for this image; explains why not.
std::optional<std::string> Unusable(const Candidate& c, const TrustRoot* trust,
                                    const OrgRules& org, const Reference& ref, std::int64_t now) {
  if (trust) {
    if (c.trusted) {
      if (auto r = trust->CheckUsable(*c.trusted, now, ref); !r) return r.error().context();
    } else if (const auto* rv = trust->RevocationFor(c.id, c.key->fingerprint())) {
      return "key " + Quote(c.id) + " is revoked" + (rv->reason.empty() ? "" : ": " + rv->reason);
    }
  }
  if (IsDeniedSigner(org, c.id, c.key->fingerprint())) {
    return "signer " + Quote(c.id) + " is denied by policy (digestd.denySigners)";
  }
  return std::nullopt;
}

// Verifies one DSSE envelope carrying an in-toto statement about `digest` with any candidate.
// Returns the accepting key id, or appends why not to `why`.
std::optional<std::string> AcceptDsse(const DsseEnvelope& env, const Digest& digest,
                                      std::string_view predicate_type,
                                      const std::vector<Candidate>& cands, const TrustRoot* trust,
                                      const OrgRules& org, const Reference& ref, std::int64_t now,
                                      std::vector<std::string>& why) {
  if (env.payload_type != kInTotoPayloadType) {
    why.push_back("DSSE payloadType " + Quote(env.payload_type) + " is not in-toto");
    return std::nullopt;
  }
  const std::string pae = Pae(env.payload_type, env.payload);
  for (const auto& sig : env.signatures) {
    for (const auto& c : cands) {
      if (!c.key->Verify(pae, sig.sig)) continue;
      if (auto u = Unusable(c, trust, org, ref, now)) {
        why.push_back(*u);
        continue;
      }
      auto st = ParseInTotoStatement(env.payload);
      if (!st) {
        why.push_back(st.error().context());
        continue;
      }
      if (st->predicate_type != predicate_type) {
        why.push_back("statement predicateType is " + Quote(st->predicate_type) + ", want " +
                      Quote(predicate_type));
        continue;
      }
      if (!StatementCovers(*st, digest)) {
        why.push_back("statement signed by " + Quote(c.id) + " is not about " + digest.ToString());
        continue;
      }
      return c.id;
    }
  }
  why.push_back("no DSSE signature verifies with the configured keys");
  return std::nullopt;
}

bool IsDeniedKeyless(const OrgRules& org, const BundleVerdict& v) {
  for (const auto& d : org.deny_keyless_signers) {
    if (d.issuer == v.issuer && d.identity == v.identity) return true;
  }
  return false;
}

std::string KeylessSignerId(const BundleVerdict& v) {
  if (v.issuer == "pki") return "pki " + v.identity;
  return "keyless " + v.identity + " (" + v.issuer + ")";
}

BundleExpectation Expect(const KeylessRule& rule) {
  return BundleExpectation{.identity = rule.subject, .issuer = rule.issuer};
}

// One layer of a cosign signature manifest signed keyless (certificate + Rekor bundle
// annotations): the certificate, the SET and the payload's digest and identity.
std::optional<std::string> AcceptKeylessSignature(const SimpleSignature& sig, const KeylessRule& rule,
                                                  const SignedIdentity& identity,
                                                  const Reference& ref, const Digest& digest,
                                                  const OrgRules& org, std::int64_t now,
                                                  std::vector<std::string>& why) {
  if (sig.media_type != media::kCosignSimpleSigning) {
    why.push_back("signature layer has media type " + Quote(sig.media_type));
    return std::nullopt;
  }
  if (!sig.annotations.contains("dev.sigstore.cosign/certificate")) {
    why.push_back("a signature carries no certificate; the policy requires keyless signing by " +
                  Quote(rule.subject));
    return std::nullopt;
  }
  auto v = rule.pki ? VerifyCosignPki(sig, *rule.pki, now)
                    : VerifyCosignKeyless(sig, *rule.root, Expect(rule));
  if (!v) {
    why.push_back((rule.pki ? "pki signature: " : "keyless signature: ") + v.error().context());
    return std::nullopt;
  }
  auto payload = ParseSimpleSigningPayload(sig.payload);
  if (!payload) {
    why.push_back(payload.error().context());
    return std::nullopt;
  }
  if (payload->manifest_digest != digest) {
    why.push_back("keyless signature is for " + payload->manifest_digest.ToString() + ", not for " +
                  digest.ToString());
    return std::nullopt;
  }
  if (auto m = MatchSignedIdentity(identity, ref, payload->docker_reference); !m) {
    why.push_back(m.error().context());
    return std::nullopt;
  }
  if (IsDeniedKeyless(org, *v)) {
    why.push_back("signer " + Quote(KeylessSignerId(*v)) + " is denied by policy (digestd.denySigners)");
    return std::nullopt;
  }
  return KeylessSignerId(*v);
}

// A sigstore bundle about the image signed keyless: a DSSE in-toto statement with
// `predicate_type` naming the manifest digest, or (image signatures only) a message signature
// over the manifest.
std::optional<std::string> AcceptKeylessBundle(const std::string& bundle_json,
                                               const KeylessRule& rule,
                                               std::string_view predicate_type,
                                               const Digest& digest, const OrgRules& org,
                                               std::vector<std::string>& why) {
  if (rule.pki) {
    why.push_back("a pki requirement accepts cosign signature layers, not bundles");
    return std::nullopt;
  }
  auto v = VerifyBundle(bundle_json, BundleArtifact{.digest = digest}, *rule.root, Expect(rule));
  if (!v) {
    why.push_back("keyless bundle: " + v.error().context());
    return std::nullopt;
  }
  if (v->statement) {
    if (v->statement->predicate_type != predicate_type) {
      why.push_back("statement predicateType is " + Quote(v->statement->predicate_type) +
                    ", want " + Quote(predicate_type));
      return std::nullopt;
    }
  } else if (!v->payload_type.empty() || predicate_type != kCosignSignPredicate) {
    why.push_back("bundle is not an in-toto statement of " + Quote(predicate_type));
    return std::nullopt;
  }
  if (IsDeniedKeyless(org, *v)) {
    why.push_back("signer " + Quote(KeylessSignerId(*v)) + " is denied by policy (digestd.denySigners)");
    return std::nullopt;
  }
  return KeylessSignerId(*v);
}

}  // namespace

std::string Decision::ToJson() const {
  json j = {{"allowed", allowed},
            {"scope", scope},
            {"requirement", requirement},
            {"signer", signer},
            {"reason", reason}};
  return j.dump(-1, ' ', false, json::error_handler_t::replace);
}

Result<void> MatchSignedIdentity(const SignedIdentity& rule, const Reference& image,
                                 std::string_view signed_reference) {
  auto no = [&](std::string why) {
    return MakeError(Module::kVerify, Errc::kPermission,
                     "signed identity " + Quote(signed_reference) + " " + why);
  };
  auto signed_ref = Reference::Parse(signed_reference);
  if (!signed_ref) return no("is not a valid reference: " + signed_ref.error().context());
  auto repo_digest_or_exact = [&](const Reference& intended) -> Result<void> {
    if (intended.has_digest()) {
      if (intended.Name() == signed_ref->Name()) return {};
      return no("does not match repository " + intended.Name() + " (matchRepoDigestOrExact)");
    }
    if (intended.has_tag() && intended.String() == signed_ref->String()) return {};
    return no("does not match " + intended.String() + " exactly (matchRepoDigestOrExact)");
  };
  switch (rule.type) {
    case IdentityMatch::kMatchExact:
      if ((image.has_tag() || image.has_digest()) && image.String() == signed_ref->String()) {
        return {};
      }
      return no("does not match " + image.String() + " exactly (matchExact)");
    case IdentityMatch::kMatchRepoDigestOrExact:
      return repo_digest_or_exact(image);
    case IdentityMatch::kMatchRepository:
      if (image.Name() == signed_ref->Name()) return {};
      return no("does not match repository " + image.Name() + " (matchRepository)");
    case IdentityMatch::kExactReference: {
      auto want = Reference::Parse(rule.docker_reference);
      if (want && want->String() == signed_ref->String()) return {};
      return no("is not " + rule.docker_reference + " (exactReference)");
    }
    case IdentityMatch::kExactRepository: {
      auto want = Reference::Parse(rule.docker_repository);
      if (want && want->Name() == signed_ref->Name()) return {};
      return no("is not in repository " + rule.docker_repository + " (exactRepository)");
    }
    case IdentityMatch::kRemapIdentity: {
      const std::string s = image.String();
      const auto& p = rule.prefix;
      const bool boundary = s.size() == p.size() || (s.size() > p.size() &&
                                                     (s[p.size()] == '/' || s[p.size()] == ':' ||
                                                      s[p.size()] == '@'));
      if (s.starts_with(p) && boundary) {
        auto remapped = Reference::Parse(rule.signed_prefix + s.substr(p.size()));
        if (!remapped) return no("cannot be compared: remapped reference is invalid");
        return repo_digest_or_exact(*remapped);
      }
      return repo_digest_or_exact(image);
    }
  }
  return no("unknown identity rule");
}

Result<Policy> Policy::Parse(std::string_view text, std::string_view source,
                             const std::filesystem::path& base_dir) {
  Loader ld{source, base_dir};
  auto parsed = ParseJsonStrict(text, source, {.max_bytes = 4u << 20});
  if (!parsed) return parsed.error();
  const json& j = *parsed;
  DIGESTD_RETURN_IF_ERROR(ld.OnlyKeys(j, {"default", "transports", "digestd"}, "top level"));
  Policy policy;
  auto def = j.find("default");
  if (def == j.end()) return ld.Bad("default", "required (e.g. [{\"type\":\"reject\"}])");
  DIGESTD_ASSIGN_OR_RETURN(policy.default_, ld.Requirements(*def, "default"));
  if (auto tr = j.find("transports"); tr != j.end()) {
    if (!tr->is_object()) return ld.Bad("transports", "must be an object");
    for (auto t = tr->begin(); t != tr->end(); ++t) {
      const std::string where = "transports." + t.key();
      if (t.key() != "docker") {
        const bool known = std::find(std::begin(kOtherTransports), std::end(kOtherTransports),
                                     t.key()) != std::end(kOtherTransports);
        if (!known) return ld.Bad(where, "unknown transport");
        continue;
      }
      if (!t->is_object()) return ld.Bad(where, "must be an object of scopes");
      for (auto s = t->begin(); s != t->end(); ++s) {
        const std::string sw = where + "[" + Quote(s.key()) + "]";
        // "" is the transport-wide default in containers-policy.json.
        if (!s.key().empty()) {
          if (auto r = ValidateScope(s.key()); !r) return ld.Bad(sw, r.error().context());
        }
        DIGESTD_ASSIGN_OR_RETURN(auto reqs, ld.Requirements(*s, sw));
        // Store scopes normalised, so "docker.io/busybox" and "docker.io/library/busybox" agree.
        // Hosts compare case-insensitively: every scope's host part is lowercased (and a bare
        // host gets NormalizeRegistryHost's default-port rule), as references are at parse time.
        std::string key = s.key();
        if (!key.empty() && !key.starts_with("*.") && key.find('/') != std::string::npos) {
          if (auto ref = Reference::Parse(key)) {
            key = (ref->has_tag() || ref->has_digest()) ? ref->String() : ref->Name();
          }
        } else if (!key.empty() && !key.starts_with("*.")) {
          if (auto host = NormalizeRegistryHost(key)) key = std::move(*host);
        } else {
          key = NormalizeHostPart(key);
        }
        for (const auto& [existing, _] : policy.docker_) {
          if (existing == key) return ld.Bad(sw, "the same scope appears twice");
        }
        policy.docker_.emplace_back(std::move(key), std::move(reqs));
      }
    }
  }
  if (auto org = j.find("digestd"); org != j.end()) {
    DIGESTD_ASSIGN_OR_RETURN(policy.org_, ld.Org(*org));
  }
  return policy;
}

Result<Policy> Policy::LoadFile(const std::filesystem::path& path) {
  auto text = ReadFileCapped(path, 4u << 20);
  if (!text) return std::move(text).error().Wrap("policy file");
  return Parse(*text, path.string(), path.parent_path());
}

std::pair<std::string, const std::vector<Requirement>*> Policy::ScopeFor(
    const Reference& ref) const {
  for (const auto& candidate : ScopeCandidates(ref)) {
    for (const auto& [scope, reqs] : docker_) {
      if (scope == candidate) return {"docker:" + scope, &reqs};
    }
  }
  for (const auto& [scope, reqs] : docker_) {
    if (scope.empty()) return {"docker:\"\"", &reqs};
  }
  return {"default", &default_};
}

Decision Policy::PreCheck(const Reference& ref) const {
  const std::string r = ref.String();
  if (!org_.allowed_registries.empty() &&
      std::find(org_.allowed_registries.begin(), org_.allowed_registries.end(), ref.registry()) ==
          org_.allowed_registries.end()) {
    return Deny("digestd", "allowedRegistries",
                "registry " + ref.registry() + " is not in digestd.allowedRegistries");
  }
  if (!org_.allowed_namespaces.empty()) {
    const std::string name = ref.Name();
    bool ok = false;
    for (const auto& ns : org_.allowed_namespaces) {
      ok = ok || name == ns || name.starts_with(ns + "/");
    }
    if (!ok) {
      return Deny("digestd", "allowedNamespaces",
                  name + " is not under any of digestd.allowedNamespaces");
    }
  }
  if (org_.deny_mutable_tags && !ref.has_digest()) {
    return Deny("digestd", "denyMutableTags",
                "mutable tag reference " + r + " refused: pull by digest (@sha256:...)");
  }
  if (ref.has_digest()) {
    for (const auto& d : org_.denied_digests) {
      if (d == *ref.digest()) {
        return Deny("digestd", "deniedDigests", d.ToString() + " is on digestd.deniedDigests");
      }
    }
  }
  for (const auto& pattern : org_.deny_references) {
    if (::fnmatch(pattern.c_str(), r.c_str(), 0) == 0 ||
        ::fnmatch(pattern.c_str(), ref.Name().c_str(), 0) == 0) {
      return Deny("digestd", "denyReferences",
                  r + " matches digestd.denyReferences pattern " + Quote(pattern));
    }
  }
  return Decision{.allowed = true, .scope = "digestd", .requirement = "preCheck",
                  .reason = "org rules allow " + r};
}

Decision Policy::Evaluate(const Reference& ref, const Digest& manifest_digest,
                          const Evidence& evidence, const TrustRoot* trust,
                          std::int64_t now) const {
  if (ref.has_digest() && *ref.digest() != manifest_digest) {
    return Deny("digestd", "digest",
                "manifest digest " + manifest_digest.ToString() + " is not the digest " +
                    ref.digest()->ToString() + " the reference names");
  }
  if (Decision pre = PreCheck(ref); !pre.allowed) return pre;
  for (const auto& d : org_.denied_digests) {
    if (d == manifest_digest) {
      return Deny("digestd", "deniedDigests", d.ToString() + " is on digestd.deniedDigests");
    }
  }

  const auto [scope, reqs] = ScopeFor(ref);
  std::string signer;
  for (const auto& req : *reqs) {
    switch (req.type) {
      case RequirementType::kReject:
        return Deny(scope, "reject", "the scope rejects every image");
      case RequirementType::kInsecureAcceptAnything:
        continue;
      case RequirementType::kSigstoreSigned:
        break;
    }
    std::vector<std::string> why;
    const auto cands = Candidates(req.keys, req.key_ids, trust, why);
    std::optional<std::string> accepted;
    if (req.keyless) {
      for (const auto& sig : evidence.signatures) {
        if (accepted) break;
        accepted = AcceptKeylessSignature(sig, *req.keyless, req.identity, ref, manifest_digest,
                                          org_, now, why);
      }
      for (const auto& bundle_json : evidence.bundles) {
        if (accepted) break;
        accepted = AcceptKeylessBundle(bundle_json, *req.keyless, kCosignSignPredicate,
                                       manifest_digest, org_, why);
      }
    } else {
      for (const auto& sig : evidence.signatures) {
        if (accepted) break;
        if (sig.media_type != media::kCosignSimpleSigning) {
          why.push_back("signature layer has media type " + Quote(sig.media_type));
          continue;
        }
        auto ann = sig.annotations.find(std::string(kCosignSignatureAnnotation));
        if (ann == sig.annotations.end()) {
          why.push_back("signature layer lacks the " + std::string(kCosignSignatureAnnotation) +
                        " annotation");
          continue;
        }
        auto raw = Base64Decode(ann->second);
        if (!raw) {
          why.push_back("signature annotation: " + raw.error().context());
          continue;
        }
        bool verified = false;
        for (const auto& c : cands) {
          if (!c.key->Verify(sig.payload, *raw)) continue;
          verified = true;
          if (auto u = Unusable(c, trust, org_, ref, now)) {
            why.push_back(*u);
            continue;
          }
          auto payload = ParseSimpleSigningPayload(sig.payload);
          if (!payload) {
            why.push_back(payload.error().context());
            continue;
          }
          if (payload->manifest_digest != manifest_digest) {
            why.push_back("signature by " + Quote(c.id) + " is for " +
                          payload->manifest_digest.ToString() + ", not for " +
                          manifest_digest.ToString());
            continue;
          }
          if (auto m = MatchSignedIdentity(req.identity, ref, payload->docker_reference); !m) {
            why.push_back(m.error().context());
            continue;
          }
          accepted = c.id;
          break;
        }
        if (!verified) why.push_back("a signature does not verify with any configured key");
      }
      for (const auto& bundle_json : evidence.bundles) {
        if (accepted) break;
        auto bundle = ParseSigstoreBundle(bundle_json);
        if (!bundle) {
          why.push_back(bundle.error().context());
          continue;
        }
        if (!bundle->dsse) {
          why.push_back("bundle without a DSSE envelope cannot sign an image");
          continue;
        }
        // The cosign v3 statement binds the manifest digest only; the reference is bound by the
        // key's scopes in the trust file (see docs/policy.md).
        accepted = AcceptDsse(*bundle->dsse, manifest_digest, kCosignSignPredicate, cands, trust,
                              org_, ref, now, why);
      }
    }
    if (!accepted) {
      if (evidence.signatures.empty() && evidence.bundles.empty()) {
        why.insert(why.begin(), "no signatures found");
      }
      // The reference and digest are the caller's to say (the pull's error, the audit event's
      // own fields): the reason says only why.
      std::string reason = "no accepted signature";
      if (!why.empty()) {
        reason += ": ";
        // Deduplicate while keeping order: repeated signatures repeat their reasons.
        std::set<std::string> seen;
        bool first = true;
        for (const auto& w : why) {
          if (!seen.insert(w).second) continue;
          if (!first) reason += "; ";
          reason += w;
          first = false;
        }
      }
      return Deny(scope, "sigstoreSigned", reason);
    }
    signer = *accepted;
  }

  for (const auto& att : org_.required_attestations) {
    std::vector<std::string> why;
    const auto cands = Candidates(att.keys, att.key_ids, trust, why);
    std::optional<std::string> ok;
    for (const auto& text : evidence.attestations) {
      if (ok) break;
      if (att.keyless) {
        ok = AcceptKeylessBundle(text, *att.keyless, att.predicate_type, manifest_digest, org_, why);
        continue;
      }
      if (text.find("\"mediaType\"") != std::string::npos &&
          text.find("verificationMaterial") != std::string::npos) {
        auto bundle = ParseSigstoreBundle(text);
        if (!bundle || !bundle->dsse) {
          why.push_back(bundle ? "bundle has no DSSE envelope" : bundle.error().context());
          continue;
        }
        ok = AcceptDsse(*bundle->dsse, manifest_digest, att.predicate_type, cands, trust, org_,
                        ref, now, why);
      } else {
        auto env = ParseDsseEnvelope(text);
        if (!env) {
          why.push_back(env.error().context());
          continue;
        }
        ok = AcceptDsse(*env, manifest_digest, att.predicate_type, cands, trust, org_, ref, now,
                        why);
      }
    }
    if (!ok) {
      std::string reason = "required attestation " + Quote(att.predicate_type) + " missing";
      if (!why.empty()) reason += ": " + why.front();
      return Deny("digestd", "requiredAttestations", reason);
    }
  }

  std::string reason = "allowed by " + scope;
  if (!signer.empty()) reason += ", signed by " + Quote(signer);
  return Decision{.allowed = true,
                  .scope = scope,
                  .requirement = signer.empty() ? "insecureAcceptAnything" : "sigstoreSigned",
                  .signer = signer,
                  .reason = reason};
}

std::optional<bool> Policy::DeniesKeylessSigner(std::string_view signer_id) const {
  BundleVerdict v;
  if (signer_id.starts_with("pki ")) {
    v.identity = std::string(signer_id.substr(4));
    v.issuer = "pki";
  } else if (signer_id.starts_with("keyless ") && signer_id.ends_with(")")) {
    const std::size_t open = signer_id.rfind(" (");
    if (open == std::string_view::npos || open < 8) return std::nullopt;
    v.identity = std::string(signer_id.substr(8, open - 8));
    v.issuer = std::string(signer_id.substr(open + 2, signer_id.size() - open - 3));
  } else {
    return std::nullopt;
  }
  return IsDeniedKeyless(org_, v);
}

Decision Policy::Explain(const Reference& ref) const {
  Decision d = PreCheck(ref);
  if (!d.allowed) return d;
  const auto [scope, reqs] = ScopeFor(ref);
  d.scope = scope;
  d.requirement = "insecureAcceptAnything";
  d.reason = ref.String() + " is allowed without a signature (scope " + scope + ")";
  for (const auto& r : *reqs) {
    if (r.type == RequirementType::kReject) {
      d.allowed = false;
      d.requirement = "reject";
      d.reason = "the scope rejects every image";
      break;
    }
    if (r.type == RequirementType::kSigstoreSigned) {
      d.requirement = "sigstoreSigned";
      std::string keys;
      for (const auto& k : r.keys) keys += (keys.empty() ? "" : ", ") + k.label;
      for (const auto& k : r.key_ids) keys += (keys.empty() ? "" : ", ") + k;
      d.reason = ref.String() + " is allowed if signed by one of [" + keys + "] (scope " + scope + ")";
      if (r.keyless) {
        d.reason = ref.String() + " is allowed if signed keyless by " + Quote(r.keyless->subject) +
                   " (issuer " + Quote(r.keyless->issuer) + ", " + r.keyless->root_label +
                   ") (scope " + scope + ")";
      }
    }
  }
  return d;
}

}  // namespace digestd::verify
