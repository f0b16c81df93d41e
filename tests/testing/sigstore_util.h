#pragma once

// A sigstore of the tests' own (no network, no vectors): a root CA, a Fulcio-like intermediate
// and leaf certificates (code-signing EKU, SAN, OIDC issuer extension), a Rekor-like log key that
// signs SETs and checkpoints over a two-leaf tree; it writes the trusted root and the signatures
// keyless signers produce: message-signature and DSSE bundles (v0.3) and cosign's legacy
// signature layer (certificate, chain and Rekor bundle annotations). Knobs break one piece at a
// time.

#include <openssl/asn1.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <cstdint>
#include <cstdlib>
#include <memory>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "verify/base64.h"
#include "verify/cosign.h"
#include "verify/digest.h"
#include "verify/oci.h"
#include "verify/tlog.h"

namespace digestd::testing {

inline constexpr std::int64_t kSigstoreSignedAt = 1'750'000'000;  // 2025-06-15

struct SigstoreLeafSpec {
  bool code_signing = true;
  std::int64_t not_before = kSigstoreSignedAt - 300;
  std::int64_t not_after = kSigstoreSignedAt + 600;
  std::string san = "email:dev@example.com";
  std::string issuer = "https://issuer.example";
};
// What to log and how; defaults make a valid signature.
struct SigstoreOptions {
  SigstoreLeafSpec leaf;
  std::int64_t integrated_time = kSigstoreSignedAt;
  bool with_set = true;
  bool corrupt_set = false;
  bool corrupt_proof = false;
  bool checkpoint_by_other_key = false;
  std::string logged_signature;  // non-empty: the log records this signature instead
};


class TestSigstore {
 public:
  static constexpr std::int64_t kSignedAt = kSigstoreSignedAt;

  using Leaf = SigstoreLeafSpec;
  using Options = SigstoreOptions;

  TestSigstore()
      : root_key_(NewKey()), inter_key_(NewKey()), leaf_key_(NewKey()), log_key_(NewKey()) {
    root_.reset(MakeCa("test-root", root_key_.get(), nullptr, root_key_.get()));
    inter_.reset(MakeCa("test-intermediate", inter_key_.get(), root_.get(), root_key_.get()));
  }

  static constexpr std::string_view kIdentity = "dev@example.com";
  static constexpr std::string_view kIssuer = "https://issuer.example";

  std::string RootPem() const { return Pem(root_.get()); }
  std::string ChainPem() const { return Pem(inter_.get()) + Pem(root_.get()); }
  std::string LogPublicPem() const {
    BIO* b = BIO_new(BIO_s_mem());
    PEM_write_bio_PUBKEY(b, log_key_.get());
    return Drain(b);
  }
  std::string LogId() const { return Sha256(Spki(log_key_.get())); }

  std::string TrustedRootJson() const {
    using nlohmann::json;
    return json{
        {"mediaType", "application/vnd.dev.sigstore.trustedroot+json;version=0.1"},
        {"tlogs",
         {{{"baseUrl", "https://log.test"},
           {"hashAlgorithm", "SHA2_256"},
           {"publicKey",
            {{"rawBytes", verify::Base64Encode(Spki(log_key_.get()))},
             {"keyDetails", "PKIX_ECDSA_P256_SHA_256"},
             {"validFor", {{"start", "2025-01-01T00:00:00Z"}}}}},
           {"logId", {{"keyId", verify::Base64Encode(LogId())}}}}}},
        {"certificateAuthorities",
         {{{"uri", "https://ca.test"},
           {"certChain",
            {{"certificates",
              {{{"rawBytes", verify::Base64Encode(Der(inter_.get()))}},
               {{"rawBytes", verify::Base64Encode(Der(root_.get()))}}}}}},
           {"validFor", {{"start", "2025-01-01T00:00:00Z"}}}}}}}
        .dump();
  }

