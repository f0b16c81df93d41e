// Policy, trust roots and decisions, with keys and signatures the test makes itself.

#include "verify/policy.h"

#include <gtest/gtest.h>

#include <fstream>

#include "testing/crypto_util.h"
#include "testing/test_util.h"
#include "verify/base64.h"
#include "verify/hasher.h"
#include "verify/oci.h"
#include "verify/policy_set.h"
#include "verify/scope.h"
#include "verify/trust.h"

namespace digestd::verify {
namespace {

using digestd::testing::TempDir;
using digestd::testing::TestKey;
namespace fs = std::filesystem;

constexpr std::int64_t kNow = 1'780'000'000;  // 2026-05-28

std::string Payload(std::string_view ref, const Digest& d) {
  return R"({"critical":{"identity":{"docker-reference":")" + std::string(ref) +
         R"("},"image":{"docker-manifest-digest":")" + d.ToString() +
         R"("},"type":"cosign container image signature"},"optional":null})";
}

SimpleSignature Sign(const TestKey& key, const std::string& payload) {
  return SimpleSignature{
      .media_type = std::string(media::kCosignSimpleSigning),
      .payload = payload,
      .annotations = {{std::string(kCosignSignatureAnnotation), Base64Encode(key.Sign(payload))}}};
}

Reference Ref(std::string_view s) {
  auto r = Reference::Parse(s);
  EXPECT_TRUE(r.has_value()) << s;
  return *r;
}

class PolicyTest : public ::testing::Test {
 protected:
  void SetUp() override {
    Write("team.pub", team_.PublicPem());
    Write("old.pub", old_.PublicPem());
    Write("att.pub", att_.PublicPem());
  }
  void Write(const std::string& name, const std::string& text) {
    std::ofstream(dir_.path() / name) << text;
  }
  Policy Load(const std::string& text) {
    auto p = Policy::Parse(text, "policy.json", dir_.path());
    EXPECT_TRUE(p.has_value()) << p.error().ToString();
    return std::move(*p);
  }
  Result<Policy> TryLoad(const std::string& text) {
    return Policy::Parse(text, "policy.json", dir_.path());
  }
  TrustRoot Trust(const std::string& text) {
    auto t = TrustRoot::Parse(text, "trust.json", dir_.path());
    EXPECT_TRUE(t.has_value()) << t.error().ToString();
    return std::move(*t);
  }

  // A policy requiring team.pub signatures for reg.test/team, rejecting everything else.
  std::string TeamPolicy(std::string identity = R"({"type":"matchRepository"})",
                         std::string org = "") {
    return R"({"default":[{"type":"reject"}],"transports":{"docker":{"reg.test/team":[{"type":"sigstoreSigned","keyPath":"team.pub","signedIdentity":)" +
           identity + "}]}}" + (org.empty() ? "" : ",\"digestd\":" + org) + "}";
  }

  TempDir dir_;
  TestKey team_ = TestKey::EcP256();
  TestKey old_ = TestKey::EcP256();
  TestKey att_ = TestKey::Ed25519();
  TestKey stranger_ = TestKey::EcP256();
  Digest digest_ = Hasher::Of(DigestAlgorithm::kSha256, "the manifest");
};

TEST_F(PolicyTest, SignedImageIsAllowedAndDecisionNamesRuleAndSigner) {
  Policy p = Load(TeamPolicy());
  Evidence ev{.signatures = {Sign(team_, Payload("reg.test/team/app", digest_))}};
  Decision d = p.Evaluate(Ref("reg.test/team/app:v1"), digest_, ev, nullptr, kNow);
  EXPECT_TRUE(d.allowed) << d.reason;
  EXPECT_EQ(d.scope, "docker:reg.test/team");
  EXPECT_EQ(d.requirement, "sigstoreSigned");
  EXPECT_TRUE(d.signer.starts_with("sha256:"));
  EXPECT_NE(d.ToJson().find("\"allowed\":true"), std::string::npos);
}

