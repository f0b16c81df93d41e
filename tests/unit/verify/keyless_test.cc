// Keyless verification with material the test makes itself (no vectors needed): a CA and a
// Fulcio-like leaf (code-signing EKU, SAN, OIDC issuer extension), a Rekor-like log key that
// signs the SET and a checkpoint over a two-leaf tree, and a v0.3 bundle. Each test breaks one
// piece and expects its distinct failure reason.

#include <gtest/gtest.h>

#include <openssl/asn1.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <functional>
#include <string>

#include <nlohmann/json.hpp>

#include "verify/base64.h"
#include "verify/digest.h"
#include "verify/keyless.h"
#include "verify/tlog.h"

namespace digestd::verify {
namespace {

using nlohmann::json;

constexpr std::int64_t kSignedAt = 1'750'000'000;  // 2025-06-15

EVP_PKEY* NewKey() {
  EVP_PKEY* k = EVP_EC_gen("P-256");
  EXPECT_NE(k, nullptr);
  return k;
}

std::string Spki(EVP_PKEY* k) {
  unsigned char* der = nullptr;
  const int n = i2d_PUBKEY(k, &der);
  std::string out(reinterpret_cast<char*>(der), static_cast<std::size_t>(n));
  OPENSSL_free(der);
  return out;
}

std::string Sign(EVP_PKEY* k, std::string_view msg) {
  EVP_MD_CTX* ctx = EVP_MD_CTX_new();
  EVP_DigestSignInit(ctx, nullptr, EVP_sha256(), nullptr, k);
  std::size_t n = 0;
  EVP_DigestSign(ctx, nullptr, &n, reinterpret_cast<const unsigned char*>(msg.data()), msg.size());
  std::string sig(n, '\0');
  EVP_DigestSign(ctx, reinterpret_cast<unsigned char*>(sig.data()), &n,
                 reinterpret_cast<const unsigned char*>(msg.data()), msg.size());
  sig.resize(n);
  EVP_MD_CTX_free(ctx);
  return sig;
}

std::string Sha256(std::string_view d) {
  unsigned char out[32];
  unsigned int n = 0;
  EVP_Digest(d.data(), d.size(), out, &n, EVP_sha256(), nullptr);
  return std::string(reinterpret_cast<char*>(out), n);
}

void AddExt(X509* x, X509* issuer, int nid, const char* value) {
  X509V3_CTX ctx;
  X509V3_set_ctx(&ctx, issuer, x, nullptr, nullptr, 0);
  X509_EXTENSION* e = X509V3_EXT_conf_nid(nullptr, &ctx, nid, value);
  ASSERT_NE(e, nullptr) << value;
  X509_add_ext(x, e, -1);
  X509_EXTENSION_free(e);
}

std::string Der(X509* x) {
  unsigned char* der = nullptr;
  const int n = i2d_X509(x, &der);
  std::string out(reinterpret_cast<char*>(der), static_cast<std::size_t>(n));
  OPENSSL_free(der);
  return out;
}

std::string Pem(X509* x) {
  BIO* b = BIO_new(BIO_s_mem());
  PEM_write_bio_X509(b, x);
  char* p = nullptr;
  const long n = BIO_get_mem_data(b, &p);
  std::string out(p, static_cast<std::size_t>(n));
  BIO_free(b);
  return out;
}

struct CertSpec {
  std::string cn;
  bool ca = false;
  bool code_signing = true;
  std::int64_t not_before = kSignedAt - 300;
  std::int64_t not_after = kSignedAt + 600;
  std::string san = "email:dev@example.com";
  std::string issuer_ext = "https://issuer.example";
};

X509* MakeCert(const CertSpec& spec, EVP_PKEY* key, X509* issuer, EVP_PKEY* issuer_key) {
  X509* x = X509_new();
  X509_set_version(x, 2);
  ASN1_INTEGER_set(X509_get_serialNumber(x), 1000 + static_cast<long>(spec.cn.size()));
  ASN1_TIME_set(X509_getm_notBefore(x), static_cast<time_t>(spec.not_before));
  ASN1_TIME_set(X509_getm_notAfter(x), static_cast<time_t>(spec.not_after));
  X509_NAME* name = X509_get_subject_name(x);
  X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
                             reinterpret_cast<const unsigned char*>(spec.cn.c_str()), -1, -1, 0);
  X509_set_issuer_name(x, issuer != nullptr ? X509_get_subject_name(issuer) : name);
  X509_set_pubkey(x, key);
  X509* iss = issuer != nullptr ? issuer : x;
  if (spec.ca) {
    AddExt(x, iss, NID_basic_constraints, "critical,CA:TRUE");
    AddExt(x, iss, NID_key_usage, "critical,keyCertSign,cRLSign");
    AddExt(x, iss, NID_subject_key_identifier, "hash");
  } else {
    AddExt(x, iss, NID_key_usage, "critical,digitalSignature");
    if (spec.code_signing) AddExt(x, iss, NID_ext_key_usage, "codeSigning");
    AddExt(x, iss, NID_subject_alt_name, spec.san.c_str());
    AddExt(x, iss, NID_authority_key_identifier, "keyid");
    // Fulcio's OIDC issuer (1.3.6.1.4.1.57264.1.8): a DER UTF8String.
    ASN1_UTF8STRING* s = ASN1_UTF8STRING_new();
    ASN1_STRING_set(s, spec.issuer_ext.data(), static_cast<int>(spec.issuer_ext.size()));
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
  }
  X509_sign(x, issuer_key, EVP_sha256());
  return x;
}

// Everything a keyless signature needs, made fresh per test, plus knobs to break it.
class KeylessTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ca_key_ = NewKey();
    leaf_key_ = NewKey();
    log_key_ = NewKey();
    ca_ = MakeCert({.cn = "test-ca", .ca = true, .not_before = kSignedAt - 86400,
                    .not_after = kSignedAt + 86400 * 365},
                   ca_key_, nullptr, ca_key_);
  }
  void TearDown() override {
    X509_free(ca_);
    EVP_PKEY_free(ca_key_);
    EVP_PKEY_free(leaf_key_);
    EVP_PKEY_free(log_key_);
  }

  std::string RootJson(std::string_view log_spki, std::string_view ca_der) {
    const std::string log_id = Sha256(log_spki);
    json j = {
        {"mediaType", "application/vnd.dev.sigstore.trustedroot+json;version=0.1"},
        {"tlogs",
         {{{"baseUrl", "https://log.test"},
           {"hashAlgorithm", "SHA2_256"},
           {"publicKey",
            {{"rawBytes", Base64Encode(log_spki)},
             {"keyDetails", "PKIX_ECDSA_P256_SHA_256"},
             {"validFor", {{"start", "2025-01-01T00:00:00Z"}}}}},
           {"logId", {{"keyId", Base64Encode(log_id)}}}}}},
        {"certificateAuthorities",
         {{{"uri", "https://ca.test"},
           {"certChain", {{"certificates", {{{"rawBytes", Base64Encode(ca_der)}}}}}},
           {"validFor", {{"start", "2025-01-01T00:00:00Z"}}}}}}};
    return j.dump();
  }

  // The bundle; `tweak` edits the pieces before they are assembled.
  struct Pieces {
    std::string artifact = "hello, keyless world\n";
    CertSpec leaf{.cn = "leaf"};
    std::int64_t integrated_time = kSignedAt;
    bool with_set = true;
    bool corrupt_set = false;
    bool corrupt_proof = false;
    bool checkpoint_by_other_key = false;
    std::string body_signature_override;  // log a different signature than the bundle's
  };
  std::string Bundle(const Pieces& p) {
    X509* leaf = MakeCert(p.leaf, leaf_key_, ca_, ca_key_);
    const std::string leaf_der = Der(leaf);
    const std::string leaf_pem = Pem(leaf);
    X509_free(leaf);
    const std::string digest = Sha256(p.artifact);
    const std::string sig = Sign(leaf_key_, p.artifact);
    const std::string logged_sig =
        p.body_signature_override.empty() ? sig : p.body_signature_override;
    const json body = {
        {"apiVersion", "0.0.1"},
        {"kind", "hashedrekord"},
        {"spec",
         {{"data", {{"hash", {{"algorithm", "sha256"}, {"value", HexEncode(digest)}}}}},
          {"signature",
           {{"content", Base64Encode(logged_sig)},
            {"publicKey", {{"content", Base64Encode(leaf_pem)}}}}}}}};
    const std::string body_b64 = Base64Encode(body.dump());
    const std::string log_id = Sha256(Spki(log_key_));
    // A two-leaf tree: our entry at index 0, another entry at index 1.
    const std::string leaf0 = MerkleLeafHash(body.dump());
    std::string leaf1 = MerkleLeafHash("another entry");
    const std::string root_hash = Sha256(std::string("\x01", 1) + leaf0 + leaf1);
    if (p.corrupt_proof) leaf1[0] = static_cast<char>(leaf1[0] ^ 1);
    const std::string note = "log.test - 1\n2\n" + Base64Encode(root_hash) + "\n";
    EVP_PKEY* note_key = p.checkpoint_by_other_key ? NewKey() : log_key_;
    const std::string note_sig = log_id.substr(0, 4) + Sign(note_key, note);
    if (note_key != log_key_) EVP_PKEY_free(note_key);
    json entry = {
        {"logIndex", "7"},
        {"logId", {{"keyId", Base64Encode(log_id)}}},
        {"kindVersion", {{"kind", "hashedrekord"}, {"version", "0.0.1"}}},
        {"integratedTime", std::to_string(p.integrated_time)},
        {"inclusionProof",
         {{"logIndex", "0"},
          {"rootHash", Base64Encode(root_hash)},
          {"treeSize", "2"},
          {"hashes", {Base64Encode(leaf1)}},
          {"checkpoint",
           {{"envelope", note + "\n\xe2\x80\x94 log.test " + Base64Encode(note_sig) + "\n"}}}}},
        {"canonicalizedBody", body_b64}};
    if (p.with_set) {
      const json canon = {{"body", body_b64},
                          {"integratedTime", p.integrated_time},
                          {"logID", HexEncode(log_id)},
                          {"logIndex", 7}};
      std::string set = Sign(log_key_, canon.dump());
      if (p.corrupt_set) set[set.size() / 2] = static_cast<char>(set[set.size() / 2] ^ 1);
      entry["inclusionPromise"] = {{"signedEntryTimestamp", Base64Encode(set)}};
    }
    const json bundle = {
        {"mediaType", "application/vnd.dev.sigstore.bundle.v0.3+json"},
        {"verificationMaterial",
         {{"certificate", {{"rawBytes", Base64Encode(leaf_der)}}}, {"tlogEntries", {entry}}}},
        {"messageSignature",
         {{"messageDigest", {{"algorithm", "SHA2_256"}, {"digest", Base64Encode(digest)}}},
          {"signature", Base64Encode(sig)}}}};
    return bundle.dump();
  }

  // "valid" or the failure reason.
  std::string Verify(const Pieces& p, const BundleExpectation& e = kWho,
                     std::optional<std::string> artifact = std::nullopt,
                     X509* trusted_ca = nullptr) {
    auto root = SigstoreTrustedRoot::Parse(
        RootJson(Spki(log_key_), Der(trusted_ca != nullptr ? trusted_ca : ca_)), "test");
    EXPECT_TRUE(root) << root.error().ToString();
    BundleArtifact a{.bytes = artifact ? *artifact : p.artifact};
    auto v = VerifyBundle(Bundle(p), a, *root, e);
    if (v) return "valid";
    const std::string& why = v.error().context();
    return why.substr(0, why.find(':'));
  }

  static inline const BundleExpectation kWho{.identity = "dev@example.com",
                                             .issuer = "https://issuer.example"};
  EVP_PKEY* ca_key_ = nullptr;
  EVP_PKEY* leaf_key_ = nullptr;
  EVP_PKEY* log_key_ = nullptr;
  X509* ca_ = nullptr;
};