  // A v0.3 bundle with a message signature over `artifact` (hashedrekord 0.0.1).
  std::string MessageBundle(std::string_view artifact, const Options& o = {}) const {
    using nlohmann::json;
    const Cert leaf = MakeLeaf(o.leaf);
    const std::string digest = Sha256(artifact);
    const std::string sig = Sign(leaf_key_.get(), artifact);
    const json body = {
        {"apiVersion", "0.0.1"},
        {"kind", "hashedrekord"},
        {"spec",
         {{"data", {{"hash", {{"algorithm", "sha256"}, {"value", verify::HexEncode(digest)}}}}},
          {"signature",
           {{"content", verify::Base64Encode(o.logged_signature.empty() ? sig : o.logged_signature)},
            {"publicKey", {{"content", verify::Base64Encode(leaf.pem)}}}}}}}};
    return json{{"mediaType", "application/vnd.dev.sigstore.bundle.v0.3+json"},
                {"verificationMaterial",
                 {{"certificate", {{"rawBytes", verify::Base64Encode(leaf.der)}}},
                  {"tlogEntries", {Entry(body.dump(), "hashedrekord", o)}}}},
                {"messageSignature",
                 {{"messageDigest",
                   {{"algorithm", "SHA2_256"}, {"digest", verify::Base64Encode(digest)}}},
                  {"signature", verify::Base64Encode(sig)}}}}
        .dump();
  }

  // A v0.3 bundle with a DSSE envelope (dsse 0.0.1 entry) around an in-toto statement naming
  // `subject` with `predicate_type` (cosign v3 signs images this way).
  std::string StatementBundle(const verify::Digest& subject, std::string_view predicate_type,
                              const Options& o = {}) const {
    using nlohmann::json;
    const std::string payload =
        json{{"_type", "https://in-toto.io/Statement/v1"},
             {"subject", {{{"name", "image"},
                           {"digest", {{std::string(verify::ToString(subject.algorithm())),
                                        std::string(subject.hex())}}}}}},
             {"predicateType", predicate_type},
             {"predicate", json::object()}}
            .dump();
    const Cert leaf = MakeLeaf(o.leaf);
    const std::string type(verify::kInTotoPayloadType);
    const std::string sig = Sign(leaf_key_.get(), verify::Pae(type, payload));
    const json body = {
        {"apiVersion", "0.0.1"},
        {"kind", "dsse"},
        {"spec",
         {{"envelopeHash", {{"algorithm", "sha256"}, {"value", std::string(64, '0')}}},
          {"payloadHash", {{"algorithm", "sha256"}, {"value", verify::HexEncode(Sha256(payload))}}},
          {"signatures",
           {{{"signature",
              verify::Base64Encode(o.logged_signature.empty() ? sig : o.logged_signature)},
             {"verifier", verify::Base64Encode(leaf.pem)}}}}}}};
    return json{{"mediaType", "application/vnd.dev.sigstore.bundle.v0.3+json"},
                {"verificationMaterial",
                 {{"certificate", {{"rawBytes", verify::Base64Encode(leaf.der)}}},
                  {"tlogEntries", {Entry(body.dump(), "dsse", o)}}}},
                {"dsseEnvelope",
                 {{"payload", verify::Base64Encode(payload)},
                  {"payloadType", type},
                  {"signatures", {{{"sig", verify::Base64Encode(sig)}, {"keyid", ""}}}}}}}
        .dump();
  }