TEST_F(PolicyTest, UnsignedWrongKeyAndTamperedPayloadsAreDenied) {
  Policy p = Load(TeamPolicy());
  const Reference ref = Ref("reg.test/team/app:v1");
  Decision none = p.Evaluate(ref, digest_, {}, nullptr, kNow);
  EXPECT_FALSE(none.allowed);
  EXPECT_NE(none.reason.find("no signatures found"), std::string::npos) << none.reason;

  Decision wrong_key = p.Evaluate(
      ref, digest_, {.signatures = {Sign(stranger_, Payload("reg.test/team/app", digest_))}},
      nullptr, kNow);
  EXPECT_FALSE(wrong_key.allowed);
  EXPECT_NE(wrong_key.reason.find("does not verify"), std::string::npos) << wrong_key.reason;

  // Signed for another digest.
  const Digest other = Hasher::Of(DigestAlgorithm::kSha256, "another manifest");
  Decision digest_mismatch = p.Evaluate(
      ref, digest_, {.signatures = {Sign(team_, Payload("reg.test/team/app", other))}}, nullptr,
      kNow);
  EXPECT_FALSE(digest_mismatch.allowed);
  EXPECT_NE(digest_mismatch.reason.find("is for " + other.ToString()), std::string::npos);

  // Tampering after signing: digest, identity, one added space.
  SimpleSignature good = Sign(team_, Payload("reg.test/team/app", digest_));
  for (auto tamper : {+[](std::string& s) { s.replace(s.find("sha256:") + 7, 1, "0"); },
                      +[](std::string& s) { s.replace(s.find("team/app"), 8, "team/bad"); },
                      +[](std::string& s) { s.insert(1, " "); }}) {
    SimpleSignature t = good;
    tamper(t.payload);
    Decision d = p.Evaluate(ref, digest_, {.signatures = {t}}, nullptr, kNow);
    EXPECT_FALSE(d.allowed) << t.payload;
    EXPECT_NE(d.reason.find("does not verify"), std::string::npos) << d.reason;
  }
  // A non-simple-signing layer and a missing annotation.
  SimpleSignature other_media = good;
  other_media.media_type = "text/plain";
  EXPECT_FALSE(p.Evaluate(ref, digest_, {.signatures = {other_media}}, nullptr, kNow).allowed);
  SimpleSignature no_ann = good;
  no_ann.annotations.clear();
  EXPECT_FALSE(p.Evaluate(ref, digest_, {.signatures = {no_ann}}, nullptr, kNow).allowed);
  // One good signature among bad ones is enough.
  EXPECT_TRUE(p.Evaluate(ref, digest_, {.signatures = {other_media, no_ann, good}}, nullptr, kNow)
                  .allowed);
}

TEST_F(PolicyTest, TagMutationIsRefused) {
  // Signed for :v1, presented as :v2.
  Policy exact = Load(TeamPolicy(R"({"type":"matchExact"})"));
  Evidence ev{.signatures = {Sign(team_, Payload("reg.test/team/app:v1", digest_))}};
  EXPECT_TRUE(exact.Evaluate(Ref("reg.test/team/app:v1"), digest_, ev, nullptr, kNow).allowed);
  Decision moved = exact.Evaluate(Ref("reg.test/team/app:v2"), digest_, ev, nullptr, kNow);
  EXPECT_FALSE(moved.allowed);
  EXPECT_NE(moved.reason.find("matchExact"), std::string::npos) << moved.reason;
  Policy rdoe = Load(TeamPolicy(R"({"type":"matchRepoDigestOrExact"})"));
  EXPECT_FALSE(rdoe.Evaluate(Ref("reg.test/team/app:v2"), digest_, ev, nullptr, kNow).allowed);
  // Pulled by digest, the repository must match.
  EXPECT_TRUE(rdoe.Evaluate(Ref("reg.test/team/app@" + digest_.ToString()), digest_, ev, nullptr,
                            kNow)
                  .allowed);
  EXPECT_FALSE(rdoe.Evaluate(Ref("reg.test/team/other@" + digest_.ToString()), digest_, ev,
                             nullptr, kNow)
                   .allowed);
  // A reference naming one digest while the manifest hashed to another is refused outright.
  const Digest other = Hasher::Of(DigestAlgorithm::kSha256, "x");
  EXPECT_FALSE(
      rdoe.Evaluate(Ref("reg.test/team/app@" + other.ToString()), digest_, ev, nullptr, kNow)
          .allowed);
}

