// Real signatures from public projects (../shared/vectors, see its INDEX.md for sources and
// verdicts), checked through the same code the daemon uses. Skips with a message when the vectors
// are not beside the checkout; CI always has them.

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "testing/test_util.h"
#include "testing/vectors.h"
#include "verify/base64.h"
#include "verify/evidence_dir.h"
#include "verify/hasher.h"
#include "verify/policy.h"
#include "verify/public_key.h"

namespace digestd::verify {
namespace {

namespace fs = std::filesystem;
using digestd::testing::TempDir;

const fs::path kVectors = digestd::testing::VectorsDir();
const fs::path kFixtures = kVectors / "containers-image/signature/fixtures";
constexpr std::int64_t kNow = 1'780'000'000;


std::string Read(const fs::path& p) {
  auto r = ReadFileCapped(p, 16 << 20);
  EXPECT_TRUE(r.has_value()) << p;
  return r ? *r : std::string();
}

Policy KeyPolicy(const fs::path& key, std::string_view identity) {
  const std::string text =
      R"({"default":[{"type":"sigstoreSigned","keyPath":")" + key.string() +
      R"(","signedIdentity":{"type":")" + std::string(identity) + R"("}}]})";
  auto p = Policy::Parse(text, "vector-policy.json", "/");
  EXPECT_TRUE(p.has_value()) << p.error().ToString();
  return std::move(*p);
}

Decision EvaluateDir(const std::string& dir, const fs::path& key, std::string_view identity,
                     std::string_view reference) {
  const fs::path d = kFixtures / dir;
  auto evidence = LoadEvidenceDir(d);
  EXPECT_TRUE(evidence.has_value()) << evidence.error().ToString();
  const Digest digest = Hasher::Of(DigestAlgorithm::kSha256, Read(d / "manifest.json"));
  return KeyPolicy(key, identity)
      .Evaluate(*Reference::Parse(reference), digest, evidence->evidence, nullptr, kNow);
}

constexpr std::string_view kSample = "192.168.64.2:5000/cosign-signed-single-sample";

TEST(ContainersImageVectors, KeySignedVerdicts) {
  DIGESTD_REQUIRE_VECTORS();
  const fs::path key_a = kFixtures / "cosign.pub", key_b = kFixtures / "cosign2.pub";
  struct Case {
    std::string dir;
    fs::path key;
    std::string identity;
    std::string reference;
    bool valid;
    std::string reason;  // substring of the denial
  };
  const Case cases[] = {
      {"dir-img-cosign-valid", key_a, "matchRepository", std::string(kSample), true, ""},
      {"dir-img-cosign-valid", key_b, "matchRepository", std::string(kSample), false,
       "does not verify"},
      // cosign signs the repository without a tag: matchExact cannot hold.
      {"dir-img-cosign-valid", key_a, "matchExact", std::string(kSample) + ":latest", false,
       "matchExact"},
      {"dir-img-cosign-valid-2", key_a, "matchRepository", std::string(kSample), true, ""},
      {"dir-img-cosign-mixed", key_a, "matchRepository", std::string(kSample), true, ""},
      {"dir-img-cosign-modified-manifest", key_a, "matchRepository", std::string(kSample), false,
       "is for sha256:634a8f35"},
      {"dir-img-cosign-manifest-digest-error", key_a, "matchRepository", std::string(kSample),
       false, "is for"},
      {"dir-img-cosign-other-attachment", key_a, "matchRepository", std::string(kSample), false,
       "media type \"text/plain\""},
      {"dir-img-cosign-key-rekor-valid", key_b, "matchRepository",
       "192.168.64.2:5000/cosign-signed/key-1", true, ""},
      {"dir-img-cosign-key-rekor-valid", key_a, "matchRepository",
       "192.168.64.2:5000/cosign-signed/key-1", false, "does not verify"},
      // Tag mutation: signed for :tag, presented as :othertag.
      {"dir-img-cosign-valid-with-tag", key_a, "matchExact", "192.168.64.2:5000/skopeo-signed:tag",
       true, ""},
      {"dir-img-cosign-valid-with-tag", key_a, "matchExact",
       "192.168.64.2:5000/skopeo-signed:othertag", false, "matchExact"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.dir + " key=" + c.key.filename().string() + " " + c.identity + " " +
                 c.reference);
    const Decision d = EvaluateDir(c.dir, c.key, c.identity, c.reference);
    EXPECT_EQ(d.allowed, c.valid) << d.reason;
    if (!c.valid) {
      EXPECT_NE(d.reason.find(c.reason), std::string::npos) << d.reason;
    }
  }
}

