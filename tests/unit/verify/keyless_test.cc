// Keyless verification with material the test makes itself (tests/testing/sigstore_util.h: a
// root CA, an intermediate, a Fulcio-like leaf, a Rekor-like log key that signs the SET and a
// checkpoint over a two-leaf tree). Each test breaks one piece and expects its distinct reason.

#include <gtest/gtest.h>

#include <functional>
#include <string>

#include <nlohmann/json.hpp>

#include "testing/sigstore_util.h"
#include "verify/base64.h"
#include "verify/digest.h"
#include "verify/hasher.h"
#include "verify/keyless.h"
#include "verify/tlog.h"
#include "verify/x509.h"

namespace digestd::verify {
namespace {

using digestd::testing::TestSigstore;
using nlohmann::json;
using Options = TestSigstore::Options;

constexpr std::string_view kArtifact = "hello, keyless world\n";
const BundleExpectation kWho{.identity = std::string(TestSigstore::kIdentity),
                             .issuer = std::string(TestSigstore::kIssuer)};

std::string Reason(const Result<BundleVerdict>& v) {
  if (v) return "valid";
  const std::string& why = v.error().context();
  return why.substr(0, why.find(':'));
}

class KeylessTest : public ::testing::Test {
 protected:
  SigstoreTrustedRoot Root(const std::string& json_text) {
    auto r = SigstoreTrustedRoot::Parse(json_text, "test");
    EXPECT_TRUE(r) << r.error().ToString();
    return *r;
  }
  // "valid" or the failure reason of a message-signature bundle made with `o`.
  std::string Verify(const Options& o, const BundleExpectation& e = kWho,
                     std::string_view artifact = kArtifact) {
    return Reason(VerifyBundle(sig_.MessageBundle(kArtifact, o),
                               {.bytes = std::string(artifact)}, Root(sig_.TrustedRootJson()), e));
  }
  TestSigstore sig_;
};

TEST_F(KeylessTest, MadeHereVerifies) {
  EXPECT_EQ(Verify({}), "valid");
  EXPECT_EQ(Verify({}, {}), "valid");  // no identity required: any signer of this CA
  auto v = VerifyBundle(sig_.MessageBundle(kArtifact), {.bytes = std::string(kArtifact)},
                        Root(sig_.TrustedRootJson()), kWho);
  ASSERT_TRUE(v) << v.error().ToString();
  EXPECT_EQ(v->identity, TestSigstore::kIdentity);
  EXPECT_EQ(v->issuer, TestSigstore::kIssuer);
  EXPECT_EQ(v->trusted_times, std::vector<std::int64_t>{TestSigstore::kSignedAt});
  // By digest only, too.
  auto by_digest = VerifyBundle(sig_.MessageBundle(kArtifact),
                                {.digest = Hasher::Of(DigestAlgorithm::kSha256, kArtifact)},
                                Root(sig_.TrustedRootJson()), kWho);
  EXPECT_TRUE(by_digest) << by_digest.error().ToString();
}

TEST_F(KeylessTest, StatementBundleNamesItsSubject) {
  const Digest subject = Hasher::Of(DigestAlgorithm::kSha256, "a manifest");
  const std::string b = sig_.StatementBundle(subject, kCosignSignPredicate);
  auto v = VerifyBundle(b, {.digest = subject}, Root(sig_.TrustedRootJson()), kWho);
  ASSERT_TRUE(v) << v.error().ToString();
  ASSERT_TRUE(v->statement);
  EXPECT_EQ(v->statement->predicate_type, kCosignSignPredicate);
  EXPECT_EQ(Reason(VerifyBundle(b, {.digest = Hasher::Of(DigestAlgorithm::kSha256, "other")},
                                Root(sig_.TrustedRootJson()), kWho)),
            "artifact");
  Options logged_other;
  logged_other.logged_signature = sig_.SignWithLeafKey("something else");
  EXPECT_EQ(Reason(VerifyBundle(sig_.StatementBundle(subject, kCosignSignPredicate, logged_other),
                                {.digest = subject}, Root(sig_.TrustedRootJson()), kWho)),
            "tlog-body");
}

TEST_F(KeylessTest, IdentityAndIssuerMustMatch) {
  EXPECT_EQ(Verify({}, {.identity = "mallory@example.com", .issuer = kWho.issuer}), "identity");
  EXPECT_EQ(Verify({}, {.identity = kWho.identity, .issuer = "https://evil.example"}), "issuer");
  Options uri;
  uri.leaf.san = "URI:https://github.com/org/repo/.github/workflows/release.yml@refs/heads/main";
  EXPECT_EQ(Verify(uri, {.identity = "https://github.com/org/repo/.github/workflows/"
                                     "release.yml@refs/heads/main",
                         .issuer = kWho.issuer}),
            "valid");
}

TEST_F(KeylessTest, ArtifactAndSignature) {
  EXPECT_EQ(Verify({}, kWho, "another artifact"), "artifact");
}

TEST_F(KeylessTest, CertificateChecks) {
  Options no_eku;
  no_eku.leaf.code_signing = false;
  EXPECT_EQ(Verify(no_eku), "certificate-usage");
  Options late;
  late.integrated_time = TestSigstore::kSignedAt + 3600;  // logged after the leaf expired
  EXPECT_EQ(Verify(late), "certificate-validity");
  // The same log, but the CAs of another sigstore: no chain.
  TestSigstore other;
  json root = json::parse(sig_.TrustedRootJson());
  root["certificateAuthorities"] = json::parse(other.TrustedRootJson())["certificateAuthorities"];
  EXPECT_EQ(Reason(VerifyBundle(sig_.MessageBundle(kArtifact), {.bytes = std::string(kArtifact)},
                                Root(root.dump()), kWho)),
            "certificate-chain");
  // A CA whose validFor does not cover the signing time.
  json window = json::parse(sig_.TrustedRootJson());
  window["certificateAuthorities"][0]["validFor"] = {{"start", "2026-01-01T00:00:00Z"}};
  EXPECT_EQ(Reason(VerifyBundle(sig_.MessageBundle(kArtifact), {.bytes = std::string(kArtifact)},
                                Root(window.dump()), kWho)),
            "certificate-chain");
}

TEST_F(KeylessTest, TransparencyLogChecks) {
  Options bad_set;
  bad_set.corrupt_set = true;
  EXPECT_EQ(Verify(bad_set), "tlog-set");
  Options bad_proof;
  bad_proof.corrupt_proof = true;
  EXPECT_EQ(Verify(bad_proof), "tlog-inclusion");
  Options other_note;
  other_note.checkpoint_by_other_key = true;
  EXPECT_EQ(Verify(other_note), "tlog-inclusion");
  Options other_sig;
  other_sig.logged_signature = sig_.SignWithLeafKey("something else");
  EXPECT_EQ(Verify(other_sig), "tlog-body");
  // An inclusion proof alone does not make integratedTime a trusted time.
  Options no_set;
  no_set.with_set = false;
  EXPECT_EQ(Verify(no_set), "no-trusted-time");
}

TEST_F(KeylessTest, UnknownLogAndBadRoots) {
  TestSigstore other;
  EXPECT_EQ(Reason(VerifyBundle(sig_.MessageBundle(kArtifact), {.bytes = std::string(kArtifact)},
                                Root(other.TrustedRootJson()), kWho)),
            "tlog-unknown");
  // Trusted roots that must not load.
  const json j = json::parse(sig_.TrustedRootJson());
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
  json empty_chain = j;
  empty_chain["certificateAuthorities"][0]["certChain"]["certificates"] = json::array();
  EXPECT_FALSE(SigstoreTrustedRoot::Parse(empty_chain.dump(), "t"));
  EXPECT_FALSE(SigstoreTrustedRoot::Parse("{\"mediaType\": 1}", "t"));
  json null_end = j;
  null_end["tlogs"][0]["publicKey"]["validFor"]["end"] = nullptr;  // absent, not an error
  EXPECT_TRUE(SigstoreTrustedRoot::Parse(null_end.dump(), "t"));
}

TEST_F(KeylessTest, MalformedBundlesAreRefused) {
  const SigstoreTrustedRoot root = Root(sig_.TrustedRootJson());
  const json good = json::parse(sig_.MessageBundle(kArtifact));
  auto reason = [&](const json& b) {
    return Reason(VerifyBundle(b.dump(), {.bytes = std::string(kArtifact)}, root, kWho));
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
  x = good;
  x["verificationMaterial"]["timestampVerificationData"] = {
      {"rfc3161Timestamps", {{{"signedTimestamp", "MAA="}}, {{"signedTimestamp", "MAA="}}}}};
  EXPECT_EQ(reason(x), "timestamp");  // duplicates
  EXPECT_FALSE(VerifyBundle("{\"mediaType\":", {.bytes = "x"}, root, kWho));
  EXPECT_FALSE(VerifyBundle(std::string(2u << 20, ' '), {.bytes = "x"}, root, kWho));
  // A key for a keyless bundle, and no key for a key-signed one.
  auto key = PublicKey::FromPem(sig_.LogPublicPem());
  ASSERT_TRUE(key);
  EXPECT_EQ(Reason(VerifyBundle(good.dump(), {.bytes = std::string(kArtifact)}, root,
                                {.key = *key})),
            "key");
}

TEST_F(KeylessTest, LegacyCosignLayout) {
  const SigstoreTrustedRoot root = Root(sig_.TrustedRootJson());
  const std::string payload = "{\"critical\":{}}";
  auto reason = [&](const SimpleSignature& s, const BundleExpectation& e = kWho) {
    return Reason(VerifyCosignKeyless(s, root, e));
  };
  EXPECT_EQ(reason(sig_.CosignSignature(payload).layer), "valid");
  EXPECT_EQ(reason(sig_.CosignSignature(payload).layer, {.identity = "x@y", .issuer = kWho.issuer}),
            "identity");
  // A root that holds only the root CA (as a policy's fulcio.caPath does): the intermediate must
  // come from the chain annotation.
  auto ca = Certificate::FromPem(sig_.RootPem());
  auto log_key = PublicKey::FromPem(sig_.LogPublicPem());
  ASSERT_TRUE(ca && log_key);
  const auto bare = SigstoreTrustedRoot::FromParts({Authority{"ca", {(*ca)->der()}, {}}},
                                                   {LogKey{"log", sig_.LogId(), *log_key, {}}});
  SimpleSignature s = sig_.CosignSignature(payload).layer;
  EXPECT_EQ(Reason(VerifyCosignKeyless(s, bare, kWho)), "valid");
  s.annotations.erase("dev.sigstore.cosign/chain");
  EXPECT_EQ(Reason(VerifyCosignKeyless(s, bare, kWho)), "certificate-chain");
  s = sig_.CosignSignature(payload).layer;
  s.annotations.erase("dev.sigstore.cosign/bundle");
  EXPECT_EQ(reason(s), "no-trusted-time");
  Options bad_set;
  bad_set.corrupt_set = true;
  EXPECT_EQ(reason(sig_.CosignSignature(payload, bad_set).layer), "tlog-set");
  Options other_sig;
  other_sig.logged_signature = sig_.SignWithLeafKey("x");
  EXPECT_EQ(reason(sig_.CosignSignature(payload, other_sig).layer), "tlog-body");
  Options late;
  late.integrated_time = TestSigstore::kSignedAt + 3600;
  EXPECT_EQ(reason(sig_.CosignSignature(payload, late).layer), "certificate-validity");
  s = sig_.CosignSignature(payload).layer;
  s.payload += " ";
  EXPECT_EQ(reason(s), "signature");
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
      return TestSigstore::Sha256(std::string("\x01", 1) + root(lo, k) + root(lo + k, n - k));
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
