#include "verify/cosign.h"

#include "verify/base64.h"
#include "verify/json_strict.h"

namespace digestd::verify {
namespace {

using nlohmann::json;

Error Bad(std::string_view what, std::string why) {
  return MakeError(Module::kVerify, Errc::kInvalidArgument, std::string(what) + ": " + why);
}

Result<std::string> B64Field(const json& obj, std::string_view field, std::string_view what) {
  DIGESTD_ASSIGN_OR_RETURN(std::string text, JsonString(obj, field, what));
  auto raw = Base64Decode(text);
  if (!raw) return Bad(what, "field \"" + std::string(field) + "\": " + raw.error().context());
  return raw;
}

}  // namespace

Result<SimpleSigningPayload> ParseSimpleSigningPayload(std::string_view payload) {
  constexpr std::string_view kWhat = "simple signing payload";
  if (payload.size() > kMaxSignaturePayload) {
    return MakeError(Module::kVerify, Errc::kTooLarge, std::string(kWhat) + " over 64 KiB");
  }
  DIGESTD_ASSIGN_OR_RETURN(json j, ParseJsonStrict(payload, kWhat));
  if (!j.is_object()) return Bad(kWhat, "not a JSON object");
  DIGESTD_RETURN_IF_ERROR(JsonOnlyKeys(j, {"critical", "optional"}, kWhat));
  auto critical = j.find("critical");
  if (critical == j.end() || !critical->is_object()) return Bad(kWhat, "missing critical");
  DIGESTD_RETURN_IF_ERROR(JsonOnlyKeys(*critical, {"identity", "image", "type"}, "critical"));
  DIGESTD_ASSIGN_OR_RETURN(std::string type, JsonString(*critical, "type", "critical"));
  if (type != kCosignSignatureType) {
    return Bad(kWhat, "critical.type is " + Quote(type) + ", want \"" +
                          std::string(kCosignSignatureType) + "\"");
  }
  auto identity = critical->find("identity");
  if (identity == critical->end() || !identity->is_object()) {
    return Bad(kWhat, "missing critical.identity");
  }
  DIGESTD_RETURN_IF_ERROR(JsonOnlyKeys(*identity, {"docker-reference"}, "critical.identity"));
  auto image = critical->find("image");
  if (image == critical->end() || !image->is_object()) return Bad(kWhat, "missing critical.image");
  DIGESTD_RETURN_IF_ERROR(JsonOnlyKeys(*image, {"docker-manifest-digest"}, "critical.image"));
  DIGESTD_ASSIGN_OR_RETURN(std::string digest_text,
                           JsonString(*image, "docker-manifest-digest", "critical.image"));
  auto digest = Digest::Parse(digest_text);
  if (!digest) return Bad(kWhat, digest.error().context());
  SimpleSigningPayload out{.manifest_digest = std::move(*digest)};
  DIGESTD_ASSIGN_OR_RETURN(out.docker_reference,
                           JsonString(*identity, "docker-reference", "critical.identity"));
  auto optional = j.find("optional");
  if (optional != j.end() && !optional->is_null()) {
    if (!optional->is_object()) return Bad(kWhat, "optional must be an object or null");
    if (auto c = optional->find("creator"); c != optional->end() && !c->is_null()) {
      if (!c->is_string()) return Bad(kWhat, "optional.creator must be a string");
      out.creator = c->get<std::string>();
    }
    if (auto t = optional->find("timestamp"); t != optional->end() && !t->is_null()) {
      if (!t->is_number_integer()) return Bad(kWhat, "optional.timestamp must be an integer");
      out.timestamp = t->get<std::int64_t>();
    }
  }
  return out;
}

Result<SimpleSignature> ParseContainersSigstoreSignature(std::string_view file) {
  constexpr std::string_view kWhat = "containers sigstore signature";
  constexpr std::string_view kPrefix("\0sigstore-json\n", 15);
  if (!file.starts_with(kPrefix)) return Bad(kWhat, "missing \\x00sigstore-json header");
  DIGESTD_ASSIGN_OR_RETURN(json j, ParseJsonStrict(file.substr(kPrefix.size()), kWhat));
  if (!j.is_object()) return Bad(kWhat, "not a JSON object");
  DIGESTD_RETURN_IF_ERROR(JsonOnlyKeys(j, {"mimeType", "payload", "annotations"}, kWhat));
  SimpleSignature sig;
  DIGESTD_ASSIGN_OR_RETURN(sig.media_type, JsonString(j, "mimeType", kWhat));
  DIGESTD_ASSIGN_OR_RETURN(sig.payload, B64Field(j, "payload", kWhat));
  auto ann = j.find("annotations");
  if (ann != j.end() && !ann->is_null()) {
    if (!ann->is_object()) return Bad(kWhat, "annotations must be an object");
    for (auto it = ann->begin(); it != ann->end(); ++it) {
      if (!it->is_string()) return Bad(kWhat, "annotation values must be strings");
      sig.annotations.emplace(it.key(), it->get<std::string>());
    }
  }
  return sig;
}

static Result<DsseEnvelope> ParseDsseEnvelopeJson(const json& j, std::string_view what) {
  if (!j.is_object()) return Bad(what, "not a JSON object");
  DsseEnvelope env;
  DIGESTD_ASSIGN_OR_RETURN(env.payload_type, JsonString(j, "payloadType", what));
  DIGESTD_ASSIGN_OR_RETURN(env.payload, B64Field(j, "payload", what));
  auto sigs = j.find("signatures");
  if (sigs == j.end() || !sigs->is_array()) return Bad(what, "signatures missing");
  if (sigs->size() > 16) return Bad(what, "too many signatures");
  for (const auto& s : *sigs) {
    if (!s.is_object()) return Bad(what, "signature entry not an object");
    DsseSignature sig;
    DIGESTD_ASSIGN_OR_RETURN(sig.keyid, JsonString(s, "keyid", what, false));
    DIGESTD_ASSIGN_OR_RETURN(sig.sig, B64Field(s, "sig", what));
    env.signatures.push_back(std::move(sig));
  }
  return env;
}

Result<DsseEnvelope> ParseDsseEnvelope(std::string_view json_text) {
  constexpr std::string_view kWhat = "DSSE envelope";
  DIGESTD_ASSIGN_OR_RETURN(json j, ParseJsonStrict(json_text, kWhat, {.max_bytes = kMaxBundle}));
  return ParseDsseEnvelopeJson(j, kWhat);
}

std::string Pae(std::string_view payload_type, std::string_view payload) {
  std::string out = "DSSEv1 ";
  out += std::to_string(payload_type.size());
  out += ' ';
  out += payload_type;
  out += ' ';
  out += std::to_string(payload.size());
  out += ' ';
  out += payload;
  return out;
}

Result<InTotoStatement> ParseInTotoStatement(std::string_view payload) {
  constexpr std::string_view kWhat = "in-toto statement";
  DIGESTD_ASSIGN_OR_RETURN(json j, ParseJsonStrict(payload, kWhat, {.max_bytes = kMaxBundle}));
  if (!j.is_object()) return Bad(kWhat, "not a JSON object");
  InTotoStatement st;
  DIGESTD_ASSIGN_OR_RETURN(st.type, JsonString(j, "_type", kWhat));
  if (!st.type.starts_with("https://in-toto.io/Statement/")) {
    return Bad(kWhat, "_type " + Quote(st.type) + " is not an in-toto statement");
  }
  DIGESTD_ASSIGN_OR_RETURN(st.predicate_type, JsonString(j, "predicateType", kWhat));
  auto subjects = j.find("subject");
  if (subjects == j.end() || !subjects->is_array()) return Bad(kWhat, "subject missing");
  if (subjects->size() > 1024) return Bad(kWhat, "too many subjects");
  for (const auto& s : *subjects) {
    if (!s.is_object()) return Bad(kWhat, "subject entry not an object");
    InTotoSubject sub;
    DIGESTD_ASSIGN_OR_RETURN(sub.name, JsonString(s, "name", kWhat, false));
    auto d = s.find("digest");
    if (d == s.end() || !d->is_object()) return Bad(kWhat, "subject without digest");
    for (auto it = d->begin(); it != d->end(); ++it) {
      if (!it->is_string()) return Bad(kWhat, "subject digest value not a string");
      sub.digest.emplace(it.key(), it->get<std::string>());
    }
    st.subjects.push_back(std::move(sub));
  }
  return st;
}

bool StatementCovers(const InTotoStatement& st, const Digest& d) {
  const std::string alg(ToString(d.algorithm()));
  for (const auto& s : st.subjects) {
    auto it = s.digest.find(alg);
    if (it != s.digest.end() && it->second == d.hex()) return true;
  }
  return false;
}

Result<SigstoreBundle> ParseSigstoreBundle(std::string_view json_text) {
  constexpr std::string_view kWhat = "sigstore bundle";
  DIGESTD_ASSIGN_OR_RETURN(json j, ParseJsonStrict(json_text, kWhat, {.max_bytes = kMaxBundle}));
  if (!j.is_object()) return Bad(kWhat, "not a JSON object");
  SigstoreBundle b;
  DIGESTD_ASSIGN_OR_RETURN(b.media_type, JsonString(j, "mediaType", kWhat));
  static constexpr std::string_view kKnown[] = {
      "application/vnd.dev.sigstore.bundle+json;version=0.1",
      "application/vnd.dev.sigstore.bundle+json;version=0.2",
      "application/vnd.dev.sigstore.bundle+json;version=0.3",
      "application/vnd.dev.sigstore.bundle.v0.3+json"};
  bool known = false;
  for (auto k : kKnown) known = known || b.media_type == k;
  if (!known) return Bad(kWhat, "unknown bundle mediaType " + Quote(b.media_type));
  auto vm = j.find("verificationMaterial");
  if (vm == j.end() || !vm->is_object()) return Bad(kWhat, "verificationMaterial missing");
  if (auto pk = vm->find("publicKey"); pk != vm->end() && pk->is_object()) {
    DIGESTD_ASSIGN_OR_RETURN(b.public_key_hint, JsonString(*pk, "hint", kWhat, false));
  }
  b.has_certificate = vm->contains("certificate") || vm->contains("x509CertificateChain");
  const bool has_dsse = j.contains("dsseEnvelope");
  const bool has_msg = j.contains("messageSignature");
  if (has_dsse == has_msg) {
    return Bad(kWhat, "exactly one of dsseEnvelope and messageSignature is required");
  }
  if (has_dsse) {
    DIGESTD_ASSIGN_OR_RETURN(b.dsse, ParseDsseEnvelopeJson(j["dsseEnvelope"], "bundle DSSE"));
    if (b.dsse->signatures.size() != 1) {
      return Bad(kWhat, "a bundle's DSSE envelope must carry exactly one signature, it has " +
                            std::to_string(b.dsse->signatures.size()));
    }
  } else {
    const json& ms = j["messageSignature"];
    if (!ms.is_object()) return Bad(kWhat, "messageSignature not an object");
    DIGESTD_ASSIGN_OR_RETURN(b.message_signature, B64Field(ms, "signature", kWhat));
    if (auto md = ms.find("messageDigest"); md != ms.end() && md->is_object()) {
      DIGESTD_ASSIGN_OR_RETURN(std::string alg, JsonString(*md, "algorithm", kWhat));
      DIGESTD_ASSIGN_OR_RETURN(std::string raw, B64Field(*md, "digest", kWhat));
      DigestAlgorithm want;
      if (alg == "SHA2_256") {
        want = DigestAlgorithm::kSha256;
      } else if (alg == "SHA2_512") {
        want = DigestAlgorithm::kSha512;
      } else {
        return Bad(kWhat, "unsupported messageDigest algorithm " + Quote(alg));
      }
      if (raw.size() * 2 != HexLength(want)) return Bad(kWhat, "messageDigest has the wrong length");
      b.message_digest = Digest::FromBytes(want, reinterpret_cast<const unsigned char*>(raw.data()),
                                           raw.size());
    }
  }
  return b;
}

}  // namespace digestd::verify