TEST_F(PolicyTest, IdentityRules) {
  const Reference img = Ref("reg.test/team/app:v1");
  SignedIdentity exact_ref{.type = IdentityMatch::kExactReference,
                           .docker_reference = "reg.test/release/app:1.0"};
  EXPECT_OK(MatchSignedIdentity(exact_ref, img, "reg.test/release/app:1.0"));
  EXPECT_FALSE(MatchSignedIdentity(exact_ref, img, "reg.test/release/app:1.1"));
  SignedIdentity exact_repo{.type = IdentityMatch::kExactRepository,
                            .docker_repository = "reg.test/release/app"};
  EXPECT_OK(MatchSignedIdentity(exact_repo, img, "reg.test/release/app"));
  EXPECT_FALSE(MatchSignedIdentity(exact_repo, img, "reg.test/release/other"));
  SignedIdentity remap{.type = IdentityMatch::kRemapIdentity,
                       .prefix = "mirror.test/team",
                       .signed_prefix = "reg.test/team"};
  EXPECT_OK(MatchSignedIdentity(remap, Ref("mirror.test/team/app:v1"), "reg.test/team/app:v1"));
  EXPECT_FALSE(MatchSignedIdentity(remap, Ref("mirror.test/teamx/app:v1"), "reg.test/team/app:v1"));
  EXPECT_FALSE(MatchSignedIdentity({}, img, "not a ref"));
}

TEST_F(PolicyTest, ScopePrecedenceMostSpecificFirst) {
  Policy p = Load(R"({"default":[{"type":"reject"}],"transports":{"docker":{
      "reg.test":[{"type":"reject"}],
      "reg.test/team":[{"type":"insecureAcceptAnything"}],
      "reg.test/team/app":[{"type":"reject"}],
      "reg.test/team/app:open":[{"type":"insecureAcceptAnything"}],
      "*.example.com":[{"type":"insecureAcceptAnything"}],
      "*.deep.example.com":[{"type":"reject"}],
      "docker.io/busybox":[{"type":"insecureAcceptAnything"}]}}})");
  auto scope = [&](std::string_view r) { return p.ScopeFor(Ref(r)).first; };
  EXPECT_EQ(scope("reg.test/team/app:open"), "docker:reg.test/team/app:open");
  EXPECT_EQ(scope("reg.test/team/app:v1"), "docker:reg.test/team/app");
  EXPECT_EQ(scope("reg.test/team/web:v1"), "docker:reg.test/team");
  EXPECT_EQ(scope("reg.test/other:v1"), "docker:reg.test");
  EXPECT_EQ(scope("a.example.com/x:1"), "docker:*.example.com");
  EXPECT_EQ(scope("a.deep.example.com/x:1"), "docker:*.deep.example.com");
  EXPECT_EQ(scope("example.com/x:1"), "default");  // the wildcard matches subdomains only
  EXPECT_EQ(scope("busybox:latest"), "docker:docker.io/library/busybox");
  EXPECT_EQ(scope("quay.io/x:1"), "default");
  EXPECT_TRUE(p.Evaluate(Ref("reg.test/team/web:v1"), digest_, {}, nullptr, kNow).allowed);
  Decision d = p.Evaluate(Ref("reg.test/team/app:v1"), digest_, {}, nullptr, kNow);
  EXPECT_FALSE(d.allowed);
  EXPECT_EQ(d.requirement, "reject");
}

