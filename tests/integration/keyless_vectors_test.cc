// Keyless (and key-signed) sigstore bundles from public projects, verified offline through
// `digestctl verify-bundle`: every case of sigstore-conformance's bundle-verify suite, cosign's
// v0.3 attestation bundle, sigstore-go's and sigstore-python's bundles; and containers/image's
// legacy keyless signatures (Fulcio certificate + Rekor SET annotations) through the library.
// Verdicts are those of ../shared/vectors/INDEX.md. Skips (with a message) when the vectors are
// not beside the checkout.

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <string>

#include <nlohmann/json.hpp>

#include "testing/process_util.h"
#include "testing/test_util.h"
#include "testing/vectors.h"
#include "verify/base64.h"
#include "verify/cosign.h"
#include "verify/evidence_dir.h"
#include "verify/hasher.h"
#include "verify/keyless.h"
#include "verify/x509.h"

namespace digestd::verify {
namespace {

namespace fs = std::filesystem;
using digestd::testing::Shell;

const fs::path kVectors = digestd::testing::VectorsDir();
const fs::path kConformance = kVectors / "sigstore-conformance/test/assets/bundle-verify";
const fs::path kProdRoot =
    kVectors / "sigstore-python/sigstore/_store/https%3A%2F%2Ftuf-repo-cdn.sigstore.dev/trusted_root.json";
const fs::path kStagingRoot =
    kVectors / "sigstore-python/sigstore/_store/https%3A%2F%2Ftuf-repo-cdn.sigstage.dev/trusted_root.json";
const fs::path kPublicGood = kVectors / "sigstore-go/pkg/testing/data/trusted-roots/public-good.json";


std::string Q(const std::string& s) {
  std::string out = "'";
  for (char c : s) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}

struct Outcome {
  int status = -1;
  std::string reason;  // "" when valid; the failure reason; "bad-input" for exit 2
  std::string output;
};

Outcome VerifyCli(const std::vector<std::string>& args) {
  std::string cmd = Q(DIGESTD_DIGESTCTL) + " --json verify-bundle";
  for (const auto& a : args) cmd += " " + Q(a);
  auto r = Shell(cmd);
  Outcome o{r.status, "", r.output};
  if (r.status == 2) {
    o.reason = "bad-input";
  } else if (r.status == 1) {
    auto j = nlohmann::json::parse(r.output.substr(0, r.output.find('\n')), nullptr, false);
    o.reason = j.is_object() ? j.value("reason", "?") : "?";
  }
  return o;
}

std::string ReadText(const fs::path& p) {
  std::string s = digestd::testing::Slurp(p);
  while (!s.empty() && (s.back() == '\n' || s.back() == '\r')) s.pop_back();
  return s;
}

// The reason each failing case must be refused for (what its README describes).
const std::map<std::string, std::string> kExpectedReason = {
    {"bundle-empty-certificate-chain_fail", "malformed"},
    {"bundle-from-wrong-instance_fail", "tlog-unknown"},
    {"bundle-malformed-json_fail", "malformed"},
    {"bundle-negative-log-index_fail", "malformed"},
    {"bundle-with-root-cert_fail", "certificate-chain"},
    {"checkpoint-wrong-roothash_fail", "tlog-inclusion"},
    {"dsse-invalid-sig_fail", "signature"},
    {"dsse-mismatch-sig_fail", "tlog-body"},
    {"inclusion-proof-corrupted-hash_fail", "tlog-inclusion"},
    {"incorrect-public-key_fail", "tlog-body"},
    {"intoto-expired-certificate_fail", "certificate-validity"},
    {"intoto-log-entry-mismatch_fail", "tlog-body"},
    {"intoto-set-outside-signing-cert-validity_fail", "certificate-validity"},
    {"intoto-tsa-timestamp-outside-cert-validity_fail", "certificate-validity"},
    {"invalid-checkpoint-signature_fail", "tlog-inclusion"},
    {"invalid-ct-key_fail", "sct"},
    {"managed-key-wrong-key_fail", "bad-input"},  // its key.pub is a corrupt PEM
    {"message-digest-mismatch_fail", "artifact"},
    {"rekor2-checkpoint-missing-log-signature_fail", "tlog-inclusion"},
    {"rekor2-checkpoint-missing-origin_fail", "tlog-inclusion"},
    {"rekor2-checkpoint-missing-size_fail", "tlog-inclusion"},
    {"rekor2-dsse-invalid-sig_fail", "signature"},
    {"rekor2-dsse-mismatch-sig_fail", "tlog-body"},
    {"rekor2-no-timestamp_fail", "no-trusted-time"},
    {"rekor2-timestamp-outside-trust-root-tsa-validity_fail", "no-trusted-time"},
    {"rekor2-timestamp-payload-mismatch_fail", "no-trusted-time"},
    {"rekor2-timestamp-untrusted-tsa-with-embedded-cert_fail", "no-trusted-time"},
    {"set-invalid-signature_fail", "tlog-set"},
    {"trust-root-tlog-missing-validity-start_fail", "bad-input"},  // the trusted root is refused
    {"wrong-hashedrekord-artifact_fail", "tlog-body"},
    {"wrong-hashedrekord-cert-and-sig_fail", "tlog-body"},
    {"wrong-material_fail", "artifact"},
};

TEST(KeylessVectorsTest, EveryConformanceCaseThroughTheCli) {
  DIGESTD_REQUIRE_VECTORS();
  int cases = 0, valid = 0;
  for (const auto& entry : fs::directory_iterator(kConformance)) {
    if (!entry.is_directory()) continue;
    const fs::path d = entry.path();
    const std::string name = d.filename();
    const bool want_valid = !name.ends_with("_fail");
    std::vector<std::string> args = {
        "--trusted-root", fs::exists(d / "trusted_root.json") ? d / "trusted_root.json" : kProdRoot,
        "--bundle", d / "bundle.sigstore.json",
        "--artifact", fs::exists(d / "artifact") ? d / "artifact" : kConformance / "a.txt"};
    if (fs::exists(d / "key.pub")) {
      args.insert(args.end(), {"--key", d / "key.pub"});
    } else {
      args.insert(args.end(),
                  {"--identity",
                   fs::exists(d / "identity")
                       ? ReadText(d / "identity")
                       : "https://github.com/sigstore-conformance/extremely-dangerous-public-oidc-"
                         "beacon/.github/workflows/extremely-dangerous-oidc-beacon.yml@refs/heads/main",
                   "--issuer",
                   fs::exists(d / "issuer") ? ReadText(d / "issuer")
                                            : "https://token.actions.githubusercontent.com"});
    }
    const Outcome o = VerifyCli(args);
    ++cases;
    if (want_valid) {
      ++valid;
      EXPECT_EQ(o.status, 0) << name << ": " << o.output;
    } else {
      EXPECT_TRUE(o.status == 1 || o.status == 2) << name << ": " << o.output;
      auto it = kExpectedReason.find(name);
      ASSERT_NE(it, kExpectedReason.end()) << "new failing case without an expected reason: " << name;
      EXPECT_EQ(o.reason, it->second) << name << ": " << o.output;
    }
  }
  EXPECT_EQ(cases, 47);  // the suite as INDEX.md lists it; a new case must be looked at
  EXPECT_EQ(valid, 15);
}

// The first subject digest of a DSSE bundle's in-toto statement ("sha256:.." or "sha512:..").
std::string SubjectDigest(const fs::path& bundle) {
  auto j = nlohmann::json::parse(digestd::testing::Slurp(bundle));
  auto payload = Base64Decode(j["dsseEnvelope"]["payload"].get<std::string>());
  auto st = nlohmann::json::parse(*payload);
  const auto& d = st["subject"][0]["digest"];
  if (d.contains("sha256")) return "sha256:" + d["sha256"].get<std::string>();
  return "sha512:" + d["sha512"].get<std::string>();
}

TEST(KeylessVectorsTest, CosignAttestationBundle) {
  DIGESTD_REQUIRE_VECTORS();
  const fs::path dir = kVectors / "cosign/pkg/cosign/testdata";
  const std::string root = dir / "trusted_root_pgi.json";
  const std::string bundle = dir / "oci-attestation.sigstore.json";
  const std::string subject =
      "sha256:732112270d7e59418a8c080b134b24cabd67d250d0d0147a97ed95ba5c280aa4";
  EXPECT_EQ(SubjectDigest(bundle), subject);
  Outcome ok = VerifyCli({"--trusted-root", root, "--bundle", bundle, "--artifact-digest", subject,
                          "--identity", "cody@soyland.com", "--issuer",
                          "https://github.com/login/oauth"});
  EXPECT_EQ(ok.status, 0) << ok.output;
  Outcome other = VerifyCli({"--trusted-root", root, "--bundle", bundle, "--artifact-digest",
                             "sha256:" + std::string(64, 'a')});
  EXPECT_EQ(other.reason, "artifact") << other.output;
  Outcome who = VerifyCli({"--trusted-root", root, "--bundle", bundle, "--artifact-digest", subject,
                           "--identity", "mallory@example.com", "--issuer",
                           "https://github.com/login/oauth"});
  EXPECT_EQ(who.reason, "identity") << who.output;
  Outcome iss = VerifyCli({"--trusted-root", root, "--bundle", bundle, "--artifact-digest", subject,
                           "--identity", "cody@soyland.com", "--issuer", "https://evil.example"});
  EXPECT_EQ(iss.reason, "issuer") << iss.output;
}

TEST(KeylessVectorsTest, SigstoreGoBundles) {
  DIGESTD_REQUIRE_VECTORS();
  const fs::path go = kVectors / "sigstore-go";
  const fs::path bundles = go / "pkg/testing/data/bundles";
  for (const fs::path& b : {bundles / "dsse.sigstore.json",
                           bundles / "sigstore.js@2.0.0-provenance.sigstore.json",
                           go / "examples/bundle-provenance.json"}) {
    Outcome o = VerifyCli({"--trusted-root", kPublicGood, "--bundle", b, "--artifact-digest",
                           SubjectDigest(b)});
    EXPECT_EQ(o.status, 0) << b << ": " << o.output;
  }
  // The npm provenance with a wrong sha512 subject.
  Outcome wrong = VerifyCli({"--trusted-root", kPublicGood, "--bundle",
                             bundles / "sigstore.js@2.0.0-provenance.sigstore.json",
                             "--artifact-digest", "sha512:" + std::string(128, '0')});
  EXPECT_EQ(wrong.reason, "artifact") << wrong.output;
  Outcome two = VerifyCli({"--trusted-root", kPublicGood, "--bundle", bundles / "dsse-2sigs.sigstore.json",
                           "--artifact-digest", SubjectDigest(bundles / "dsse-2sigs.sigstore.json")});
  EXPECT_EQ(two.reason, "malformed") << two.output;
  EXPECT_NE(two.output.find("exactly one signature"), std::string::npos) << two.output;
  Outcome publish = VerifyCli({"--trusted-root", kPublicGood, "--bundle", go / "examples/bundle-publish.json",
                               "--artifact-digest", SubjectDigest(go / "examples/bundle-publish.json"),
                               "--key", go / "examples/publish_key.pub"});
  EXPECT_EQ(publish.status, 0) << publish.output;
  // otherName SAN (1.3.6.1.4.1.57264.1.7) against the scaffolding root.
  const std::string scaffolding = go / "pkg/testing/data/trusted-roots/scaffolding.json";
  const std::string othername = bundles / "othername.sigstore.json";
  const std::string digest = "sha256:bc103b4a84971ef6459b294a2b98568a2bfb72cded09d4acd1e16366a401f95b";
  Outcome on = VerifyCli({"--trusted-root", scaffolding, "--bundle", othername, "--artifact-digest",
                          digest, "--identity", "foo!oidc.local", "--issuer", "http://oidc.local:8080"});
  EXPECT_EQ(on.status, 0) << on.output;
  Outcome off = VerifyCli({"--trusted-root", scaffolding, "--bundle", othername, "--artifact-digest",
                           digest, "--identity", "foo@oidc.local", "--issuer", "http://oidc.local:8080"});
  EXPECT_EQ(off.reason, "identity") << off.output;
  // A key-signed bundle with only an RFC 3161 timestamp (the root holds only a TSA).
  Outcome pkv = VerifyCli(
      {"--trusted-root", go / "pkg/testing/data/trusted-roots/public-key-validity.json", "--bundle",
       bundles / "public-key-validity.sigstore.json", "--artifact-digest",
       "sha256:6ae8a75555209fd6c44157c0aed8016e763ff435a19cf186f76863140143ff72", "--key",
       go / "pkg/testing/data/public-keys/public-key-validity.pem"});
  EXPECT_EQ(pkv.status, 0) << pkv.output;
  // The key's validity window is judged at the signed timestamp (GHSA-wqqc-jjcq-vfxm).
  std::vector<std::string> pkv_args = {
      "--trusted-root", go / "pkg/testing/data/trusted-roots/public-key-validity.json", "--bundle",
      bundles / "public-key-validity.sigstore.json", "--artifact-digest",
      "sha256:6ae8a75555209fd6c44157c0aed8016e763ff435a19cf186f76863140143ff72", "--key",
      go / "pkg/testing/data/public-keys/public-key-validity.pem"};
  auto with = [&](std::vector<std::string> extra) {
    auto a = pkv_args;
    a.insert(a.end(), extra.begin(), extra.end());
    return VerifyCli(a);
  };
  EXPECT_EQ(with({"--key-valid-from", "2026-06-04T17:00:00Z", "--key-valid-until",
                  "2026-06-04T18:00:00Z"}).status, 0);
  EXPECT_EQ(with({"--key-valid-from", "1970-01-01T00:00:00Z", "--key-valid-until",
                  "1970-01-01T00:00:01Z"}).reason, "key");
  // The npm provenance with another identity.
  Outcome npm_who = VerifyCli(
      {"--trusted-root", kPublicGood, "--bundle", bundles / "sigstore.js@2.0.0-provenance.sigstore.json",
       "--artifact-digest", SubjectDigest(bundles / "sigstore.js@2.0.0-provenance.sigstore.json"),
       "--identity", "https://github.com/evil/repo/.github/workflows/release.yml@refs/heads/main",
       "--issuer", "https://token.actions.githubusercontent.com"});
  EXPECT_EQ(npm_who.reason, "identity") << npm_who.output;
}

TEST(KeylessVectorsTest, SigstorePythonBundles) {
  DIGESTD_REQUIRE_VECTORS();
  const fs::path a = kVectors / "sigstore-python/test/assets";
  for (const auto& [artifact, bundle] : std::vector<std::pair<std::string, std::string>>{
           {"bundle.txt", "bundle.txt.sigstore"},
           {"bundle_v3.txt", "bundle_v3.txt.sigstore"},
           {"bundle_v3_alt.txt", "bundle_v3_alt.txt.sigstore"},
           {"staging-rekor-v2.txt", "staging-rekor-v2.txt.sigstore.json"}}) {
    Outcome o = VerifyCli({"--trusted-root", kStagingRoot, "--bundle", a / bundle, "--artifact", a / artifact});
    EXPECT_EQ(o.status, 0) << bundle << ": " << o.output;
  }
  for (const auto& [stem, reason] : std::vector<std::pair<std::string, std::string>>{
           {"bundle_cve_2022_36056.txt", "tlog-body"},
           {"bundle_invalid_version.txt", "malformed"},
           {"bundle_no_cert_v1.txt", "malformed"},
           {"bundle_no_log_entry.txt", "tlog-missing"},
           {"bundle_no_checkpoint.txt", "tlog-inclusion"}}) {
    Outcome o = VerifyCli({"--trusted-root", kStagingRoot, "--bundle", a / (stem + ".sigstore"),
                           "--artifact", a / stem});
    EXPECT_EQ(o.reason, reason) << stem << ": " << o.output;
  }
  Outcome no_time = VerifyCli({"--trusted-root", kProdRoot, "--bundle",
                               a / "bundle_v3_no_signed_time.txt.sigstore.json", "--artifact",
                               a / "bundle_v3_no_signed_time.txt"});
  EXPECT_EQ(no_time.reason, "no-trusted-time") << no_time.output;

  // RFC 3161: the test TSA's trust config embeds its trusted root.
  digestd::testing::TempDir tmp;
  const fs::path root = tmp.path() / "tsa_root.json";
  {
    auto cfg = nlohmann::json::parse(digestd::testing::Slurp(a / "tsa/trust_config.json"));
    std::ofstream(root) << cfg["trustedRoot"].dump();
  }
  Outcome tsa = VerifyCli({"--trusted-root", root, "--bundle", a / "tsa/bundle.txt.sigstore",
                           "--artifact", a / "tsa/bundle.txt"});
  EXPECT_EQ(tsa.status, 0) << tsa.output;  // one of its two timestamps fails and is ignored
  Outcome late = VerifyCli({"--trusted-root", root, "--bundle", a / "tsa/bundle.txt.late_timestamp.sigstore",
                            "--artifact", a / "tsa/bundle.txt"});
  EXPECT_EQ(late.status, 1) << late.output;
  Outcome dup = VerifyCli({"--trusted-root", root, "--bundle", a / "tsa/bundle.duplicate.sigstore",
                           "--artifact", a / "tsa/bundle.txt"});
  EXPECT_EQ(dup.reason, "timestamp") << dup.output;
  Outcome many = VerifyCli({"--trusted-root", root, "--bundle", a / "tsa/bundle.many_timestamp.sigstore",
                            "--artifact", a / "tsa/bundle.txt"});
  EXPECT_EQ(many.reason, "timestamp") << many.output;
  // Trusted roots that must not load.
  for (const char* bad : {"trustedroot.badtype.json", "certificate_authority.missingroot.json",
                          "certificate_authority.empty.json"}) {
    EXPECT_FALSE(SigstoreTrustedRoot::LoadFile(a / "trusted_root" / bad)) << bad;
  }
}

// containers/image's legacy layout: signature + certificate + chain + Rekor bundle annotations,
// checked against a root assembled from a Fulcio CA file and a Rekor key (as a policy gives them).
class LegacyKeylessTest : public ::testing::Test {
 protected:
  const fs::path fx = kVectors / "containers-image/signature/fixtures";
  SigstoreTrustedRoot Root() {
    auto ca = Certificate::FromPem(digestd::testing::Slurp(fx / "fulcio_v1.crt.pem"));
    EXPECT_TRUE(ca) << ca.error().ToString();
    auto rekor = PublicKey::FromPem(digestd::testing::Slurp(fx / "rekor.pub"));
    EXPECT_TRUE(rekor) << rekor.error().ToString();
    const Digest id = Hasher::Of(DigestAlgorithm::kSha256, (*rekor)->spki_der());
    const std::string raw = DigestBytes(id);
    return SigstoreTrustedRoot::FromParts({Authority{"fulcio_v1", {(*ca)->der()}, {}}},
                                          {LogKey{"rekor", raw, *rekor, {}}});
  }
  SimpleSignature Sig() {
    auto s = ParseContainersSigstoreSignature(
        digestd::testing::Slurp(fx / "dir-img-cosign-fulcio-rekor-valid/signature-1"));
    EXPECT_TRUE(s) << s.error().ToString();
    return *s;
  }
};

TEST_F(LegacyKeylessTest, FulcioRekorSignatureVerifies) {
  DIGESTD_REQUIRE_VECTORS();
  auto v = VerifyCosignKeyless(Sig(), Root(),
                               {.identity = "mitr@redhat.com", .issuer = "https://github.com/login/oauth"});
  ASSERT_TRUE(v) << v.error().ToString();
  EXPECT_EQ(v->identity, "mitr@redhat.com");
  EXPECT_EQ(v->trusted_times, std::vector<std::int64_t>{1674247893});
}

TEST_F(LegacyKeylessTest, EveryMissingOrWrongPieceIsRefused) {
  DIGESTD_REQUIRE_VECTORS();
  const SigstoreTrustedRoot root = Root();
  auto reason = [&](const SimpleSignature& s, const BundleExpectation& e) {
    auto v = VerifyCosignKeyless(s, root, e);
    return v ? std::string("valid") : v.error().context().substr(0, v.error().context().find(':'));
  };
  const BundleExpectation who{.identity = "mitr@redhat.com", .issuer = "https://github.com/login/oauth"};
  EXPECT_EQ(reason(Sig(), {.identity = "mallory@example.com", .issuer = who.issuer}), "identity");
  EXPECT_EQ(reason(Sig(), {.identity = who.identity, .issuer = "https://accounts.google.com"}), "issuer");
  SimpleSignature s = Sig();
  s.annotations.erase("dev.sigstore.cosign/chain");  // no intermediate: no path to the root
  EXPECT_EQ(reason(s, who), "certificate-chain");
  s = Sig();
  s.annotations.erase("dev.sigstore.cosign/bundle");
  EXPECT_EQ(reason(s, who), "no-trusted-time");
  s = Sig();
  s.annotations.erase("dev.sigstore.cosign/certificate");
  EXPECT_EQ(reason(s, who), "malformed");
  s = Sig();
  s.payload += " ";
  EXPECT_EQ(reason(s, who), "signature");
  s = Sig();
  s.annotations["dev.sigstore.cosign/bundle"] = [&] {
    auto j = nlohmann::json::parse(s.annotations["dev.sigstore.cosign/bundle"]);
    j["Payload"]["integratedTime"] = j["Payload"]["integratedTime"].get<std::int64_t>() + 3600;
    return j.dump();
  }();
  EXPECT_EQ(reason(s, who), "tlog-set");  // moving the time breaks the SET
  // A root without the Rekor key: the SET's log is unknown.
  auto ca = Certificate::FromPem(digestd::testing::Slurp(fx / "fulcio_v1.crt.pem"));
  const auto no_log = SigstoreTrustedRoot::FromParts({Authority{"fulcio_v1", {(*ca)->der()}, {}}}, {});
  auto v = VerifyCosignKeyless(Sig(), no_log, who);
  ASSERT_FALSE(v);
  EXPECT_TRUE(v.error().context().starts_with("tlog-unknown")) << v.error().context();
}

}  // namespace
}  // namespace digestd::verify