TEST_F(KeylessTest, MadeHereVerifies) {
  EXPECT_EQ(Verify({}), "valid");
  EXPECT_EQ(Verify({}, {}), "valid");  // no identity required: any signer of this CA
}

TEST_F(KeylessTest, IdentityAndIssuerMustMatch) {
  EXPECT_EQ(Verify({}, {.identity = "mallory@example.com", .issuer = kWho.issuer}), "identity");
  EXPECT_EQ(Verify({}, {.identity = kWho.identity, .issuer = "https://evil.example"}), "issuer");
  Pieces uri;
  uri.leaf.san = "URI:https://github.com/org/repo/.github/workflows/release.yml@refs/heads/main";
  EXPECT_EQ(Verify(uri, {.identity = "https://github.com/org/repo/.github/workflows/"
                                     "release.yml@refs/heads/main",
                         .issuer = kWho.issuer}),
            "valid");
}

TEST_F(KeylessTest, ArtifactAndSignature) {
  EXPECT_EQ(Verify({}, kWho, std::string("another artifact")), "artifact");
}

TEST_F(KeylessTest, CertificateChecks) {
  Pieces no_eku;
  no_eku.leaf.code_signing = false;
  EXPECT_EQ(Verify(no_eku), "certificate-usage");
  Pieces expired;
  expired.integrated_time = kSignedAt + 3600;  // the log saw it after the leaf expired
  EXPECT_EQ(Verify(expired), "certificate-validity");
  // A CA the trusted root does not hold.
  EVP_PKEY* other_key = NewKey();
  X509* other = MakeCert({.cn = "other-ca", .ca = true, .not_before = kSignedAt - 86400,
                          .not_after = kSignedAt + 86400},
                         other_key, nullptr, other_key);
  EXPECT_EQ(Verify({}, kWho, std::nullopt, other), "certificate-chain");
  X509_free(other);
  EVP_PKEY_free(other_key);
}

