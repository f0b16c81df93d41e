// Keyless requirements in the policy (fulcio + rekorPublicKey, or trustedRootPath), with a
// sigstore the test makes itself (tests/testing/sigstore_util.h): cosign's legacy keyless layers,
// cosign v3 statement bundles, keyless attestations, denied keyless signers, and strict loading.

#include <gtest/gtest.h>

#include <fstream>

#include "testing/sigstore_util.h"
#include "testing/test_util.h"
#include "verify/base64.h"
#include "verify/hasher.h"
#include "verify/policy.h"

namespace digestd::verify {
namespace {

using digestd::testing::TempDir;
using digestd::testing::TestSigstore;

constexpr std::int64_t kNow = 1'780'000'000;

std::string Payload(std::string_view ref, const Digest& d) {
  return R"({"critical":{"identity":{"docker-reference":")" + std::string(ref) +
         R"("},"image":{"docker-manifest-digest":")" + d.ToString() +
         R"("},"type":"cosign container image signature"},"optional":null})";
}

Reference Ref(std::string_view s) {
  auto r = Reference::Parse(s);
  EXPECT_TRUE(r.has_value()) << s;
  return *r;
}

class PolicyKeylessTest : public ::testing::Test {
 protected:
  void SetUp() override {
    Write("fulcio.pem", sig_.RootPem());
    Write("rekor.pub", sig_.LogPublicPem());
    Write("trusted_root.json", sig_.TrustedRootJson());
  }
  void Write(const std::string& name, const std::string& text) {
    std::ofstream(dir_.path() / name) << text;
  }
  Result<Policy> TryLoad(const std::string& requirement, const std::string& org = "") {
    const std::string text =
        R"({"default":[{"type":"reject"}],"transports":{"docker":{"reg.test/team":[)" +
        requirement + "]}}" + (org.empty() ? "" : ",\"digestd\":" + org) + "}";
    return Policy::Parse(text, "policy.json", dir_.path());
  }
  Policy Load(const std::string& requirement, const std::string& org = "") {
    auto p = TryLoad(requirement, org);
    EXPECT_TRUE(p.has_value()) << p.error().ToString();
    return std::move(*p);
  }
  static std::string FulcioRekor(const std::string& subject = "dev@example.com",
                                 const std::string& issuer = "https://issuer.example") {
    return R"({"type":"sigstoreSigned","fulcio":{"caPath":"fulcio.pem","oidcIssuer":")" + issuer +
           R"(","subjectEmail":")" + subject +
           R"("},"rekorPublicKeyPath":"rekor.pub","signedIdentity":{"type":"matchRepository"}})";
  }
  static std::string TrustedRoot(const std::string& subject = "dev@example.com") {
    return R"({"type":"sigstoreSigned","trustedRootPath":"trusted_root.json","fulcio":{"oidcIssuer":"https://issuer.example","subject":")" +
           subject + R"("},"signedIdentity":{"type":"matchRepository"}})";
  }

  TempDir dir_;
  TestSigstore sig_;
  Digest digest_ = Hasher::Of(DigestAlgorithm::kSha256, "the manifest");
  Reference ref_ = Ref("reg.test/team/app:v1");
};

TEST_F(PolicyKeylessTest, LegacyKeylessSignatureIsAllowed) {
  for (const std::string& req : {FulcioRekor(), TrustedRoot()}) {
    Policy p = Load(req);
    Evidence ev{.signatures = {sig_.CosignSignature(Payload("reg.test/team/app", digest_)).layer}};
    Decision d = p.Evaluate(ref_, digest_, ev, nullptr, kNow);
    EXPECT_TRUE(d.allowed) << req << ": " << d.reason;
    EXPECT_EQ(d.signer, "keyless dev@example.com (https://issuer.example)");
    EXPECT_EQ(d.requirement, "sigstoreSigned");
  }
}