TEST(ContainersImageVectors, NoManifestAndUnknownKey) {
  DIGESTD_REQUIRE_VECTORS();
  // A signature without the image manifest cannot be judged: there is no digest to compare.
  EXPECT_FALSE(ReadFileCapped(kFixtures / "dir-img-cosign-no-manifest/manifest.json", 1 << 20));
  // A valid signature by a key nobody configured.
  auto sig = ParseContainersSigstoreSignature(Read(kFixtures / "unknown-cosign-key.signature"));
  ASSERT_OK(sig);
  auto payload = ParseSimpleSigningPayload(sig->payload);
  ASSERT_OK(payload);
  for (const char* key : {"cosign.pub", "cosign2.pub"}) {
    const Decision d = KeyPolicy(kFixtures / key, "matchRepository")
                           .Evaluate(*Reference::Parse(payload->docker_reference),
                                     payload->manifest_digest, {.signatures = {*sig}}, nullptr,
                                     kNow);
    EXPECT_FALSE(d.allowed) << key;
    EXPECT_NE(d.reason.find("does not verify"), std::string::npos) << d.reason;
  }
  // The RSA fixture key loads as a signing key (it is refused only as a Rekor key, issue 7).
  EXPECT_TRUE(PublicKey::FromPem(Read(kFixtures / "some-rsa-key.pub")));
}

TEST(ContainersImageVectors, DerivedSignaturesVerifyWithOpenSslSemantics) {
  DIGESTD_REQUIRE_VECTORS();
  const fs::path derived = kVectors / "containers-image/derived";
  auto key = PublicKey::FromPem(Read(kFixtures / "cosign.pub"));
  ASSERT_OK(key);
  for (const char* name : {"dir-img-cosign-valid__signature-1", "dir-img-cosign-valid-2__signature-2",
                           "dir-img-cosign-mixed__signature-2"}) {
    const std::string payload = Read(derived / (std::string(name) + ".payload"));
    const std::string der = Read(derived / (std::string(name) + ".sig.der"));
    SCOPED_TRACE(name);
    EXPECT_OK((*key)->Verify(payload, der));
    auto b64 = Base64Decode(Read(derived / (std::string(name) + ".sig.b64")));
    ASSERT_OK(b64);
    EXPECT_EQ(*b64, der);
  }
  EXPECT_FALSE((*key)->Verify(Read(derived / "dir-img-cosign-mixed__signature-1.payload"),
                              Read(derived / "dir-img-cosign-mixed__signature-1.sig.der")));
}

TEST(CosignVectors, BlobAttestationsWithDsse) {
  DIGESTD_REQUIRE_VECTORS();
  const fs::path dir = kVectors / "cosign/extracted/verify_blob_attestation";
  const Digest blob = Hasher::Of(DigestAlgorithm::kSha256, Read(dir / "blob"));
  const Digest other = Hasher::Of(DigestAlgorithm::kSha256, Read(dir / "other-blob"));
  auto policy_for = [&](std::string_view predicate) {
    auto p = Policy::Parse(R"({"default":[{"type":"insecureAcceptAnything"}],"digestd":{"requiredAttestations":[{"predicateType":")" +
                               std::string(predicate) + R"(","keyPath":")" +
                               (dir / "pubkey.pem").string() + R"("}]}})",
                           "att-policy.json", "/");
    EXPECT_TRUE(p.has_value()) << p.error().ToString();
    return std::move(*p);
  };
  const Policy slsa = policy_for("https://slsa.dev/provenance/v0.2");
  const Reference ref = *Reference::Parse("reg.test/blob:1");
  auto eval = [&](const Policy& p, const char* file, const Digest& d) {
    return p.Evaluate(ref, d, {.attestations = {Read(dir / file)}}, nullptr, kNow).allowed;
  };
  EXPECT_TRUE(eval(slsa, "blobSLSAProvenanceSignature.dsse.json", blob));
  EXPECT_FALSE(eval(slsa, "blobSLSAProvenanceSignature.dsse.json", other));
  EXPECT_FALSE(eval(policy_for("custom"), "blobSLSAProvenanceSignature.dsse.json", blob));
  EXPECT_FALSE(eval(slsa, "dssePredicateEmptySubject.dsse.json", blob));
  EXPECT_FALSE(eval(slsa, "dssePredicateMissingSha256.dsse.json", blob));
  EXPECT_TRUE(eval(slsa, "dssePredicateMultipleSubjects.dsse.json", blob));
  EXPECT_FALSE(eval(slsa, "dssePredicateMultipleSubjectsInvalid.dsse.json", blob));
}