TEST_F(KeylessTest, TransparencyLogChecks) {
  Pieces bad_set;
  bad_set.corrupt_set = true;
  EXPECT_EQ(Verify(bad_set), "tlog-set");
  Pieces bad_proof;
  bad_proof.corrupt_proof = true;
  EXPECT_EQ(Verify(bad_proof), "tlog-inclusion");
  Pieces other_note;
  other_note.checkpoint_by_other_key = true;
  EXPECT_EQ(Verify(other_note), "tlog-inclusion");
  Pieces other_sig;
  other_sig.body_signature_override = Sign(leaf_key_, "something else");
  EXPECT_EQ(Verify(other_sig), "tlog-body");
  // An inclusion proof alone does not make integratedTime a trusted time.
  Pieces no_set;
  no_set.with_set = false;
  EXPECT_EQ(Verify(no_set), "no-trusted-time");
}

TEST_F(KeylessTest, UnknownLogAndBadRoots) {
  // A root whose log key is another key: the entry's log is unknown.
  EVP_PKEY* k = NewKey();
  auto root = SigstoreTrustedRoot::Parse(RootJson(Spki(k), Der(ca_)), "test");
  EVP_PKEY_free(k);
  ASSERT_TRUE(root);
  auto v = VerifyBundle(Bundle({}), {.bytes = Pieces{}.artifact}, *root, kWho);
  ASSERT_FALSE(v);
  EXPECT_TRUE(v.error().context().starts_with("tlog-unknown")) << v.error().context();
  // Trusted roots that must not load: no validFor.start, an end before the start, bad base64.
  json j = json::parse(RootJson(Spki(log_key_), Der(ca_)));
  json no_start = j;
  no_start["tlogs"][0]["publicKey"]["validFor"].erase("start");
  EXPECT_FALSE(SigstoreTrustedRoot::Parse(no_start.dump(), "t"));
  json backwards = j;
  backwards["certificateAuthorities"][0]["validFor"] = {{"start", "2026-01-01T00:00:00Z"},
                                                         {"end", "2025-01-01T00:00:00Z"}};
  EXPECT_FALSE(SigstoreTrustedRoot::Parse(backwards.dump(), "t"));
  json bad_b64 = j;
  bad_b64["tlogs"][0]["logId"]["keyId"] = "not base64!";
  EXPECT_FALSE(SigstoreTrustedRoot::Parse(bad_b64.dump(), "t"));
  json wrong_details = j;
  wrong_details["tlogs"][0]["publicKey"]["keyDetails"] = "PKIX_ED25519";
  EXPECT_FALSE(SigstoreTrustedRoot::Parse(wrong_details.dump(), "t"));
  EXPECT_FALSE(SigstoreTrustedRoot::Parse("{\"mediaType\": 1}", "t"));
}