  // cosign's legacy keyless layer for a simple-signing `payload`.
  struct Legacy {
    verify::SimpleSignature layer;
    std::string signature_b64, certificate_pem, chain_pem, rekor_bundle;
  };
  Legacy CosignSignature(std::string_view payload, const Options& o = {}) const {
    using nlohmann::json;
    const Cert leaf = MakeLeaf(o.leaf);
    const std::string sig = Sign(leaf_key_.get(), payload);
    const json body = {
        {"apiVersion", "0.0.1"},
        {"kind", "hashedrekord"},
        {"spec",
         {{"data", {{"hash", {{"algorithm", "sha256"}, {"value", verify::HexEncode(Sha256(payload))}}}}},
          {"signature",
           {{"content", verify::Base64Encode(o.logged_signature.empty() ? sig : o.logged_signature)},
            {"publicKey", {{"content", verify::Base64Encode(leaf.pem)}}}}}}}};
    const std::string body_b64 = verify::Base64Encode(body.dump());
    Legacy l;
    l.signature_b64 = verify::Base64Encode(sig);
    l.certificate_pem = leaf.pem;
    l.chain_pem = ChainPem();
    l.rekor_bundle = json{{"SignedEntryTimestamp", verify::Base64Encode(Set(body_b64, o))},
                          {"Payload",
                           {{"body", body_b64},
                            {"integratedTime", o.integrated_time},
                            {"logIndex", 7},
                            {"logID", verify::HexEncode(LogId())}}}}
                         .dump();
    l.layer.media_type = std::string(verify::media::kCosignSimpleSigning);
    l.layer.payload = std::string(payload);
    l.layer.annotations = {{std::string(verify::kCosignSignatureAnnotation), l.signature_b64},
                           {"dev.sigstore.cosign/certificate", l.certificate_pem},
                           {"dev.sigstore.cosign/chain", l.chain_pem},
                           {"dev.sigstore.cosign/bundle", l.rekor_bundle}};
    return l;
  }

  static std::string Sha256(std::string_view d) {
    unsigned char out[32];
    unsigned int n = 0;
    EVP_Digest(d.data(), d.size(), out, &n, EVP_sha256(), nullptr);
    return std::string(reinterpret_cast<char*>(out), n);
  }

 private:
  struct KeyFree {
    void operator()(EVP_PKEY* k) const { EVP_PKEY_free(k); }
  };
  struct CertFree {
    void operator()(X509* x) const { X509_free(x); }
  };
  using Key = std::unique_ptr<EVP_PKEY, KeyFree>;
  struct Cert {
    std::string der, pem;
  };