TEST(CosignV3Vectors, KeySignedBundleAsOciReferrer) {
  DIGESTD_REQUIRE_VECTORS();
  const fs::path td = kVectors / "tobby-fetch/internal/sigverify/testdata";
  const Digest subject = *Digest::Parse(
      "sha256:d7d5640c741c60b47fa4b5530daa20a6469b55754a89dd42adbadadb59f9093c");
  // Lay the referrer out as fetched: its manifest and the bundle blob under its digest.
  TempDir sigdir;
  fs::copy_file(td / "bundle-referring-manifest.json", sigdir.path() / "referrer.manifest.json");
  fs::create_directories(sigdir.path() / "blobs/sha256");
  const std::string bundle = Read(td / "bundle-sigstore.json");
  const std::string hex(Hasher::Of(DigestAlgorithm::kSha256, bundle).hex());
  std::ofstream(sigdir.path() / "blobs/sha256" / hex, std::ios::binary) << bundle;
  auto evidence = LoadEvidenceDir(sigdir.path());
  ASSERT_OK(evidence);
  ASSERT_EQ(evidence->evidence.bundles.size(), 1u);
  const Reference ref = *Reference::Parse("localhost:15381/tobby/fixture");
  const Decision ok = KeyPolicy(td / "bundle-cosign.pub", "matchRepository")
                          .Evaluate(ref, subject, evidence->evidence, nullptr, kNow);
  EXPECT_TRUE(ok.allowed) << ok.reason;
  // Any other key, and any other subject digest, is refused.
  EXPECT_FALSE(KeyPolicy(kFixtures / "cosign.pub", "matchRepository")
                   .Evaluate(ref, subject, evidence->evidence, nullptr, kNow)
                   .allowed);
  const Decision other = KeyPolicy(td / "bundle-cosign.pub", "matchRepository")
                             .Evaluate(ref, Hasher::Of(DigestAlgorithm::kSha256, "x"),
                                       evidence->evidence, nullptr, kNow);
  EXPECT_FALSE(other.allowed);
  EXPECT_NE(other.reason.find("is not about"), std::string::npos) << other.reason;
  // Altered blob bytes no longer match the referrer's descriptor and are ignored.
  std::ofstream(sigdir.path() / "blobs/sha256" / hex, std::ios::binary | std::ios::app) << " ";
  auto tampered = LoadEvidenceDir(sigdir.path());
  ASSERT_OK(tampered);
  EXPECT_TRUE(tampered->evidence.bundles.empty());
  EXPECT_FALSE(tampered->notes.empty());
}

TEST(CosignV3Vectors, ClassicCosignLayoutCapture) {
  DIGESTD_REQUIRE_VECTORS();
  const fs::path cc = kVectors / "tobby-fetch/extracted/cosign_compat_test";
  const std::string manifest_name =
      "sha256-f20c43161d73848408ef247f0ec7111b19fe58ffebc0cbcaa0d2c8bda4967268.sig.manifest.json";
  TempDir sigdir;
  fs::copy_file(cc / manifest_name, sigdir.path() / manifest_name);
  fs::create_directories(sigdir.path() / "blobs/sha256");
  const std::string payload = Read(cc / "payload.json");
  fs::copy_file(cc / "payload.json",
                sigdir.path() / "blobs/sha256" /
                    std::string(Hasher::Of(DigestAlgorithm::kSha256, payload).hex()));
  auto evidence = LoadEvidenceDir(sigdir.path());
  ASSERT_OK(evidence);
  ASSERT_EQ(evidence->evidence.signatures.size(), 1u);
  const Digest image = *Digest::Parse(
      "sha256:f20c43161d73848408ef247f0ec7111b19fe58ffebc0cbcaa0d2c8bda4967268");
  const Decision d = KeyPolicy(cc / "cosign.pub", "matchRepoDigestOrExact")
                         .Evaluate(*Reference::Parse("localhost:15381/tobby/fixture@" +
                                                     image.ToString()),
                                   image, evidence->evidence, nullptr, kNow);
  EXPECT_TRUE(d.allowed) << d.reason;
  // The detached signature file and the DER agree with the annotation.
  auto key = PublicKey::FromPem(Read(cc / "cosign.pub"));
  ASSERT_OK(key);
  EXPECT_OK((*key)->Verify(payload, Read(cc / "signature.der")));
}

}  // namespace
}  // namespace digestd::verify

