// Keyless and private-PKI signed images pulled from a real registry. The signatures are made with
// a sigstore of the test's own (tests/testing/sigstore_util.h) and attached with the real cosign
// (`cosign attach signature` for Fulcio-style certificates, `cosign sign --certificate` for a
// private PKI), so the layers, annotations and tags are exactly what cosign writes.

#include <fstream>

#include "integration/pull_fixture.h"
#include "testing/sigstore_util.h"

namespace digestd::daemon {
namespace {

using digestd::testing::TestSigstore;

class PullKeylessTest : public PullTest {
 protected:
  void SetUp() override {
    PullTest::SetUp();
    fs::create_directories(dir_.path() / "att");
    Write("keys/root.pem", sig_.RootPem());
    Write("keys/rekor.pub", sig_.LogPublicPem());
  }
  void Write(const std::string& name, const std::string& text) {
    std::ofstream(dir_.path() / name, std::ios::binary) << text;
  }
  std::string Payload(const std::string& repo, const std::string& digest) {
    return R"({"critical":{"identity":{"docker-reference":")" + registry_->host() + "/" + repo +
           R"("},"image":{"docker-manifest-digest":")" + digest +
           R"("},"type":"cosign container image signature"},"optional":null})";
  }
  // cosign attaches payload, signature, certificate and chain; the Rekor bundle annotation
  // (which cosign writes when it uploads to Rekor itself) is added to that layer afterwards.
  void AttachKeyless(const std::string& repo, const std::string& digest,
                     const TestSigstore::Options& o = {}) {
    const auto l = sig_.CosignSignature(Payload(repo, digest), o);
    const std::string d = dir_.path().string();
    Write("att/payload.json", l.layer.payload);
    Write("att/sig.b64", l.signature_b64);
    Write("att/cert.pem", l.certificate_pem);
    Write("att/chain.pem", l.chain_pem);
    auto attach = Shell(DIGESTD_COSIGN " attach signature --payload " + d + "/att/payload.json" +
                        " --signature " + d + "/att/sig.b64 --certificate " + d + "/att/cert.pem" +
                        " --certificate-chain " + d + "/att/chain.pem --allow-http-registry"
                        " --allow-insecure-registry " + registry_->host() + "/" + repo + "@" +
                        digest);
    ASSERT_EQ(attach.status, 0) << attach.output;
    const std::string url = "http://" + registry_->host() + "/v2/" + repo + "/manifests/sha256-" +
                            digest.substr(7) + ".sig";
    auto got = Shell("curl -sf -H 'Accept: application/vnd.oci.image.manifest.v1+json' " + url);
    ASSERT_EQ(got.status, 0) << got.output;
    auto m = nlohmann::json::parse(got.output);
    bool found = false;
    for (auto& layer : m["layers"]) {
      if (layer["annotations"].value(std::string(verify::kCosignSignatureAnnotation), "") ==
          l.signature_b64) {
        layer["annotations"]["dev.sigstore.cosign/bundle"] = l.rekor_bundle;
        found = true;
      }
    }
    ASSERT_TRUE(found) << got.output;
    Write("att/manifest.json", m.dump());
    auto put = Shell("curl -sf -X PUT -H 'Content-Type: application/vnd.oci.image.manifest.v1+json'"
                     " --data-binary @" + d + "/att/manifest.json " + url);
    ASSERT_EQ(put.status, 0) << put.output;
  }
  std::string FulcioPolicy(const std::string& email) {
    return R"({"type":"sigstoreSigned","fulcio":{"caPath":"keys/root.pem","oidcIssuer":"https://issuer.example","subjectEmail":")" +
           email + R"("},"rekorPublicKeyPath":"keys/rekor.pub","signedIdentity":{"type":"matchRepository"}})";
  }

  TestSigstore sig_;
};

TEST_F(PullKeylessTest, FulcioRekorSignedImageIsPulled) {
  const std::string digest = PushBusybox("test/keyless:v1");
  AttachKeyless("test/keyless", digest);
  // The real cosign verifies it offline: the SET with our log key, the chain at the SET's time.
  auto verify = Shell("cd " + dir_.path().string() +
                      " && SIGSTORE_REKOR_PUBLIC_KEY=keys/rekor.pub " DIGESTD_COSIGN
                      " verify --offline --certificate-chain att/chain.pem --certificate-identity "
                      "dev@example.com --certificate-oidc-issuer https://issuer.example "
                      "--insecure-ignore-sct --allow-http-registry --allow-insecure-registry " +
                      registry_->host() + "/test/keyless@" + digest);
  EXPECT_EQ(verify.status, 0) << verify.output;
  WritePolicy(FulcioPolicy("dev@example.com"));
  auto r = Pull("test/keyless:v1");
  ASSERT_TRUE(r.has_value()) << r.error().ToString();
  EXPECT_EQ(r->manifest.ToString(), digest);
  EXPECT_EQ(r->decision.signer, "keyless dev@example.com (https://issuer.example)");
  EXPECT_TRUE(store_->Contains(r->layers[0]));
  const std::string audit = AuditText();
  EXPECT_NE(audit.find("keyless dev@example.com (https://issuer.example)"), std::string::npos)
      << audit;
}

