#include "verify/keyless.h"

#include <openssl/x509v3.h>

#include <algorithm>
#include <set>

#include <nlohmann/json.hpp>

#include "verify/base64.h"
#include "verify/hasher.h"
#include "verify/json_strict.h"
#include "verify/rfc3161.h"
#include "verify/tlog.h"
#include "verify/trust.h"
#include "verify/x509.h"

namespace digestd::verify {
namespace {

using nlohmann::json;

constexpr std::size_t kMaxTimestamps = 32;
constexpr std::size_t kMaxTlogEntries = 32;

Error Fail(BundleFailure f, const std::string& why) {
  return MakeError(Module::kVerify, Errc::kInvalidArgument, std::string(ToString(f)) + ": " + why);
}
Error Malformed(const std::string& why) { return Fail(BundleFailure::kMalformed, why); }

// Raw digest bytes of `data` (the existing Hasher, as bytes).
std::string RawDigest(DigestAlgorithm alg, std::string_view data) {
  return DigestBytes(Hasher::Of(alg, data));
}

// What the bundle says, parsed strictly.
struct Parsed {
  int version = 0;  // 1, 2, 3
  std::optional<CertificatePtr> leaf;
  std::vector<CertificatePtr> intermediates;  // from x509CertificateChain, after the leaf
  std::vector<CertificatePtr> roots_in_chain;  // self-signed certificates in that chain
  bool key_signed = false;
  std::vector<TlogEntry> tlog;
  std::vector<std::string> timestamps;  // DER TimeStampResp
  std::optional<DsseEnvelope> dsse;
  std::optional<Digest> message_digest;
  std::string signature;  // raw: the message signature or the DSSE signature
};

Result<std::string> B64(const json& obj, std::string_view field, const std::string& where) {
  auto it = obj.find(field);
  if (it == obj.end() || !it->is_string()) {
    return Malformed(where + ": \"" + std::string(field) + "\" missing or not a string");
  }
  auto raw = Base64Decode(it->get<std::string>());
  if (!raw) return Malformed(where + ": \"" + std::string(field) + "\" is not base64");
  return *raw;
}

Result<Parsed> ParseBundle(std::string_view text) {
  auto j = ParseJsonStrict(text, "sigstore bundle", {.max_bytes = kMaxBundle});
  if (!j) return Malformed(j.error().context());
  if (!j->is_object()) return Malformed("bundle is not a JSON object");
  Parsed b;
  auto mt = j->find("mediaType");
  if (mt == j->end() || !mt->is_string()) return Malformed("mediaType missing");
  const std::string media = *mt;
  if (media == "application/vnd.dev.sigstore.bundle+json;version=0.1") {
    b.version = 1;
  } else if (media == "application/vnd.dev.sigstore.bundle+json;version=0.2") {
    b.version = 2;
  } else if (media == "application/vnd.dev.sigstore.bundle+json;version=0.3" ||
             media == "application/vnd.dev.sigstore.bundle.v0.3+json") {
    b.version = 3;
  } else {
    return Malformed("unknown bundle mediaType " + Quote(media));
  }
  auto vm = j->find("verificationMaterial");
  if (vm == j->end() || !vm->is_object()) return Malformed("verificationMaterial missing");
  const int kinds = static_cast<int>(vm->contains("publicKey")) +
                    static_cast<int>(vm->contains("x509CertificateChain")) +
                    static_cast<int>(vm->contains("certificate"));
  if (kinds != 1) {
    return Malformed("verificationMaterial needs exactly one of publicKey, x509CertificateChain, "
                     "certificate");
  }
  if (auto chain = vm->find("x509CertificateChain"); chain != vm->end()) {
    if (b.version == 3) {
      // v0.3 carries the leaf alone; still read it, as sigstore's clients do.
    }
    auto certs = chain->is_object() ? chain->find("certificates") : chain->end();
    if (certs == chain->end() || !certs->is_array() || certs->empty()) {
      return Malformed("x509CertificateChain has no certificates");
    }
    if (certs->size() > 10) return Malformed("x509CertificateChain over 10 certificates");
    CertificatePtr previous;
    for (std::size_t i = 0; i < certs->size(); ++i) {
      DIGESTD_ASSIGN_OR_RETURN(std::string der,
                               B64((*certs)[i], "rawBytes", "x509CertificateChain"));
      auto c = Certificate::FromDer(der);
      if (!c) return Malformed("certificate " + std::to_string(i) + ": " + c.error().context());
      // The chain is ordered leaf first, each certificate issued by the next.
      if (previous && X509_check_issued(static_cast<X509*>((*c)->x509()),
                                        static_cast<X509*>(previous->x509())) != X509_V_OK) {
        return Fail(BundleFailure::kCertificateChain,
                    "the bundle's chain is out of order: certificate " + std::to_string(i) +
                        " did not issue certificate " + std::to_string(i - 1));
      }
      previous = *c;
      if (i == 0) {
        b.leaf = *c;
      } else {
        if ((*c)->SelfSigned()) {
          b.roots_in_chain.push_back(*c);  // judged against the trusted root later
        } else {
          b.intermediates.push_back(*c);
        }
      }
    }
  } else if (auto cert = vm->find("certificate"); cert != vm->end()) {
    if (!cert->is_object()) return Malformed("certificate is not an object");
    DIGESTD_ASSIGN_OR_RETURN(std::string der, B64(*cert, "rawBytes", "certificate"));
    auto c = Certificate::FromDer(der);
    if (!c) return Malformed("certificate: " + c.error().context());
    b.leaf = *c;
  } else {
    b.key_signed = true;
  }
  if (auto tl = vm->find("tlogEntries"); tl != vm->end()) {
    if (!tl->is_array() || tl->size() > kMaxTlogEntries) {
      return Malformed("tlogEntries is not an array of at most 32");
    }
    for (const auto& e : *tl) {
      auto entry = ParseTlogEntry(e);
      if (!entry) return Malformed(entry.error().context());
      b.tlog.push_back(std::move(*entry));
    }
  }
  if (auto tv = vm->find("timestampVerificationData"); tv != vm->end() && !tv->is_null()) {
    if (!tv->is_object()) return Malformed("timestampVerificationData is not an object");
    if (auto ts = tv->find("rfc3161Timestamps"); ts != tv->end()) {
      if (!ts->is_array()) return Malformed("rfc3161Timestamps is not an array");
      if (ts->size() > kMaxTimestamps) {
        return Fail(BundleFailure::kTimestamp, "more than 32 RFC 3161 timestamps");
      }
      for (const auto& t : *ts) {
        DIGESTD_ASSIGN_OR_RETURN(std::string der, B64(t, "signedTimestamp", "rfc3161Timestamps"));
        b.timestamps.push_back(std::move(der));
      }
      std::set<std::string> seen(b.timestamps.begin(), b.timestamps.end());
      if (seen.size() != b.timestamps.size()) {
        return Fail(BundleFailure::kTimestamp, "duplicate RFC 3161 timestamps");
      }
    }
  }
  const bool has_dsse = j->contains("dsseEnvelope");
  const bool has_msg = j->contains("messageSignature");
  if (has_dsse == has_msg) return Malformed("exactly one of dsseEnvelope and messageSignature");
  if (has_dsse) {
    auto env = ParseDsseEnvelope((*j)["dsseEnvelope"].dump());
    if (!env) return Malformed(env.error().context());
    if (env->signatures.size() != 1) {
      return Malformed("the DSSE envelope must carry exactly one signature, it has " +
                       std::to_string(env->signatures.size()));
    }
    b.signature = env->signatures[0].sig;
    b.dsse = std::move(*env);
  } else {
    const json& ms = (*j)["messageSignature"];
    if (!ms.is_object()) return Malformed("messageSignature is not an object");
    DIGESTD_ASSIGN_OR_RETURN(b.signature, B64(ms, "signature", "messageSignature"));
    if (auto md = ms.find("messageDigest"); md != ms.end()) {
      if (!md->is_object() || !md->contains("algorithm") || !(*md)["algorithm"].is_string()) {
        return Malformed("messageDigest.algorithm missing");
      }
      const std::string alg = (*md)["algorithm"];
      DIGESTD_ASSIGN_OR_RETURN(std::string raw, B64(*md, "digest", "messageDigest"));
      DigestAlgorithm a;
      if (alg == "SHA2_256") {
        a = DigestAlgorithm::kSha256;
      } else if (alg == "SHA2_512") {
        a = DigestAlgorithm::kSha512;
      } else {
        return Malformed("unsupported messageDigest algorithm " + Quote(alg));
      }
      if (raw.size() * 2 != HexLength(a)) return Malformed("messageDigest has the wrong length");
      b.message_digest =
          Digest::FromBytes(a, reinterpret_cast<const unsigned char*>(raw.data()), raw.size());
    }
  }
  if (b.signature.empty()) return Malformed("empty signature");
  return b;
}

// The verifying key and material both the bundle and its log entries must name.
struct Signer {
  PublicKeyPtr key;
  std::optional<CertificatePtr> cert;
};

// Does a PEM (certificate or public key) in a log body name `signer`?
bool PemNames(std::string_view pem, const Signer& signer) {
  if (signer.cert) {
    auto c = Certificate::FromPem(pem);
    return c && (*c)->der() == (*signer.cert)->der();
  }
  auto k = PublicKey::FromPem(pem);
  return k && (*k)->spki_der() == signer.key->spki_der();
}

Result<json> BodyJson(const TlogEntry& e) {
  auto j = ParseJsonStrict(e.body, "tlog entry body", {.max_bytes = 1u << 20});
  if (!j || !j->is_object()) return Fail(BundleFailure::kTlogBody, "body is not a JSON object");
  if (!j->contains("kind") || (*j)["kind"] != e.kind || !j->contains("apiVersion") ||
      (*j)["apiVersion"] != e.version) {
    return Fail(BundleFailure::kTlogBody, "body kind/apiVersion differ from kindVersion");
  }
  if (!j->contains("spec") || !(*j)["spec"].is_object()) {
    return Fail(BundleFailure::kTlogBody, "body has no spec");
  }
  return (*j)["spec"];
}

// Reads a JSON path of objects, or null.
const json* At(const json& j, std::initializer_list<std::string_view> path) {
  const json* cur = &j;
  for (auto k : path) {
    if (!cur->is_object()) return nullptr;
    auto it = cur->find(k);
    if (it == cur->end()) return nullptr;
    cur = &*it;
  }
  return cur;
}
std::string Str(const json& j, std::initializer_list<std::string_view> path) {
  const json* v = At(j, path);
  return v != nullptr && v->is_string() ? v->get<std::string>() : std::string();
}
std::string B64Str(const json& j, std::initializer_list<std::string_view> path) {
  auto raw = Base64Decode(Str(j, path));
  return raw ? *raw : std::string();
}

// The entry's body must describe this very signature: same digest, signature and signer.
Result<void> MatchBody(const TlogEntry& e, const Parsed& b, const Signer& signer,
                       const std::optional<std::string>& artifact_sha256) {
  DIGESTD_ASSIGN_OR_RETURN(json spec, BodyJson(e));
  auto mismatch = [&](const std::string& what) {
    return Fail(BundleFailure::kTlogBody,
                "the " + e.kind + " " + e.version + " entry's " + what + " differs from the bundle");
  };
  if (e.kind == "hashedrekord" && e.version == "0.0.1") {
    if (b.dsse) return mismatch("kind (a DSSE bundle cannot be a hashedrekord 0.0.1)");
    if (Str(spec, {"data", "hash", "algorithm"}) != "sha256") return mismatch("hash algorithm");
    if (!artifact_sha256 || Str(spec, {"data", "hash", "value"}) != HexEncode(*artifact_sha256)) {
      return mismatch("artifact hash");
    }
    if (B64Str(spec, {"signature", "content"}) != b.signature) return mismatch("signature");
    if (!PemNames(B64Str(spec, {"signature", "publicKey", "content"}), signer)) {
      return mismatch("certificate or key");
    }
    return {};
  }
  if (e.kind == "hashedrekord" && e.version == "0.0.2") {
    const json* v2 = At(spec, {"hashedRekordV002"});
    if (v2 == nullptr) return mismatch("spec");
    if (Str(*v2, {"data", "algorithm"}) != "SHA2_256") return mismatch("digest algorithm");
    // A DSSE envelope is logged as the hash of its PAE (rekor v2 "hashedrekord over DSSE").
    const std::optional<std::string> want =
        b.dsse ? std::optional<std::string>(
                     RawDigest(DigestAlgorithm::kSha256, Pae(b.dsse->payload_type, b.dsse->payload)))
               : artifact_sha256;
    if (!want || B64Str(*v2, {"data", "digest"}) != *want) return mismatch("artifact digest");
    if (B64Str(*v2, {"signature", "content"}) != b.signature) return mismatch("signature");
    if (signer.cert) {
      if (B64Str(*v2, {"signature", "verifier", "x509Certificate", "rawBytes"}) !=
          (*signer.cert)->der()) {
        return mismatch("certificate");
      }
    } else if (B64Str(*v2, {"signature", "verifier", "publicKey", "rawBytes"}) !=
               signer.key->spki_der()) {
      return mismatch("public key");
    }
    return {};
  }
  if (!b.dsse) return mismatch("kind (" + e.kind + " needs a DSSE bundle)");
  const std::string payload_hash = HexEncode(RawDigest(DigestAlgorithm::kSha256, b.dsse->payload));
  if (e.kind == "dsse" && e.version == "0.0.1") {
    if (Str(spec, {"payloadHash", "algorithm"}) != "sha256" ||
        Str(spec, {"payloadHash", "value"}) != payload_hash) {
      return mismatch("payload hash");
    }
    const json* sigs = At(spec, {"signatures"});
    if (sigs == nullptr || !sigs->is_array() || sigs->size() != 1) return mismatch("signatures");
    if (B64Str((*sigs)[0], {"signature"}) != b.signature) return mismatch("signature");
    if (!PemNames(B64Str((*sigs)[0], {"verifier"}), signer)) return mismatch("verifier");
    return {};
  }
  if (e.kind == "intoto" && e.version == "0.0.2") {
    const json* content = At(spec, {"content"});
    if (content == nullptr) return mismatch("content");
    if (Str(*content, {"payloadHash", "algorithm"}) != "sha256" ||
        Str(*content, {"payloadHash", "value"}) != payload_hash) {
      return mismatch("payload hash");
    }
    if (Str(*content, {"envelope", "payloadType"}) != b.dsse->payload_type) {
      return mismatch("payload type");
    }
    const json* sigs = At(*content, {"envelope", "signatures"});
    if (sigs == nullptr || !sigs->is_array() || sigs->size() != 1) return mismatch("signatures");
    // intoto 0.0.2 stores the signature base64-encoded twice.
    auto sig = Base64Decode(B64Str((*sigs)[0], {"sig"}));
    if (!sig || *sig != b.signature) return mismatch("signature");
    if (!PemNames(B64Str((*sigs)[0], {"publicKey"}), signer)) return mismatch("public key");
    return {};
  }
  return Fail(BundleFailure::kTlogBody, "unsupported log entry kind " + Quote(e.kind) + " " +
                                            Quote(e.version));
}

// The keyless checks at one trusted time: validity, chain, usage.
Result<void> CheckLeafAt(const Certificate& leaf, const std::vector<CertificatePtr>& intermediates,
                         const SigstoreTrustedRoot& root, std::int64_t t,
                         const Authority** chained) {
  if (!leaf.ValidAt(t)) {
    return Fail(BundleFailure::kCertificateValidity,
                "trusted time " + FormatRfc3339(t) + " outside the certificate's validity [" +
                    FormatRfc3339(leaf.not_before()) + ", " + FormatRfc3339(leaf.not_after()) + "]");
  }
  std::string last = "no certificate authority of the trusted root is valid at " + FormatRfc3339(t);
  for (const auto& ca : root.certificate_authorities()) {
    if (!ca.valid.Contains(t)) continue;
    Authority with = ca;
    // Intermediates the signature carries are candidates only; anchors come from the root.
    for (const auto& i : intermediates) with.chain_der.insert(with.chain_der.begin(), i->der());
    auto ok = VerifyChainAt(leaf, with, t);
    if (ok) {
      *chained = &ca;
      return {};
    }
    last = ok.error().context() + " (CA " + ca.uri + ")";
  }
  return Fail(BundleFailure::kCertificateChain, last);
}

Result<void> CheckIdentity(const Certificate& leaf, const BundleExpectation& expect,
                           BundleVerdict& v) {
  const auto sans = leaf.SubjectAltNames();
  v.identity = sans.empty() ? std::string() : sans.front();
  v.issuer = leaf.OidcIssuer();
  if (!expect.identity.empty() &&
      std::find(sans.begin(), sans.end(), expect.identity) == sans.end()) {
    return Fail(BundleFailure::kIdentity, "certificate identity " + Quote(v.identity) +
                                              " is not " + Quote(expect.identity));
  }
  if (!expect.issuer.empty() && v.issuer != expect.issuer) {
    return Fail(BundleFailure::kIssuer,
                "certificate issuer " + Quote(v.issuer) + " is not " + Quote(expect.issuer));
  }
  return {};
}

// Keyless checks shared by bundles and the legacy layout, once trusted times are known.
Result<void> CheckKeyless(const Certificate& leaf, const std::vector<CertificatePtr>& intermediates,
                          const SigstoreTrustedRoot& root, const std::vector<std::int64_t>& times,
                          const BundleExpectation& expect, BundleVerdict& v) {
  if (!leaf.HasCodeSigningEku()) {
    return Fail(BundleFailure::kCertificateUsage, "the certificate lacks the code-signing EKU");
  }
  const Authority* chained = nullptr;
  for (std::int64_t t : times) DIGESTD_RETURN_IF_ERROR(CheckLeafAt(leaf, intermediates, root, t, &chained));
  if (!root.ctlogs().empty()) {
    // The SCT's issuer: the certificate that signed the leaf.
    std::vector<CertificatePtr> issuers = intermediates;
    for (const auto& der : chained->chain_der) {
      auto c = Certificate::FromDer(der);
      if (c) issuers.push_back(*c);
    }
    std::string last = "no issuer certificate for the SCT";
    bool ok = false;
    for (const auto& is : issuers) {
      if (X509_check_issued(static_cast<X509*>(is->x509()), static_cast<X509*>(leaf.x509())) != 0) {
        continue;
      }
      auto s = VerifyEmbeddedSct(leaf, *is, root.ctlogs());
      if (s) {
        ok = true;
        break;
      }
      last = s.error().context();
    }
    if (!ok) return Fail(BundleFailure::kSct, last);
  }
  return CheckIdentity(leaf, expect, v);
}

}  // namespace

std::string_view ToString(BundleFailure f) {
  switch (f) {
    case BundleFailure::kMalformed: return "malformed";
    case BundleFailure::kSignature: return "signature";
    case BundleFailure::kArtifact: return "artifact";
    case BundleFailure::kCertificateChain: return "certificate-chain";
    case BundleFailure::kCertificateUsage: return "certificate-usage";
    case BundleFailure::kCertificateValidity: return "certificate-validity";
    case BundleFailure::kIdentity: return "identity";
    case BundleFailure::kIssuer: return "issuer";
    case BundleFailure::kSct: return "sct";
    case BundleFailure::kTlogUnknown: return "tlog-unknown";
    case BundleFailure::kTlogSet: return "tlog-set";
    case BundleFailure::kTlogInclusion: return "tlog-inclusion";
    case BundleFailure::kTlogBody: return "tlog-body";
    case BundleFailure::kTlogMissing: return "tlog-missing";
    case BundleFailure::kTimestamp: return "timestamp";
    case BundleFailure::kNoTrustedTime: return "no-trusted-time";
    case BundleFailure::kKey: return "key";
  }
  return "unknown";
}

Result<BundleVerdict> VerifyBundle(std::string_view bundle_json, const BundleArtifact& artifact,
                                   const SigstoreTrustedRoot& root,
                                   const BundleExpectation& expect) {
  DIGESTD_ASSIGN_OR_RETURN(Parsed b, ParseBundle(bundle_json));
  BundleVerdict v;
  v.keyless = !b.key_signed;

  // 1. Who signed: the given key, or the leaf certificate's key.
  Signer signer;
  if (b.key_signed) {
    if (!expect.key) return Fail(BundleFailure::kKey, "a key-signed bundle needs a public key");
    signer.key = expect.key;
  } else {
    if (expect.key) return Fail(BundleFailure::kKey, "a key was given but the bundle is keyless");
    signer.cert = *b.leaf;
    auto k = (*b.leaf)->Key();
    if (!k) return Fail(BundleFailure::kSignature, "leaf certificate key: " + k.error().context());
    signer.key = *k;
  }

  // 2. The signature over the artifact (or the DSSE PAE) and the artifact binding.
  std::optional<std::string> artifact_sha256;
  if (artifact.bytes) {
    artifact_sha256 = RawDigest(DigestAlgorithm::kSha256, *artifact.bytes);
  } else if (artifact.digest && artifact.digest->algorithm() == DigestAlgorithm::kSha256) {
    artifact_sha256 = DigestBytes(*artifact.digest);
  }
  if (b.dsse) {
    auto ok = signer.key->Verify(Pae(b.dsse->payload_type, b.dsse->payload), b.signature);
    if (!ok) return Fail(BundleFailure::kSignature, "DSSE " + ok.error().context());
    v.payload_type = b.dsse->payload_type;
    v.payload = b.dsse->payload;
    if (b.dsse->payload_type == kInTotoPayloadType) {
      auto st = ParseInTotoStatement(b.dsse->payload);
      if (!st) return Fail(BundleFailure::kArtifact, st.error().context());
      v.statement = std::move(*st);
    }
    if (artifact.bytes || artifact.digest) {
      if (!v.statement) return Fail(BundleFailure::kArtifact, "the DSSE payload is not in-toto");
      std::vector<Digest> want;
      if (artifact.bytes) {
        want.push_back(Hasher::Of(DigestAlgorithm::kSha256, *artifact.bytes));
        want.push_back(Hasher::Of(DigestAlgorithm::kSha512, *artifact.bytes));
      } else {
        want.push_back(*artifact.digest);
      }
      bool covered = false;
      for (const auto& d : want) covered = covered || StatementCovers(*v.statement, d);
      if (!covered) {
        return Fail(BundleFailure::kArtifact, "the artifact is not a subject of the statement");
      }
    }
  } else {
    if (!artifact.bytes && !artifact.digest) {
      return Fail(BundleFailure::kArtifact, "a message signature needs the artifact or its digest");
    }
    if (b.message_digest) {
      const DigestAlgorithm a = b.message_digest->algorithm();
      const bool comparable = artifact.bytes || (artifact.digest && artifact.digest->algorithm() == a);
      if (comparable) {
        const std::string mine = artifact.bytes ? HexEncode(RawDigest(a, *artifact.bytes))
                                                : std::string(artifact.digest->hex());
        if (mine != b.message_digest->hex()) {
          return Fail(BundleFailure::kArtifact,
                      "the bundle's messageDigest is not the artifact's digest");
        }
      }
    }
    // Sigstore hashes the message with the messageDigest's algorithm (SHA-256 by default)
    // whatever the curve, so ECDSA and RSA are checked against that digest; Ed25519 signs the
    // message itself.
    const DigestAlgorithm alg =
        b.message_digest ? b.message_digest->algorithm() : DigestAlgorithm::kSha256;
    Result<void> ok;
    if (artifact.bytes && signer.key->type() == KeyType::kEd25519) {
      ok = signer.key->Verify(*artifact.bytes, b.signature);
    } else if (artifact.bytes) {
      ok = signer.key->VerifyDigest(RawDigest(alg, *artifact.bytes), b.signature);
    } else {
      ok = signer.key->VerifyDigest(DigestBytes(*artifact.digest), b.signature);
    }
    if (!ok) return Fail(BundleFailure::kSignature, ok.error().context());
  }

  // 3. Transparency log entries: known log, matching body, SET and/or inclusion proof.
  if (b.tlog.empty() && !root.tlogs().empty()) {
    return Fail(BundleFailure::kTlogMissing, "the bundle has no transparency log entry");
  }
  for (const auto& e : b.tlog) {
    const LogKey* log = root.FindTlog(e.log_id);
    if (log == nullptr) {
      return Fail(BundleFailure::kTlogUnknown,
                  "entry " + std::to_string(e.log_index) + " is from a log not in the trusted root");
    }
    DIGESTD_RETURN_IF_ERROR(MatchBody(e, b, signer, artifact_sha256));
    if (b.version >= 2 && !e.proof) {
      return Fail(BundleFailure::kTlogInclusion, "a v0.2+ bundle's entry needs an inclusion proof");
    }
    if (b.version == 1 && !e.set) {
      return Fail(BundleFailure::kTlogSet, "a v0.1 bundle's entry needs a signed entry timestamp");
    }
    if (e.proof) {
      auto ok = VerifyInclusion(e, *log);
      if (!ok) return Fail(BundleFailure::kTlogInclusion, ok.error().context());
    }
    if (e.set) {
      auto ok = VerifySignedEntryTimestamp(e, *log);
      if (!ok) return Fail(BundleFailure::kTlogSet, ok.error().context());
      if (!log->valid.Contains(*e.integrated_time)) {
        return Fail(BundleFailure::kTlogSet, "integrated time outside the log key's validity");
      }
      // Only a SET makes integratedTime a trusted time; a proof alone does not.
      v.trusted_times.push_back(*e.integrated_time);
    }
  }

  // 4. RFC 3161 timestamps over the signature; ones that do not verify are ignored.
  std::string ts_error;
  for (const auto& der : b.timestamps) {
    auto t = VerifyRfc3161Timestamp(der, b.signature, root.timestamp_authorities());
    if (t) {
      v.trusted_times.push_back(*t);
    } else {
      ts_error = t.error().context();
    }
  }
  if (v.trusted_times.empty()) {
    return Fail(BundleFailure::kNoTrustedTime,
                "no verified signed entry timestamp or RFC 3161 timestamp" +
                    (ts_error.empty() ? std::string() : " (" + ts_error + ")"));
  }

  if (b.key_signed && expect.key_valid) {
    for (std::int64_t t : v.trusted_times) {
      if (!expect.key_valid->Contains(t)) {
        return Fail(BundleFailure::kKey, "signing time " + FormatRfc3339(t) +
                                             " is outside the public key's validity window");
      }
    }
  }

  // 5. Keyless: the certificate at every trusted time, its SCT and identity. A root inside the
  // bundle's chain is refused unless it is a copy of a root the trusted root already holds (v0.1
  // bundles often end their chain with Fulcio's root): a bundle never brings its own anchor.
  for (const auto& r : b.roots_in_chain) {
    bool known = false;
    for (const auto& ca : root.certificate_authorities()) {
      known = known || (!ca.chain_der.empty() && ca.chain_der.back() == r->der());
    }
    if (!known) {
      return Fail(BundleFailure::kCertificateChain,
                  "the bundle's chain contains a root certificate the trusted root does not hold");
    }
  }
  if (!b.key_signed) {
    DIGESTD_RETURN_IF_ERROR(CheckKeyless(**b.leaf, b.intermediates, root, v.trusted_times, expect, v));
  }
  return v;
}

namespace {

// The signature, leaf and candidate intermediates of cosign's certificate layout.
struct CosignCertLayer {
  std::string signature;
  CertificatePtr leaf;
  std::vector<CertificatePtr> intermediates;
  PublicKeyPtr key;
};

const std::string* Annotation(const SimpleSignature& sig, std::string_view key) {
  auto it = sig.annotations.find(std::string(key));
  return it == sig.annotations.end() ? nullptr : &it->second;
}

Result<CosignCertLayer> ReadCosignCertLayer(const SimpleSignature& sig) {
  const std::string* sig_b64 = Annotation(sig, kCosignSignatureAnnotation);
  const std::string* cert_pem = Annotation(sig, "dev.sigstore.cosign/certificate");
  if (sig_b64 == nullptr) return Malformed("no signature annotation");
  if (cert_pem == nullptr) return Malformed("no certificate annotation");
  // Some signers wrap the base64 at 76 columns (openssl base64; Go's decoder skips line
  // breaks): the signature bytes are the same, and the annotation itself is not signed.
  std::string b64;
  for (char c : *sig_b64) {
    if (c != '\n' && c != '\r') b64.push_back(c);
  }
  auto signature = Base64Decode(b64);
  if (!signature) return Malformed("signature annotation is not base64");
  auto leaf = Certificate::FromPem(*cert_pem);
  if (!leaf) return Malformed("certificate annotation: " + leaf.error().context());
  CosignCertLayer out{*signature, *leaf, {}, nullptr};
  if (const std::string* chain = Annotation(sig, "dev.sigstore.cosign/chain")) {
    auto certs = Certificate::ChainFromPem(*chain);
    if (!certs) return Malformed("chain annotation: " + certs.error().context());
    // The chain annotation ends with the root; only configured anchors count.
    for (const auto& c : *certs) {
      if (!c->SelfSigned()) out.intermediates.push_back(c);
    }
  }
  auto key = out.leaf->Key();
  if (!key) return Fail(BundleFailure::kSignature, "certificate key: " + key.error().context());
  out.key = *key;
  if (auto ok = out.key->Verify(sig.payload, out.signature); !ok) {
    return Fail(BundleFailure::kSignature, ok.error().context());
  }
  return out;
}

}  // namespace

Result<BundleVerdict> VerifyCosignPki(const SimpleSignature& sig, const PkiTrust& pki,
                                      std::int64_t now) {
  DIGESTD_ASSIGN_OR_RETURN(CosignCertLayer layer, ReadCosignCertLayer(sig));
  if (layer.leaf->HasEku() && !layer.leaf->HasCodeSigningEku()) {
    return Fail(BundleFailure::kCertificateUsage,
                "the certificate's extended key usage excludes code signing");
  }
  std::string last = "no root configured";
  bool chained = false;
  for (const auto& root : pki.roots) {
    Authority with = root;
    for (const auto& der : pki.intermediates_der) with.chain_der.insert(with.chain_der.begin(), der);
    for (const auto& i : layer.intermediates) with.chain_der.insert(with.chain_der.begin(), i->der());
    auto ok = VerifyChainAt(*layer.leaf, with, now, /*strict=*/false);
    if (ok) {
      chained = true;
      break;
    }
    last = ok.error().context();
  }
  if (!chained) return Fail(BundleFailure::kCertificateChain, last);
  BundleVerdict v;
  v.keyless = true;
  v.trusted_times.push_back(now);
  const auto emails = layer.leaf->EmailSans();
  const auto hosts = layer.leaf->DnsSans();
  auto has = [](const std::vector<std::string>& l, const std::string& x) {
    return std::find(l.begin(), l.end(), x) != l.end();
  };
  if (!pki.subject_email.empty() && !has(emails, pki.subject_email)) {
    return Fail(BundleFailure::kIdentity, "certificate has no email SAN " + Quote(pki.subject_email));
  }
  if (!pki.subject_hostname.empty() && !has(hosts, pki.subject_hostname)) {
    return Fail(BundleFailure::kIdentity,
                "certificate has no DNS SAN " + Quote(pki.subject_hostname));
  }
  v.identity = !pki.subject_email.empty() ? pki.subject_email : pki.subject_hostname;
  v.issuer = "pki";
  return v;
}

Result<BundleVerdict> VerifyCosignKeyless(const SimpleSignature& sig, const SigstoreTrustedRoot& root,
                                          const BundleExpectation& expect) {
  DIGESTD_ASSIGN_OR_RETURN(CosignCertLayer layer, ReadCosignCertLayer(sig));
  BundleVerdict v;
  v.keyless = true;
  const std::string* bundle = Annotation(sig, "dev.sigstore.cosign/bundle");
  if (bundle == nullptr) {
    return Fail(BundleFailure::kNoTrustedTime, "no Rekor bundle annotation (no signed entry "
                                               "timestamp, so no trusted signing time)");
  }
  auto j = ParseJsonStrict(*bundle, "cosign Rekor bundle", {.max_bytes = 256u << 10});
  if (!j || !j->is_object()) return Malformed("Rekor bundle annotation is not a JSON object");
  const json* payload = At(*j, {"Payload"});
  if (payload == nullptr || !payload->is_object()) return Malformed("Rekor bundle has no Payload");
  TlogEntry e;
  e.kind = "hashedrekord";
  e.version = "0.0.1";
  {
    const json* set = At(*j, {"SignedEntryTimestamp"});
    auto raw = set != nullptr && set->is_string() ? Base64Decode(set->get<std::string>())
                                                  : Result<std::string>(Malformed("no SET"));
    if (!raw) return Fail(BundleFailure::kTlogSet, "Rekor bundle has no readable SET");
    e.set = *raw;
    e.body_b64 = Str(*payload, {"body"});
    auto body = Base64Decode(e.body_b64);
    if (!body) return Malformed("Rekor bundle body is not base64");
    e.body = *body;
    const json* it = At(*payload, {"integratedTime"});
    const json* li = At(*payload, {"logIndex"});
    if (it == nullptr || !it->is_number_integer() || li == nullptr || !li->is_number_integer() ||
        it->get<std::int64_t>() <= 0 || li->get<std::int64_t>() < 0) {
      return Malformed("Rekor bundle integratedTime/logIndex missing or invalid");
    }
    e.integrated_time = it->get<std::int64_t>();
    e.log_index = li->get<std::int64_t>();
    const std::string log_hex = Str(*payload, {"logID"});
    if (log_hex.size() != 64 ||
        log_hex.find_first_not_of("0123456789abcdef") != std::string::npos) {
      return Malformed("Rekor bundle logID is not 64 lowercase hex digits");
    }
    e.log_id = *HexDecode(log_hex);
  }
  const LogKey* log = root.FindTlog(e.log_id);
  if (log == nullptr) return Fail(BundleFailure::kTlogUnknown, "SET from a log not trusted");
  if (auto ok = VerifySignedEntryTimestamp(e, *log); !ok) {
    return Fail(BundleFailure::kTlogSet, ok.error().context());
  }
  if (!log->valid.Contains(*e.integrated_time)) {
    return Fail(BundleFailure::kTlogSet, "integrated time outside the log key's validity");
  }
  // The body kind may be hashedrekord (or the older rekord, which we do not accept).
  {
    auto kind = ParseJsonStrict(e.body, "tlog entry body", {.max_bytes = 1u << 20});
    if (kind && kind->is_object() && kind->contains("apiVersion") &&
        (*kind)["apiVersion"].is_string()) {
      e.version = (*kind)["apiVersion"];
    }
  }
  Parsed as_bundle;
  as_bundle.signature = layer.signature;
  Signer signer{layer.key, layer.leaf};
  DIGESTD_RETURN_IF_ERROR(MatchBody(e, as_bundle, signer, RawDigest(DigestAlgorithm::kSha256, sig.payload)));
  v.trusted_times.push_back(*e.integrated_time);
  DIGESTD_RETURN_IF_ERROR(
      CheckKeyless(*layer.leaf, layer.intermediates, root, v.trusted_times, expect, v));
  return v;
}

}  // namespace digestd::verify