// A host written in another case (or with the HTTPS default port) is the same host: it must not
// escape a scope, allowedRegistries, allowedNamespaces or denyReferences (found by review: an
// unsigned REG.internal.example.com/team/app was admitted under a "*.example.com" scope that
// required a signature, and Reg.internal... escaped a reject scope and denyReferences).
TEST_F(PolicyTest, HostCaseAndDefaultPortDoNotEscapeRules) {
  Policy p = Load(R"({"default":[{"type":"insecureAcceptAnything"}],"transports":{"docker":{
      "*.example.com":[{"type":"sigstoreSigned","keyPath":"team.pub"}],
      "Reg.Internal.Example.com/secret":[{"type":"reject"}],
      "blocked.example.org":[{"type":"reject"}]}},
      "digestd":{"denyReferences":["REG.internal.example.com/team/legacy*"],
                 "allowedRegistries":["REG.internal.example.com","blocked.example.org:443",
                                      "other.example.net"],
                 "allowedNamespaces":["Reg.Internal.Example.com/team",
                                      "reg.internal.example.com/secret",
                                      "BLOCKED.example.org/x", "other.example.net/y"]}})");
  for (const std::string host : {"REG.internal.example.com", "Reg.Internal.Example.Com",
                                 "reg.internal.example.com:443", "reg.internal.example.com"}) {
    SCOPED_TRACE(host);
    EXPECT_EQ(p.ScopeFor(Ref(host + "/team/app:v1")).first, "docker:*.example.com");
    Decision unsigned_app = p.Evaluate(Ref(host + "/team/app:v1"), digest_, {}, nullptr, kNow);
    EXPECT_FALSE(unsigned_app.allowed);
    EXPECT_EQ(unsigned_app.requirement, "sigstoreSigned");
    EXPECT_EQ(p.ScopeFor(Ref(host + "/secret/x:v1")).first,
              "docker:reg.internal.example.com/secret");
    EXPECT_FALSE(p.Evaluate(Ref(host + "/secret/x:v1"), digest_, {}, nullptr, kNow).allowed);
    EXPECT_EQ(p.PreCheck(Ref(host + "/team/legacy-app:v1")).requirement, "denyReferences");
    EXPECT_TRUE(p.PreCheck(Ref(host + "/team/app:v1")).allowed);
  }
  EXPECT_EQ(p.ScopeFor(Ref("Blocked.Example.org:443/x/y:1")).first, "docker:blocked.example.org");
  EXPECT_TRUE(p.PreCheck(Ref("Blocked.Example.org:443/x/y:1")).allowed);
  EXPECT_EQ(p.PreCheck(Ref("OTHER.example.net:5000/y/z:1")).requirement, "allowedRegistries");
  // Two spellings of one scope are one scope: refused as a duplicate.
  auto dup = Policy::Parse(R"({"default":[{"type":"reject"}],"transports":{"docker":{
      "reg.test/a":[{"type":"reject"}],"REG.test/a":[{"type":"reject"}]}}})",
                           "policy.json", dir_.path());
  ASSERT_FALSE(dup);
  EXPECT_NE(dup.error().ToString().find("twice"), std::string::npos) << dup.error().ToString();
}