TEST_F(PullKeylessTest, WrongSignerOrBrokenLogEvidenceIsRefusedAndNothingCommitted) {
  const std::string digest = PushBusybox("test/keyless-bad:v1");
  AttachKeyless("test/keyless-bad", digest);
  WritePolicy(FulcioPolicy("release@example.com"));
  auto who = Pull("test/keyless-bad:v1");
  ASSERT_FALSE(who.has_value());
  EXPECT_NE(who.error().ToString().find("identity"), std::string::npos) << who.error().ToString();
  EXPECT_FALSE(store_->Contains(*verify::Digest::Parse(digest)));
  EXPECT_EQ(StagingEntries(), 0u);

  // A second image whose SET was tampered with: the only signature does not count.
  const std::string d2 = PushBusybox("test/keyless-set:v1");
  TestSigstore::Options bad_set;
  bad_set.corrupt_set = true;
  AttachKeyless("test/keyless-set", d2, bad_set);
  WritePolicy(FulcioPolicy("dev@example.com"));
  auto set = Pull("test/keyless-set:v1");
  ASSERT_FALSE(set.has_value());
  EXPECT_NE(set.error().ToString().find("tlog-set"), std::string::npos) << set.error().ToString();
  EXPECT_FALSE(store_->Contains(*verify::Digest::Parse(d2)));
  EXPECT_NE(AuditText().find("tlog-set"), std::string::npos);
}

TEST_F(PullKeylessTest, PrivatePkiSignedByTheRealCosignIsPulled) {
  const std::string digest = PushBusybox("test/pki:v1");
  const std::int64_t now = std::chrono::duration_cast<std::chrono::seconds>(
                               std::chrono::system_clock::now().time_since_epoch())
                               .count();
  TestSigstore::Leaf leaf;
  leaf.not_before = now - 3600;
  leaf.not_after = now + 86400;
  // The fixture's cosign key pair (cosign's own format) gets a certificate from our CA.
  Write("keys/leaf.pem",
        sig_.LeafPemForKey(leaf, digestd::testing::Slurp(dir_.path() / "keys/cosign.pub")));
  Write("keys/chain.pem", sig_.ChainPem());
  auto sign = Shell("cd " + dir_.path().string() + " && COSIGN_PASSWORD= " DIGESTD_COSIGN
                    " sign --key keys/cosign.key --certificate keys/leaf.pem --certificate-chain "
                    "keys/chain.pem --tlog-upload=false --allow-http-registry "
                    "--allow-insecure-registry --yes " +
                    registry_->host() + "/test/pki@" + digest);
  ASSERT_EQ(sign.status, 0) << sign.output;
  // The real cosign accepts what it signed against our chain...
  auto verify = Shell("cd " + dir_.path().string() + " && " DIGESTD_COSIGN
                      " verify --certificate-chain keys/chain.pem --certificate-identity "
                      "dev@example.com --certificate-oidc-issuer https://issuer.example "
                      "--insecure-ignore-sct --insecure-ignore-tlog --allow-http-registry "
                      "--allow-insecure-registry " +
                      registry_->host() + "/test/pki@" + digest);
  EXPECT_EQ(verify.status, 0) << verify.output;
  // ...and so does digestd.
  WritePolicy(R"({"type":"sigstoreSigned","pki":{"caRootsPath":"keys/root.pem","subjectEmail":"dev@example.com"},"signedIdentity":{"type":"matchRepository"}})");
  auto r = Pull("test/pki:v1");
  ASSERT_TRUE(r.has_value()) << r.error().ToString();
  EXPECT_NE(AuditText().find("pki dev@example.com"), std::string::npos);
  // Another PKI's root refuses it.
  TestSigstore other;
  Write("keys/other-root.pem", other.RootPem());
  WritePolicy(R"({"type":"sigstoreSigned","pki":{"caRootsPath":"keys/other-root.pem","subjectEmail":"dev@example.com"},"signedIdentity":{"type":"matchRepository"}})");
  const std::string d2 = PushBusybox("test/pki-other:v1");
  auto sign2 = Shell("cd " + dir_.path().string() + " && COSIGN_PASSWORD= " DIGESTD_COSIGN
                     " sign --key keys/cosign.key --certificate keys/leaf.pem --certificate-chain "
                     "keys/chain.pem --tlog-upload=false --allow-http-registry "
                     "--allow-insecure-registry --yes " +
                     registry_->host() + "/test/pki-other@" + d2);
  ASSERT_EQ(sign2.status, 0) << sign2.output;
  auto refused = Pull("test/pki-other:v1");
  ASSERT_FALSE(refused.has_value());
  EXPECT_NE(refused.error().ToString().find("certificate-chain"), std::string::npos)
      << refused.error().ToString();
}

}  // namespace
}  // namespace digestd::daemon