namespace digestd::verify {
namespace {

// containers/image's keyless fixture through the policy: fulcio caPath + rekorPublicKeyPath, as
// containers-policy.json(5) writes them.
TEST(ContainersImageVectors, KeylessFulcioRekorThroughThePolicy) {
  DIGESTD_REQUIRE_VECTORS();
  const fs::path fx = digestd::testing::VectorsDir() / "containers-image/signature/fixtures";
  auto policy = [&](std::string_view email, std::string_view issuer) {
    const std::string text =
        R"({"default":[{"type":"sigstoreSigned","fulcio":{"caPath":")" +
        (fx / "fulcio_v1.crt.pem").string() + R"(","oidcIssuer":")" + std::string(issuer) +
        R"(","subjectEmail":")" + std::string(email) + R"("},"rekorPublicKeyPath":")" +
        (fx / "rekor.pub").string() + R"(","signedIdentity":{"type":"matchRepository"}}]})";
    auto p = Policy::Parse(text, "keyless-policy.json", "/");
    EXPECT_TRUE(p.has_value()) << p.error().ToString();
    return std::move(*p);
  };
  const fs::path d = fx / "dir-img-cosign-fulcio-rekor-valid";
  auto evidence = LoadEvidenceDir(d);
  ASSERT_OK(evidence);
  auto manifest = ReadFileCapped(d / "manifest.json", 1 << 20);
  ASSERT_OK(manifest);
  const Digest digest = Hasher::Of(DigestAlgorithm::kSha256, *manifest);
  const Reference ref = *Reference::Parse("192.168.64.2:5000/cosign-signed/fulcio-rekor-1");
  const Decision ok = policy("mitr@redhat.com", "https://github.com/login/oauth")
                          .Evaluate(ref, digest, evidence->evidence, nullptr, 1'780'000'000);
  EXPECT_TRUE(ok.allowed) << ok.reason;
  EXPECT_EQ(ok.signer, "keyless mitr@redhat.com (https://github.com/login/oauth)");
  const Decision who = policy("someone@redhat.com", "https://github.com/login/oauth")
                           .Evaluate(ref, digest, evidence->evidence, nullptr, 1'780'000'000);
  EXPECT_FALSE(who.allowed);
  EXPECT_NE(who.reason.find("identity"), std::string::npos) << who.reason;
  const Decision other_repo =
      policy("mitr@redhat.com", "https://github.com/login/oauth")
          .Evaluate(*Reference::Parse("192.168.64.2:5000/elsewhere"), digest, evidence->evidence,
                    nullptr, 1'780'000'000);
  EXPECT_FALSE(other_repo.allowed);
  // A key-signed fixture does not satisfy the keyless requirement.
  auto keyed = LoadEvidenceDir(fx / "dir-img-cosign-valid");
  ASSERT_OK(keyed);
  EXPECT_FALSE(policy("mitr@redhat.com", "https://github.com/login/oauth")
                   .Evaluate(*Reference::Parse("192.168.64.2:5000/cosign-signed-single-sample"),
                             digest, keyed->evidence, nullptr, 1'780'000'000)
                   .allowed);
}

// containers/image's private-PKI fixture: an RSA leaf from an organisation's own CA, no Rekor.
TEST(ContainersImageVectors, PrivatePkiThroughThePolicy) {
  DIGESTD_REQUIRE_VECTORS();
  const fs::path fx = digestd::testing::VectorsDir() / "containers-image/signature/fixtures";
  auto policy = [&](const std::string& subject, bool intermediates) {
    std::string text = R"({"default":[{"type":"sigstoreSigned","pki":{"caRootsPath":")" +
                       (fx / "pki_root_crts.pem").string() + "\"," + subject;
    if (intermediates) {
      text += R"(,"caIntermediatesPath":")" + (fx / "pki_intermediate_crts.pem").string() + "\"";
    }
    text += R"(},"signedIdentity":{"type":"matchRepository"}}]})";
    auto p = Policy::Parse(text, "pki-policy.json", "/");
    EXPECT_TRUE(p.has_value()) << p.error().ToString();
    return std::move(*p);
  };
  const fs::path d = fx / "dir-img-cosign-pki-valid";
  auto evidence = LoadEvidenceDir(d);
  ASSERT_OK(evidence);
  auto manifest = ReadFileCapped(d / "manifest.json", 1 << 20);
  ASSERT_OK(manifest);
  const Digest digest = Hasher::Of(DigestAlgorithm::kSha256, *manifest);
  const Reference ref = *Reference::Parse("localhost:5000/test");
  for (bool inter : {true, false}) {  // the chain annotation carries the intermediate too
    const Decision email = policy(R"("subjectEmail":"qiwan@redhat.com")", inter)
                               .Evaluate(ref, digest, evidence->evidence, nullptr, 1'780'000'000);
    EXPECT_TRUE(email.allowed) << email.reason;
    EXPECT_EQ(email.signer, "pki qiwan@redhat.com");
  }
  EXPECT_TRUE(policy(R"("subjectHostname":"myhost.example.com")", true)
                  .Evaluate(ref, digest, evidence->evidence, nullptr, 1'780'000'000)
                  .allowed);
  const Decision other = policy(R"("subjectEmail":"someone@redhat.com")", true)
                             .Evaluate(ref, digest, evidence->evidence, nullptr, 1'780'000'000);
  EXPECT_FALSE(other.allowed);
  EXPECT_NE(other.reason.find("identity"), std::string::npos) << other.reason;
  // Fulcio's root is not this PKI's root.
  const std::string fulcio =
      R"({"default":[{"type":"sigstoreSigned","pki":{"caRootsPath":")" +
      (fx / "fulcio_v1.crt.pem").string() + R"(","subjectEmail":"qiwan@redhat.com"}}]})";
  auto p = Policy::Parse(fulcio, "pki-policy.json", "/");
  ASSERT_OK(p);
  const Decision wrong_root = p->Evaluate(ref, digest, evidence->evidence, nullptr, 1'780'000'000);
  EXPECT_FALSE(wrong_root.allowed);
  EXPECT_NE(wrong_root.reason.find("certificate-chain"), std::string::npos) << wrong_root.reason;
  // After the PKI's certificates expire (2052), its signatures no longer verify.
  EXPECT_FALSE(policy(R"("subjectEmail":"qiwan@redhat.com")", true)
                   .Evaluate(ref, digest, evidence->evidence, nullptr, 2'600'000'000)
                   .allowed);
}

// cosign's keyless v0.3 attestation bundle as a required attestation, against cosign's trusted
// root: valid for its subject, refused for any other image.
TEST(CosignVectors, KeylessAttestationBundleThroughThePolicy) {
  DIGESTD_REQUIRE_VECTORS();
  const fs::path td = digestd::testing::VectorsDir() / "cosign/pkg/cosign/testdata";
  auto bundle = ReadFileCapped(td / "oci-attestation.sigstore.json", 1 << 20);
  ASSERT_OK(bundle);
  auto policy = [&](std::string_view email) {
    auto p = Policy::Parse(
        R"({"default":[{"type":"insecureAcceptAnything"}],"digestd":{"requiredAttestations":[{"predicateType":"https://cosign.sigstore.dev/attestation/v1","trustedRootPath":")" +
            (td / "trusted_root_pgi.json").string() +
            R"(","fulcio":{"oidcIssuer":"https://github.com/login/oauth","subjectEmail":")" +
            std::string(email) + R"("}}]}})",
        "att-policy.json", "/");
    EXPECT_TRUE(p.has_value()) << p.error().ToString();
    return std::move(*p);
  };
  const Digest subject = *Digest::Parse(
      "sha256:732112270d7e59418a8c080b134b24cabd67d250d0d0147a97ed95ba5c280aa4");
  const Reference ref = *Reference::Parse("127.0.0.1:60943/repo");
  const Decision ok =
      policy("cody@soyland.com").Evaluate(ref, subject, {.attestations = {*bundle}}, nullptr, 0);
  EXPECT_TRUE(ok.allowed) << ok.reason;
  EXPECT_FALSE(policy("cody@soyland.com")
                   .Evaluate(ref, Hasher::Of(DigestAlgorithm::kSha256, "x"),
                             {.attestations = {*bundle}}, nullptr, 0)
                   .allowed);
  EXPECT_FALSE(
      policy("eve@example.com").Evaluate(ref, subject, {.attestations = {*bundle}}, nullptr, 0).allowed);
}

}  // namespace
}  // namespace digestd::verify