TEST_F(PolicyTest, OrgRules) {
  Policy p = Load(TeamPolicy(R"({"type":"matchRepository"})", R"({
      "allowedRegistries":["reg.test","localhost:5000"],
      "allowedNamespaces":["reg.test/team","localhost:5000/ok"],
      "deniedDigests":[")" + Hasher::Of(DigestAlgorithm::kSha256, "bad").ToString() + R"("],
      "denyReferences":["reg.test/team/legacy*"]})"));
  auto pre = [&](std::string_view r) { return p.PreCheck(Ref(r)); };
  EXPECT_TRUE(pre("reg.test/team/app:v1").allowed);
  EXPECT_EQ(pre("quay.io/team/app:v1").requirement, "allowedRegistries");
  EXPECT_EQ(pre("reg.test/other/app:v1").requirement, "allowedNamespaces");
  EXPECT_EQ(pre("reg.test/teamx/app:v1").requirement, "allowedNamespaces");  // prefix at a '/'
  EXPECT_EQ(pre("reg.test/team/legacy-app:v1").requirement, "denyReferences");
  const Digest bad = Hasher::Of(DigestAlgorithm::kSha256, "bad");
  EXPECT_EQ(pre("reg.test/team/app@" + bad.ToString()).requirement, "deniedDigests");
  // A tag that resolves to a denied digest is caught at evaluation.
  Decision d = p.Evaluate(Ref("reg.test/team/app:v1"), bad,
                          {.signatures = {Sign(team_, Payload("reg.test/team/app", bad))}}, nullptr,
                          kNow);
  EXPECT_FALSE(d.allowed);
  EXPECT_EQ(d.requirement, "deniedDigests");

  Policy tags = Load(TeamPolicy(R"({"type":"matchRepository"})", R"({"denyMutableTags":true})"));
  EXPECT_EQ(tags.PreCheck(Ref("reg.test/team/app:v1")).requirement, "denyMutableTags");
  EXPECT_TRUE(tags.PreCheck(Ref("reg.test/team/app@" + digest_.ToString())).allowed);
}

TEST_F(PolicyTest, TrustWindowsRevocationAndScopes) {
  const std::string trust_text = R"({"keys":[
      {"id":"team-2026","pemPath":"team.pub","start":"2026-01-01T00:00:00Z","scopes":["reg.test/team"]},
      {"id":"team-2025","pemPath":"old.pub","start":"2025-01-01T00:00:00Z","end":"2025-12-31T23:59:59Z"}],
    "revocations":[]})";
  TrustRoot trust = Trust(trust_text);
  Policy p = Load(R"({"default":[{"type":"reject"}],"transports":{"docker":{"reg.test":[
      {"type":"sigstoreSigned","keyIds":["team-2026","team-2025"],"signedIdentity":{"type":"matchRepository"}}]}}})");
  const Reference ref = Ref("reg.test/team/app:v1");
  Evidence by_team{.signatures = {Sign(team_, Payload("reg.test/team/app", digest_))}};
  Evidence by_old{.signatures = {Sign(old_, Payload("reg.test/team/app", digest_))}};
  Decision ok = p.Evaluate(ref, digest_, by_team, &trust, kNow);
  EXPECT_TRUE(ok.allowed) << ok.reason;
  EXPECT_EQ(ok.signer, "team-2026");
  // Not yet valid.
  Decision early = p.Evaluate(ref, digest_, by_team, &trust, 1'700'000'000);
  EXPECT_FALSE(early.allowed);
  EXPECT_NE(early.reason.find("key \"team-2026\" is not valid before"), std::string::npos);
  // Expired.
  Decision expired = p.Evaluate(ref, digest_, by_old, &trust, kNow);
  EXPECT_FALSE(expired.allowed);
  EXPECT_NE(expired.reason.find("key \"team-2025\" expired at 2025-12-31T23:59:59Z"),
            std::string::npos)
      << expired.reason;
  // Out of scope: the team key may not sign for another namespace.
  Decision scoped = p.Evaluate(Ref("reg.test/other/app:v1"), digest_,
                               {.signatures = {Sign(team_, Payload("reg.test/other/app", digest_))}},
                               &trust, kNow);
  EXPECT_FALSE(scoped.allowed);
  EXPECT_NE(scoped.reason.find("outside its scopes"), std::string::npos) << scoped.reason;
  // Emergency revocation.
  std::string revoked_text = trust_text;
  revoked_text.replace(revoked_text.find("\"revocations\":[]"), 16,
                       R"("revocations":[{"id":"team-2026","reason":"key leaked"}])");
  TrustRoot revoked = Trust(revoked_text);
  Decision rv = p.Evaluate(ref, digest_, by_team, &revoked, kNow);
  EXPECT_FALSE(rv.allowed);
  EXPECT_NE(rv.reason.find("key \"team-2026\" is revoked: key leaked"), std::string::npos)
      << rv.reason;
  // Revocation by fingerprint also covers keys the policy names by path.
  Policy by_path = Load(TeamPolicy());
  TrustRoot fp = Trust(R"({"keys":[],"revocations":[{"id":")" +
                       (*PublicKey::FromPem(team_.PublicPem()))->fingerprint() + R"("}]})");
  EXPECT_FALSE(by_path.Evaluate(ref, digest_, by_team, &fp, kNow).allowed);
  // Unknown key id.
  TrustRoot empty = Trust(R"({"keys":[]})");
  Decision unknown = p.Evaluate(ref, digest_, by_team, &empty, kNow);
  EXPECT_FALSE(unknown.allowed);
  EXPECT_NE(unknown.reason.find("not in the trust file"), std::string::npos);
}