  static Key NewKey() {
    EVP_PKEY* k = EVP_EC_gen("P-256");
    if (k == nullptr) std::abort();
    return Key(k);
  }
  static std::string Drain(BIO* b) {
    char* p = nullptr;
    const long n = BIO_get_mem_data(b, &p);
    std::string out(p, static_cast<std::size_t>(n));
    BIO_free(b);
    return out;
  }
  static std::string Spki(EVP_PKEY* k) {
    unsigned char* der = nullptr;
    const int n = i2d_PUBKEY(k, &der);
    std::string out(reinterpret_cast<char*>(der), static_cast<std::size_t>(n));
    OPENSSL_free(der);
    return out;
  }
  static std::string Der(X509* x) {
    unsigned char* der = nullptr;
    const int n = i2d_X509(x, &der);
    std::string out(reinterpret_cast<char*>(der), static_cast<std::size_t>(n));
    OPENSSL_free(der);
    return out;
  }
  static std::string Pem(X509* x) {
    BIO* b = BIO_new(BIO_s_mem());
    PEM_write_bio_X509(b, x);
    return Drain(b);
  }
  static std::string Sign(EVP_PKEY* k, std::string_view msg) {
    EVP_MD_CTX* ctx = EVP_MD_CTX_new();
    EVP_DigestSignInit(ctx, nullptr, EVP_sha256(), nullptr, k);
    std::size_t n = 0;
    const auto* m = reinterpret_cast<const unsigned char*>(msg.data());
    EVP_DigestSign(ctx, nullptr, &n, m, msg.size());
    std::string sig(n, '\0');
    EVP_DigestSign(ctx, reinterpret_cast<unsigned char*>(sig.data()), &n, m, msg.size());
    sig.resize(n);
    EVP_MD_CTX_free(ctx);
    return sig;
  }
  static void AddExt(X509* x, X509* issuer, int nid, const char* value) {
    X509V3_CTX ctx;
    X509V3_set_ctx(&ctx, issuer, x, nullptr, nullptr, 0);
    X509_EXTENSION* e = X509V3_EXT_conf_nid(nullptr, &ctx, nid, value);
    if (e == nullptr) std::abort();
    X509_add_ext(x, e, -1);
    X509_EXTENSION_free(e);
  }
  static X509* NewCert(std::string_view cn, EVP_PKEY* key, X509* issuer, std::int64_t nb,
                       std::int64_t na) {
    static long serial = 1;
    X509* x = X509_new();
    X509_set_version(x, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(x), ++serial);
    ASN1_TIME_set(X509_getm_notBefore(x), static_cast<time_t>(nb));
    ASN1_TIME_set(X509_getm_notAfter(x), static_cast<time_t>(na));
    X509_NAME* name = X509_get_subject_name(x);
    if (!cn.empty()) {
      X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
                                 reinterpret_cast<const unsigned char*>(std::string(cn).c_str()),
                                 -1, -1, 0);
    }
    X509_set_issuer_name(x, issuer != nullptr ? X509_get_subject_name(issuer) : name);
    X509_set_pubkey(x, key);
    return x;
  }
  static X509* MakeCa(std::string_view cn, EVP_PKEY* key, X509* issuer, EVP_PKEY* issuer_key) {
    X509* x = NewCert(cn, key, issuer, kSignedAt - 86400 * 30, kSignedAt + 86400 * 3650);
    X509* iss = issuer != nullptr ? issuer : x;
    AddExt(x, iss, NID_basic_constraints, "critical,CA:TRUE");
    AddExt(x, iss, NID_key_usage, "critical,keyCertSign,cRLSign");
    AddExt(x, iss, NID_subject_key_identifier, "hash");
    if (issuer != nullptr) AddExt(x, iss, NID_authority_key_identifier, "keyid");
    X509_sign(x, issuer_key, EVP_sha256());
    return x;
  }
  Cert MakeLeaf(const Leaf& spec, EVP_PKEY* subject_key = nullptr) const {
    X509* x = NewCert("", subject_key != nullptr ? subject_key : leaf_key_.get(), inter_.get(),
                      spec.not_before, spec.not_after);
    AddExt(x, inter_.get(), NID_key_usage, "critical,digitalSignature");
    if (spec.code_signing) AddExt(x, inter_.get(), NID_ext_key_usage, "codeSigning");
    AddExt(x, inter_.get(), NID_subject_alt_name, ("critical," + spec.san).c_str());
    AddExt(x, inter_.get(), NID_authority_key_identifier, "keyid");
    // Fulcio's OIDC issuer (1.3.6.1.4.1.57264.1.8): a DER UTF8String.
    ASN1_UTF8STRING* s = ASN1_UTF8STRING_new();
    ASN1_STRING_set(s, spec.issuer.data(), static_cast<int>(spec.issuer.size()));
    unsigned char* der = nullptr;
    const int n = i2d_ASN1_UTF8STRING(s, &der);
    ASN1_OCTET_STRING* oct = ASN1_OCTET_STRING_new();
    ASN1_OCTET_STRING_set(oct, der, n);
    ASN1_OBJECT* oid = OBJ_txt2obj("1.3.6.1.4.1.57264.1.8", 1);
    X509_EXTENSION* ext = X509_EXTENSION_create_by_OBJ(nullptr, oid, 0, oct);
    X509_add_ext(x, ext, -1);
    X509_EXTENSION_free(ext);
    ASN1_OBJECT_free(oid);
    ASN1_OCTET_STRING_free(oct);
    OPENSSL_free(der);
    ASN1_UTF8STRING_free(s);
    // And the deprecated 1.3.6.1.4.1.57264.1.1 (raw bytes), which Fulcio still writes and older
    // clients (cosign among them) read.
    ASN1_OCTET_STRING* raw = ASN1_OCTET_STRING_new();
    ASN1_OCTET_STRING_set(raw, reinterpret_cast<const unsigned char*>(spec.issuer.data()),
                          static_cast<int>(spec.issuer.size()));
    ASN1_OBJECT* oid_v1 = OBJ_txt2obj("1.3.6.1.4.1.57264.1.1", 1);
    X509_EXTENSION* ext_v1 = X509_EXTENSION_create_by_OBJ(nullptr, oid_v1, 0, raw);
    X509_add_ext(x, ext_v1, -1);
    X509_EXTENSION_free(ext_v1);
    ASN1_OBJECT_free(oid_v1);
    ASN1_OCTET_STRING_free(raw);
    X509_sign(x, inter_key_.get(), EVP_sha256());
    Cert c{Der(x), Pem(x)};
    X509_free(x);
    return c;
  }
  std::string Set(const std::string& body_b64, const Options& o) const {
    const nlohmann::json canon = {{"body", body_b64},
                                  {"integratedTime", o.integrated_time},
                                  {"logID", verify::HexEncode(LogId())},
                                  {"logIndex", 7}};
    std::string set = Sign(log_key_.get(), canon.dump());
    if (o.corrupt_set) set[set.size() / 2] = static_cast<char>(set[set.size() / 2] ^ 1);
    return set;
  }
  // A log entry for `body` at index 0 of a two-leaf tree, with SET, proof and checkpoint.
  nlohmann::json Entry(const std::string& body, std::string_view kind, const Options& o) const {
    using nlohmann::json;
    const std::string body_b64 = verify::Base64Encode(body);
    const std::string leaf0 = verify::MerkleLeafHash(body);
    std::string leaf1 = verify::MerkleLeafHash("another entry");
    const std::string root = Sha256(std::string("\x01", 1) + leaf0 + leaf1);
    if (o.corrupt_proof) leaf1[0] = static_cast<char>(leaf1[0] ^ 1);
    const std::string note = "log.test - 1\n2\n" + verify::Base64Encode(root) + "\n";
    Key other = NewKey();
    const std::string note_sig =
        LogId().substr(0, 4) + Sign(o.checkpoint_by_other_key ? other.get() : log_key_.get(), note);
    json e = {{"logIndex", "7"},
              {"logId", {{"keyId", verify::Base64Encode(LogId())}}},
              {"kindVersion", {{"kind", kind}, {"version", "0.0.1"}}},
              {"integratedTime", std::to_string(o.integrated_time)},
              {"inclusionProof",
               {{"logIndex", "0"},
                {"rootHash", verify::Base64Encode(root)},
                {"treeSize", "2"},
                {"hashes", {verify::Base64Encode(leaf1)}},
                {"checkpoint",
                 {{"envelope",
                   note + "\n\xe2\x80\x94 log.test " + verify::Base64Encode(note_sig) + "\n"}}}}},
              {"canonicalizedBody", body_b64}};
    if (o.with_set) {
      e["inclusionPromise"] = {{"signedEntryTimestamp", verify::Base64Encode(Set(body_b64, o))}};
    }
    return e;
  }

  Key root_key_, inter_key_, leaf_key_, log_key_;
  std::unique_ptr<X509, CertFree> root_, inter_;

 public:
  // A leaf for someone else's key (SPKI PEM), e.g. a key cosign generated.
  std::string LeafPemForKey(const Leaf& spec, std::string_view public_pem) const {
    BIO* b = BIO_new_mem_buf(public_pem.data(), static_cast<int>(public_pem.size()));
    EVP_PKEY* k = PEM_read_bio_PUBKEY(b, nullptr, nullptr, nullptr);
    BIO_free(b);
    if (k == nullptr) std::abort();
    Key owned(k);
    return MakeLeaf(spec, owned.get()).pem;
  }
  std::string LeafKeyPem() const {
    BIO* b = BIO_new(BIO_s_mem());
    PEM_write_bio_PrivateKey(b, leaf_key_.get(), nullptr, nullptr, 0, nullptr, nullptr);
    return Drain(b);
  }
  // Signs with the leaf key (for a "signature the log did not record" case).
  std::string SignWithLeafKey(std::string_view msg) const { return Sign(leaf_key_.get(), msg); }
};

}  // namespace digestd::testing