TEST_F(PolicyKeylessTest, WrongSignerDigestIdentityOrMissingPiecesAreDenied) {
  Policy p = Load(FulcioRekor());
  auto eval = [&](const SimpleSignature& s, const Digest& d) {
    return p.Evaluate(ref_, d, Evidence{.signatures = {s}}, nullptr, kNow);
  };
  const std::string payload = Payload("reg.test/team/app", digest_);
  // Another identity.
  TestSigstore::Options mallory;
  mallory.leaf.san = "email:mallory@example.com";
  Decision who = eval(sig_.CosignSignature(payload, mallory).layer, digest_);
  EXPECT_FALSE(who.allowed);
  EXPECT_NE(who.reason.find("identity"), std::string::npos) << who.reason;
  // Another issuer.
  TestSigstore::Options google;
  google.leaf.issuer = "https://accounts.google.com";
  EXPECT_FALSE(eval(sig_.CosignSignature(payload, google).layer, digest_).allowed);
  // Signed for another manifest.
  const Digest other = Hasher::Of(DigestAlgorithm::kSha256, "other");
  Decision moved = eval(sig_.CosignSignature(payload).layer, other);
  EXPECT_FALSE(moved.allowed);
  EXPECT_NE(moved.reason.find("not for " + other.ToString()), std::string::npos) << moved.reason;
  // Signed for another repository.
  Decision repo = eval(sig_.CosignSignature(Payload("reg.test/other/app", digest_)).layer, digest_);
  EXPECT_FALSE(repo.allowed) << repo.reason;
  // Without the Rekor bundle there is no trusted time.
  SimpleSignature no_set = sig_.CosignSignature(payload).layer;
  no_set.annotations.erase("dev.sigstore.cosign/bundle");
  Decision t = eval(no_set, digest_);
  EXPECT_FALSE(t.allowed);
  EXPECT_NE(t.reason.find("no-trusted-time"), std::string::npos) << t.reason;
  // A key-signed signature does not satisfy a keyless requirement.
  SimpleSignature keyed = sig_.CosignSignature(payload).layer;
  keyed.annotations.erase("dev.sigstore.cosign/certificate");
  Decision k = eval(keyed, digest_);
  EXPECT_FALSE(k.allowed);
  EXPECT_NE(k.reason.find("carries no certificate"), std::string::npos) << k.reason;
  // Another sigstore's signature (its own CA and log).
  TestSigstore stranger;
  EXPECT_FALSE(eval(stranger.CosignSignature(payload).layer, digest_).allowed);
}