TEST_F(PolicyTest, DeniedSigner) {
  const std::string fp = (*PublicKey::FromPem(team_.PublicPem()))->fingerprint();
  Policy p = Load(TeamPolicy(R"({"type":"matchRepository"})",
                             R"({"denySigners":{"keyIds":[")" + fp + R"("]}})"));
  Decision d = p.Evaluate(Ref("reg.test/team/app:v1"), digest_,
                          {.signatures = {Sign(team_, Payload("reg.test/team/app", digest_))}},
                          nullptr, kNow);
  EXPECT_FALSE(d.allowed);
  EXPECT_NE(d.reason.find("denied by policy"), std::string::npos) << d.reason;
}

std::string Envelope(const TestKey& key, const std::string& predicate, const Digest& subject) {
  const std::string stmt =
      R"({"_type":"https://in-toto.io/Statement/v1","subject":[{"name":"img","digest":{"sha256":")" +
      std::string(subject.hex()) + R"("}}],"predicateType":")" + predicate + R"(","predicate":{}})";
  const std::string sig = key.Sign(Pae(kInTotoPayloadType, stmt));
  return R"({"payloadType":"application/vnd.in-toto+json","payload":")" + Base64Encode(stmt) +
         R"(","signatures":[{"keyid":"","sig":")" + Base64Encode(sig) + R"("}]})";
}