TEST_F(KeylessTest, MalformedBundlesAreRefused) {
  auto root = SigstoreTrustedRoot::Parse(RootJson(Spki(log_key_), Der(ca_)), "test");
  ASSERT_TRUE(root);
  const json good = json::parse(Bundle({}));
  auto reason = [&](const json& b) {
    auto v = VerifyBundle(b.dump(), {.bytes = Pieces{}.artifact}, *root, kWho);
    return v ? std::string("valid") : v.error().context().substr(0, v.error().context().find(':'));
  };
  EXPECT_EQ(reason(good), "valid");
  json x = good;
  x["mediaType"] = "application/vnd.dev.sigstore.bundle+json;version=9";
  EXPECT_EQ(reason(x), "malformed");
  x = good;
  x["verificationMaterial"]["publicKey"] = {{"hint", "x"}};  // two kinds of material
  EXPECT_EQ(reason(x), "malformed");
  x = good;
  x["verificationMaterial"]["tlogEntries"][0]["logIndex"] = "-1";
  EXPECT_EQ(reason(x), "malformed");
  x = good;
  x["verificationMaterial"]["tlogEntries"] = json::array();
  EXPECT_EQ(reason(x), "tlog-missing");
  x = good;
  x["verificationMaterial"]["tlogEntries"][0]["inclusionProof"]["hashes"] = {"AAAA"};
  EXPECT_EQ(reason(x), "malformed");
  x = good;
  x["verificationMaterial"]["tlogEntries"][0].erase("inclusionProof");  // v0.3 needs it
  EXPECT_EQ(reason(x), "tlog-inclusion");
  EXPECT_FALSE(VerifyBundle("{\"mediaType\":", {.bytes = "x"}, *root, kWho));
  EXPECT_FALSE(VerifyBundle(std::string(2u << 20, ' '), {.bytes = "x"}, *root, kWho));
}