TEST_F(PolicyKeylessTest, StatementBundlesAndKeylessAttestations) {
  Policy p = Load(TrustedRoot(), R"({"requiredAttestations":[{"predicateType":"https://slsa.dev/provenance/v1","trustedRootPath":"trusted_root.json","fulcio":{"oidcIssuer":"https://issuer.example","subjectEmail":"dev@example.com"}}]})");
  const std::string sign = sig_.StatementBundle(digest_, kCosignSignPredicate);
  const std::string provenance = sig_.StatementBundle(digest_, "https://slsa.dev/provenance/v1");
  Decision ok = p.Evaluate(ref_, digest_, {.bundles = {sign}, .attestations = {provenance}},
                           nullptr, kNow);
  EXPECT_TRUE(ok.allowed) << ok.reason;
  Decision no_att = p.Evaluate(ref_, digest_, {.bundles = {sign}}, nullptr, kNow);
  EXPECT_FALSE(no_att.allowed);
  EXPECT_EQ(no_att.requirement, "requiredAttestations");
  // The provenance bundle is not a signature (wrong predicate), and the signature bundle is not
  // the provenance.
  Decision swapped = p.Evaluate(ref_, digest_, {.bundles = {provenance}, .attestations = {sign}},
                                nullptr, kNow);
  EXPECT_FALSE(swapped.allowed);
  EXPECT_NE(swapped.reason.find("predicateType"), std::string::npos) << swapped.reason;
  // About another image.
  const Digest other = Hasher::Of(DigestAlgorithm::kSha256, "other");
  Decision wrong = p.Evaluate(ref_, digest_,
                              {.bundles = {sig_.StatementBundle(other, kCosignSignPredicate)},
                               .attestations = {provenance}},
                              nullptr, kNow);
  EXPECT_FALSE(wrong.allowed);
  EXPECT_NE(wrong.reason.find("artifact"), std::string::npos) << wrong.reason;
}

TEST_F(PolicyKeylessTest, DeniedKeylessSignerIsRefused) {
  Policy p = Load(FulcioRekor(), R"({"denySigners":{"keyless":[{"issuer":"https://issuer.example","identity":"dev@example.com"}]}})");
  Decision d = p.Evaluate(
      ref_, digest_,
      {.signatures = {sig_.CosignSignature(Payload("reg.test/team/app", digest_)).layer}}, nullptr,
      kNow);
  EXPECT_FALSE(d.allowed);
  EXPECT_NE(d.reason.find("denied by policy"), std::string::npos) << d.reason;
}

TEST_F(PolicyKeylessTest, PrivatePkiWithoutATransparencyLog) {
  Write("intermediate.pem", sig_.ChainPem().substr(0, sig_.ChainPem().find("-----END CERTIFICATE-----") + 26));
  Policy p = Load(R"({"type":"sigstoreSigned","pki":{"caRootsPath":"fulcio.pem","caIntermediatesPath":"intermediate.pem","subjectEmail":"dev@example.com"},"signedIdentity":{"type":"matchRepository"}})");
  SimpleSignature s = sig_.CosignSignature(Payload("reg.test/team/app", digest_)).layer;
  s.annotations.erase("dev.sigstore.cosign/bundle");
  s.annotations.erase("dev.sigstore.cosign/chain");  // the intermediate comes from the policy
  const std::int64_t during = TestSigstore::kSignedAt;
  Decision ok = p.Evaluate(ref_, digest_, {.signatures = {s}}, nullptr, during);
  EXPECT_TRUE(ok.allowed) << ok.reason;
  EXPECT_EQ(ok.signer, "pki dev@example.com");
  // The chain is checked at evaluation time: after the leaf expires, the signature is refused.
  Decision later = p.Evaluate(ref_, digest_, {.signatures = {s}}, nullptr, during + 86400);
  EXPECT_FALSE(later.allowed);
  EXPECT_NE(later.reason.find("certificate-chain"), std::string::npos) << later.reason;
  // Hostname required but absent.
  Policy host = Load(R"({"type":"sigstoreSigned","pki":{"caRootsPath":"fulcio.pem","caIntermediatesPath":"intermediate.pem","subjectHostname":"build.example.com"}})");
  EXPECT_FALSE(host.Evaluate(ref_, digest_, {.signatures = {s}}, nullptr, during).allowed);
  // Without the intermediate there is no path to the root.
  Policy roots_only = Load(R"({"type":"sigstoreSigned","pki":{"caRootsPath":"fulcio.pem","subjectEmail":"dev@example.com"}})");
  EXPECT_FALSE(roots_only.Evaluate(ref_, digest_, {.signatures = {s}}, nullptr, during).allowed);
  // pki does not go with a log or Fulcio, and needs a subject.
  EXPECT_FALSE(TryLoad(R"({"type":"sigstoreSigned","pki":{"caRootsPath":"fulcio.pem","subjectEmail":"a@b"},"rekorPublicKeyPath":"rekor.pub"})"));
  EXPECT_FALSE(TryLoad(R"({"type":"sigstoreSigned","pki":{"caRootsPath":"fulcio.pem"}})"));
}

TEST_F(PolicyKeylessTest, ExplainNamesTheSigner) {
  Decision d = Load(FulcioRekor()).Explain(ref_);
  EXPECT_TRUE(d.allowed);
  EXPECT_NE(d.reason.find("signed keyless by \"dev@example.com\""), std::string::npos) << d.reason;
}

TEST_F(PolicyKeylessTest, StrictLoading) {
  Write("intermediate-and-root.pem", sig_.ChainPem());
  Write("ed.pub", "-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEAPn+AREHoBaZ7wgS1zBqpxmLSGnyhxXj4lFxSdWVB8o8=\n-----END PUBLIC KEY-----\n");
  const std::pair<std::string, std::string> bad[] = {
      {R"({"type":"sigstoreSigned","fulcio":{"caPath":"fulcio.pem","subjectEmail":"a@b"},"rekorPublicKeyPath":"rekor.pub"})",
       "missing \"oidcIssuer\""},
      {R"({"type":"sigstoreSigned","fulcio":{"caPath":"fulcio.pem","oidcIssuer":"https://i"},"rekorPublicKeyPath":"rekor.pub"})",
       "exactly one of subjectEmail and subject"},
      {R"({"type":"sigstoreSigned","fulcio":{"caPath":"fulcio.pem","oidcIssuer":"https://i","subjectEmail":"a@b","subject":"c"},"rekorPublicKeyPath":"rekor.pub"})",
       "exactly one of subjectEmail and subject"},
      {R"({"type":"sigstoreSigned","fulcio":{"caPath":"fulcio.pem","oidcIssuer":"https://i","subjectEmail":"a@b"}})",
       "without a Rekor signed entry timestamp"},
      {R"({"type":"sigstoreSigned","fulcio":{"oidcIssuer":"https://i","subjectEmail":"a@b"},"rekorPublicKeyPath":"rekor.pub"})",
       "exactly one of caPath and caData"},
      {R"({"type":"sigstoreSigned","fulcio":{"caPath":"missing.pem","oidcIssuer":"https://i","subjectEmail":"a@b"},"rekorPublicKeyPath":"rekor.pub"})",
       "cannot read"},
      {R"({"type":"sigstoreSigned","fulcio":{"caPath":"intermediate-and-root.pem","oidcIssuer":"https://i","subjectEmail":"a@b"},"rekorPublicKeyPath":"rekor.pub"})",
       "only root certificates"},
      {R"({"type":"sigstoreSigned","fulcio":{"caPath":"fulcio.pem","oidcIssuer":"https://i","subjectEmail":"a@b"},"rekorPublicKeyPath":"ed.pub"})",
       "a Rekor key must be ECDSA"},
      {R"({"type":"sigstoreSigned","trustedRootPath":"trusted_root.json","fulcio":{"caPath":"fulcio.pem","oidcIssuer":"https://i","subjectEmail":"a@b"}})",
       "must not be given with it"},
      {R"({"type":"sigstoreSigned","trustedRootPath":"rekor.pub","fulcio":{"oidcIssuer":"https://i","subjectEmail":"a@b"}})",
       "trustedRootPath"},
      {R"({"type":"sigstoreSigned","keyPath":"rekor.pub","fulcio":{"caPath":"fulcio.pem","oidcIssuer":"https://i","subjectEmail":"a@b"},"rekorPublicKeyPath":"rekor.pub"})",
       "do not mix"},
      {R"({"type":"sigstoreSigned","fulcio":{"caPath":"fulcio.pem","oidcIssuer":"https://i","subjectEmail":"a@b","extra":1},"rekorPublicKeyPath":"rekor.pub"})",
       "unknown field \"extra\""},
  };
  for (const auto& [req, msg] : bad) {
    auto p = TryLoad(req);
    ASSERT_FALSE(p) << req;
    EXPECT_NE(p.error().context().find(msg), std::string::npos) << req << " -> " << p.error().context();
    EXPECT_NE(p.error().context().find("policy.json"), std::string::npos) << p.error().context();
  }
  // caData and rekorPublicKeyData carry the same files inline.
  EXPECT_TRUE(TryLoad(R"({"type":"sigstoreSigned","fulcio":{"caData":")" + Base64Encode(sig_.RootPem()) +
                      R"(","oidcIssuer":"https://i","subjectEmail":"a@b"},"rekorPublicKeyData":")" +
                      Base64Encode(sig_.LogPublicPem()) + R"("})"));
}

}  // namespace
}  // namespace digestd::verify