TEST_F(PolicyTest, RequiredAttestations) {
  Policy p = Load(TeamPolicy(R"({"type":"matchRepository"})",
                             R"({"requiredAttestations":[{"predicateType":"https://spdx.dev/Document","keyPath":"att.pub"}]})"));
  const Reference ref = Ref("reg.test/team/app:v1");
  Evidence ev{.signatures = {Sign(team_, Payload("reg.test/team/app", digest_))}};
  Decision missing = p.Evaluate(ref, digest_, ev, nullptr, kNow);
  EXPECT_FALSE(missing.allowed);
  EXPECT_EQ(missing.requirement, "requiredAttestations");
  ev.attestations.push_back(Envelope(att_, "https://slsa.dev/provenance/v1", digest_));
  EXPECT_FALSE(p.Evaluate(ref, digest_, ev, nullptr, kNow).allowed);  // wrong predicate
  ev.attestations.push_back(
      Envelope(att_, "https://spdx.dev/Document", Hasher::Of(DigestAlgorithm::kSha256, "x")));
  EXPECT_FALSE(p.Evaluate(ref, digest_, ev, nullptr, kNow).allowed);  // about another image
  ev.attestations.push_back(Envelope(stranger_, "https://spdx.dev/Document", digest_));
  EXPECT_FALSE(p.Evaluate(ref, digest_, ev, nullptr, kNow).allowed);  // wrong key
  ev.attestations.push_back(Envelope(att_, "https://spdx.dev/Document", digest_));
  Decision ok = p.Evaluate(ref, digest_, ev, nullptr, kNow);
  EXPECT_TRUE(ok.allowed) << ok.reason;
}

TEST_F(PolicyTest, StrictLoadingNamesFileAndField) {
  const std::pair<std::string, std::string> bad[] = {
      {R"({"default":[{"type":"reject"}],"extra":1})", "top level: unknown field \"extra\""},
      {R"({"default":[{"type":"reject"}],"default":[]})", "duplicate key \"default\""},
      {R"({"transports":{}})", "default: required"},
      {R"({"default":[]})", "default: must not be empty"},
      {R"({"default":[{"type":"rejectt"}]})", "unknown requirement type"},
      {R"({"default":[{"type":"reject","keyPath":"x"}]})", "unknown field \"keyPath\""},
      {R"({"default":[{"type":"sigstoreSigned","keyPath":"missing.pub"}]})",
       "default[0].keyPath: cannot read key file"},
      {R"({"default":[{"type":"sigstoreSigned","keyPath":"team.pub","keyData":"x"}]})",
       "exactly one of keyPath"},
      {R"({"default":[{"type":"sigstoreSigned","keyPath":"team.pub","signedIdentity":{"type":"matchNothing"}}]})",
       "unknown identity type"},
      {R"({"default":[{"type":"sigstoreSigned","fulcio":{}}]})", "default[0].fulcio: missing \"oidcIssuer\""},
      {R"({"default":[{"type":"sigstoreSigned","pki":{}}]})", "default[0].pki: exactly one of caRootsPath and caRootsData"},
      {R"({"default":[{"type":"sigstoreSigned","rekorPublicKeyPaths":[]}]})", "not supported by digestd"},
      {R"({"default":[{"type":"reject"}],"transports":{"docker":{"Reg.test/UPPER":[{"type":"reject"}]}}})",
       "invalid scope"},
      {R"({"default":[{"type":"reject"}],"transports":{"docker":{"*.*.com":[{"type":"reject"}]}}})",
       "invalid scope"},
      {R"({"default":[{"type":"reject"}],"transports":{"dockr":{}}})", "unknown transport"},
      {R"({"default":[{"type":"reject"}],"digestd":{"denyMutableTags":"yes"}})",
       "digestd.denyMutableTags: must be true or false"},
      {R"({"default":[{"type":"reject"}],"digestd":{"deniedDigests":["sha256:x"]}})",
       "digestd.deniedDigests"},
      {R"({"default":[{"type":"reject"}],"digestd":{"allowedRegistries":["reg.test/ns"]}})",
       "digestd.allowedRegistries"},
      {"{not json", "malformed JSON"},
  };
  for (const auto& [text, msg] : bad) {
    auto p = TryLoad(text);
    ASSERT_FALSE(p) << text;
    EXPECT_NE(p.error().context().find("policy.json"), std::string::npos) << p.error().context();
    EXPECT_NE(p.error().context().find(msg), std::string::npos)
        << text << " -> " << p.error().context();
  }
  // Other containers transports are accepted and ignored.
  EXPECT_TRUE(TryLoad(R"({"default":[{"type":"reject"}],"transports":{"docker-daemon":{"":[{"type":"insecureAcceptAnything"}]}}})"));
}

TEST_F(PolicyTest, TrustFileErrors) {
  const std::pair<std::string, std::string> bad[] = {
      {R"({"keys":[{"id":"a","pemPath":"team.pub"}]})", "keys[0].start: required"},
      {R"({"keys":[{"id":"a","pemPath":"team.pub","start":"yesterday"}]})", "invalid time"},
      {R"({"keys":[{"id":"a","pemPath":"team.pub","start":"2026-01-01T00:00:00Z","end":"2025-01-01T00:00:00Z"}]})",
       "is before start"},
      {R"({"keys":[{"id":"a","pemPath":"team.pub","start":"2026-01-01T00:00:00Z"},{"id":"a","pemPath":"old.pub","start":"2026-01-01T00:00:00Z"}]})",
       "duplicate id"},
      {R"({"keys":[{"id":"a","pemPath":"nope.pub","start":"2026-01-01T00:00:00Z"}]})",
       "cannot read key file"},
      {R"({"keys":[{"id":"a","pem":"garbage","start":"2026-01-01T00:00:00Z"}]})", "not a PEM"},
      {R"({"keys":[{"id":"a","pemPath":"team.pub","start":"2026-01-01T00:00:00Z","scopes":["*"]}]})",
       "invalid scope"},
      {R"({"keys":[],"revoked":[]})", "unknown field"},
  };
  for (const auto& [text, msg] : bad) {
    auto t = TrustRoot::Parse(text, "trust.json", dir_.path());
    ASSERT_FALSE(t) << text;
    EXPECT_NE(t.error().context().find(msg), std::string::npos)
        << text << " -> " << t.error().context();
  }
  EXPECT_EQ(*ParseRfc3339("2026-01-01T02:00:00+02:00"), *ParseRfc3339("2026-01-01T00:00:00Z"));
  EXPECT_EQ(FormatRfc3339(*ParseRfc3339("2026-05-28T12:34:56.789Z")), "2026-05-28T12:34:56Z");
}

TEST_F(PolicyTest, ReloadFailureKeepsThePreviousPolicy) {
  Write("policy.json", R"({"default":[{"type":"insecureAcceptAnything"}]})");
  Write("trust.json", R"({"keys":[]})");
  PolicySet set(dir_.path() / "policy.json", dir_.path() / "trust.json");
  ASSERT_OK(set.Reload());
  auto before = set.Current();
  Write("policy.json", R"({"default":[{"type":"insecureAcceptAnything"}], "typo": 1})");
  EXPECT_FALSE(set.Reload());
  EXPECT_EQ(set.Current().policy, before.policy);
  Write("policy.json", R"({"default":[{"type":"reject"}]})");
  Write("trust.json", R"({"keys":[)");
  EXPECT_FALSE(set.Reload());  // a bad trust file keeps both
  EXPECT_EQ(set.Current().policy, before.policy);
  Write("trust.json", R"({"keys":[]})");
  ASSERT_OK(set.Reload());
  EXPECT_FALSE(set.Current().policy->Evaluate(Ref("a.io/b:c"), digest_, {}, nullptr, kNow).allowed);
}

TEST(ScopeTest, CandidatesAndValidation) {
  auto ref = *Reference::Parse("reg.example.com:5000/a/b/c:v1");
  const std::vector<std::string> want = {"reg.example.com:5000/a/b/c:v1",
                                         "reg.example.com:5000/a/b/c", "reg.example.com:5000/a/b",
                                         "reg.example.com:5000/a", "reg.example.com:5000",
                                         "*.example.com", "*.com"};
  EXPECT_EQ(ScopeCandidates(ref), want);
  for (const char* ok : {"reg.io", "reg.io:5000", "reg.io/ns", "reg.io/ns/app:v1", "*.reg.io",
                         "localhost/app", "docker.io/library/busybox"}) {
    EXPECT_TRUE(ValidateScope(ok)) << ok;
  }
  for (const char* bad : {"", "*", "*.", "reg.io/*", "*.reg.io/ns", "reg.io/UP", "reg.io/../x",
                          "reg.io/app:", "a b"}) {
    EXPECT_FALSE(ValidateScope(bad)) << bad;
  }
}

}  // namespace
}  // namespace digestd::verify