TEST(MerkleTest, InclusionProofsOfEveryLeafOfASmallTree) {
  // Build trees of 1..9 leaves and check every leaf's audit path reproduces the root.
  for (int size = 1; size <= 9; ++size) {
    std::vector<std::string> leaves;
    for (int i = 0; i < size; ++i) leaves.push_back(MerkleLeafHash("leaf " + std::to_string(i)));
    std::function<std::string(int, int)> root = [&](int lo, int n) -> std::string {
      if (n == 1) return leaves[static_cast<std::size_t>(lo)];
      int k = 1;
      while (k * 2 < n) k *= 2;
      return Sha256(std::string("\x01", 1) + root(lo, k) + root(lo + k, n - k));
    };
    std::function<void(int, int, int, std::vector<std::string>&)> path =
        [&](int m, int lo, int n, std::vector<std::string>& out) {
          if (n == 1) return;
          int k = 1;
          while (k * 2 < n) k *= 2;
          if (m < k) {
            path(m, lo, k, out);
            out.push_back(root(lo + k, n - k));
          } else {
            path(m - k, lo + k, n - k, out);
            out.push_back(root(lo, k));
          }
        };
    const std::string want = root(0, size);
    for (int m = 0; m < size; ++m) {
      std::vector<std::string> proof;
      path(m, 0, size, proof);
      auto got = RootFromInclusionProof(m, size, leaves[static_cast<std::size_t>(m)], proof);
      ASSERT_TRUE(got) << size << "/" << m;
      EXPECT_EQ(*got, want) << size << "/" << m;
      if (!proof.empty()) {
        proof.pop_back();
        auto short_proof = RootFromInclusionProof(m, size, leaves[static_cast<std::size_t>(m)], proof);
        EXPECT_TRUE(!short_proof || *short_proof != want);
      }
    }
  }
  EXPECT_FALSE(RootFromInclusionProof(3, 3, MerkleLeafHash("x"), {}));
  EXPECT_FALSE(RootFromInclusionProof(-1, 3, MerkleLeafHash("x"), {}));
}

}  // namespace
}  // namespace digestd::verify
